"""Scenario generation (seeded draws, prefix property) and the pipeline configuration (defaults, errors)."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from hetsfl.config import all_scenarios, load_config, scenario_spec, sweep_points, validate_config
from hetsfl.errors import ConfigError
from hetsfl.system.scenario import generate_scenario, stream

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "config.yaml"


@pytest.fixture(scope="module")
def cfg():
    return load_config(CONFIG)


@pytest.fixture
def spec(cfg):
    return copy.deepcopy(scenario_spec(cfg, "default"))


def draws(scen, key):
    return [d[key] for d in scen["devices"]]


# ---------------------------------------------------------------------------------------------- scenario
def test_deterministic_and_seed_dependent(spec):
    a, b = generate_scenario(spec, 7, "x"), generate_scenario(spec, 7, "x")
    assert a == b
    c = generate_scenario(spec, 8, "x")
    for key in ("distance_m", "channel_gain", "flops"):
        assert draws(a, key) != draws(c, key)
    # the scenario's own seed offset is added to the global seed
    assert generate_scenario({**spec, "seed": 1}, 7)["devices"] == generate_scenario(spec, 8)["devices"]


def test_device_count_sweep_keeps_the_first_devices(spec):
    small = generate_scenario({**spec, "num_devices": 5}, 3)
    big = generate_scenario({**spec, "num_devices": 100}, 3)
    assert len(small["devices"]) == 5 and len(big["devices"]) == 100
    assert big["devices"][:5] == small["devices"]
    with_mem = {**spec, "device_memory_bytes": [1e6, 1e9]}
    assert (generate_scenario({**with_mem, "num_devices": 60}, 3)["devices"][:4]
            == generate_scenario({**with_mem, "num_devices": 4}, 3)["devices"])


def test_changing_one_quantity_keeps_the_other_draws(spec):
    base = generate_scenario(spec, 11)
    other = generate_scenario({**spec, "device_flops": [2e9, 3e9], "total_bandwidth_hz": 5e6}, 11)
    assert draws(base, "distance_m") == draws(other, "distance_m")
    assert draws(base, "channel_gain") == draws(other, "channel_gain")
    assert draws(base, "flops") != draws(other, "flops")
    # the uniform draws are the same quantiles of the new range
    q_base = (np.array(draws(base, "flops")) - 1e9) / 9e9
    q_other = (np.array(draws(other, "flops")) - 2e9) / 1e9
    np.testing.assert_allclose(q_base, q_other, rtol=1e-9)


def test_ranges_and_gains(spec):
    spec = {**spec, "num_devices": 2000, "distance_m": [20, 300], "device_flops": [2e9, 4e9]}
    scen = generate_scenario(spec, 0)
    d = np.array(draws(scen, "distance_m"))
    h = np.array(draws(scen, "channel_gain"))
    f = np.array(draws(scen, "flops"))
    assert d.min() >= 20 and d.max() <= 300 and d.max() - d.min() > 250
    assert f.min() >= 2e9 and f.max() <= 4e9
    assert np.all(h > 0) and np.all(np.isfinite(h))
    # the shadowing around the path loss has the configured spread (8 dB)
    pl = 128.1 + 37.6 * np.log10(d / 1000)
    shadow = -10 * np.log10(h) - pl
    assert abs(shadow.mean()) < 0.5 and shadow.std() == pytest.approx(8.0, rel=0.05)
    assert all(dev["tx_power_w"] == 0.2 and dev["batch_size"] == 32 and dev["local_iters"] == 10
               for dev in scen["devices"])
    assert [dev["id"] for dev in scen["devices"]] == list(range(2000))


def test_gain_formula_without_shadowing(spec):
    scen = generate_scenario({**spec, "shadowing_db": 0.0}, 5)
    for dev in scen["devices"]:
        expected = 10 ** (-(128.1 + 37.6 * math.log10(dev["distance_m"] / 1000)) / 10)
        assert dev["channel_gain"] == pytest.approx(expected, rel=1e-12)
    faded = generate_scenario({**spec, "shadowing_db": 0.0, "fading": "rayleigh"}, 5)
    assert draws(faded, "distance_m") == draws(scen, "distance_m")
    assert draws(faded, "channel_gain") != draws(scen, "channel_gain")


def test_memory_only_when_configured(spec):
    assert spec["device_memory_bytes"] is None
    assert all("memory_bytes" not in d for d in generate_scenario(spec, 0)["devices"])
    scen = generate_scenario({**spec, "device_memory_bytes": [1e6, 2e6], "num_devices": 500}, 0)
    mem = np.array(draws(scen, "memory_bytes"))
    assert mem.min() >= 1e6 and mem.max() <= 2e6 and mem.std() > 1e5
    # drawing memory does not disturb the other quantities
    assert draws(scen, "distance_m")[:10] == draws(generate_scenario(spec, 0), "distance_m")
    const = generate_scenario({**spec, "device_memory_bytes": [5e6, 5e6]}, 0)
    assert set(draws(const, "memory_bytes")) == {5e6}


def test_scenario_document_fields(spec):
    scen = generate_scenario(spec, 2023, "default")
    assert scen["name"] == "default" and scen["seed"] == 2023
    assert scen["total_bandwidth_hz"] == 1e7
    assert scen["noise_psd_w_per_hz"] == pytest.approx(10 ** (-20.4), rel=1e-12)
    assert scen["server"] == {"flops": 1e12, "tx_power_w": 1.0, "sharing": "equal"}
    assert scen["min_split"] == 1 and scen["bits_per_activation"] == 32


def test_streams_are_independent_and_stable():
    a = stream(1, "distance").random(3)
    assert np.array_equal(a, stream(1, "distance").random(3))
    assert not np.array_equal(a, stream(1, "flops").random(3))
    assert not np.array_equal(a, stream(2, "distance").random(3))


# ---------------------------------------------------------------------------------------------- config
def test_shipped_config_loads(cfg):
    raw = yaml.safe_load(CONFIG.read_text())
    assert cfg["physical"] == {"seed": 0, **raw["physical"]}  # the scenario seed offset defaults to 0
    assert cfg["seed"] == raw["seed"] and cfg["model"] == raw["model"]
    assert set(cfg["scenarios"]) == set(raw["scenarios"])
    assert "devices_0" in all_scenarios(cfg)


def test_defaults_are_filled():
    cfg = validate_config({})
    assert cfg["seed"] == 2023 and cfg["model"] == "cnn"
    assert cfg["physical"]["num_devices"] == 10 and cfg["physical"]["total_bandwidth_hz"] == 1e7
    assert cfg["physical"]["distance_m"] == [10, 500] and cfg["physical"]["device_memory_bytes"] is None
    assert cfg["scenarios"] == {"default": {}} and cfg["sweeps"] == {}
    assert cfg["optimize"]["exhaustive_limit"] == 200000 and cfg["train"]["partition"]["scheme"] == "iid"
    assert cfg["report"]["scenario"] == "default"
    # partially given sections keep their values and get the rest
    part = validate_config({"physical": {"num_devices": 3}, "train": {"partition": {"alpha": 0.1}}})
    assert part["physical"]["num_devices"] == 3 and part["physical"]["batch_size"] == 32
    assert part["train"]["partition"] == {"scheme": "iid", "alpha": 0.1, "shards_per_device": 2, "min_size": 32}
    # the input is not modified
    given = {"physical": {"num_devices": 3}}
    validate_config(given)
    assert given == {"physical": {"num_devices": 3}}


BAD = [
    ("unknown top-level key", {"bogus": 1}, "bogus"),
    ("unknown physical key", {"physical": {"num_device": 3}}, "num_device"),
    ("unknown scenario key", {"scenarios": {"default": {}, "x": {"fadding": "none"}}}, "scenarios.x"),
    ("bad enum", {"physical": {"fading": "rician"}}, "physical.fading"),
    ("bad model", {"model": "gpt"}, "model"),
    ("bad sharing", {"scenarios": {"default": {"server_sharing": "fair"}}}, "scenarios.default.server_sharing"),
    ("wrong type", {"physical": {"num_devices": "ten"}}, "physical.num_devices"),
    ("negative bandwidth", {"physical": {"total_bandwidth_hz": -1}}, "physical.total_bandwidth_hz"),
    ("low > high", {"physical": {"distance_m": [500, 10]}}, "physical.distance_m"),
    ("low > high in scenario", {"scenarios": {"default": {}, "s": {"device_flops": [9e9, 1e9]}}},
     "scenarios.s.device_flops"),
    ("low > high memory", {"physical": {"device_memory_bytes": [2e9, 1e9]}}, "physical.device_memory_bytes"),
    ("low > high in sweep", {"sweeps": {"d": {"key": "distance_m", "values": [[10, 20], [300, 100]]}}},
     r"sweeps.d.values[1]"),
    ("range of three", {"physical": {"distance_m": [1, 2, 3]}}, "physical.distance_m"),
    ("sweep base missing", {"sweeps": {"n": {"key": "num_devices", "values": [5], "base": "nowhere"}}},
     "sweeps.n.base"),
    ("sweep key unknown", {"sweeps": {"n": {"key": "num_device", "values": [5]}}}, "sweeps.n.key"),
    ("sweep without values", {"sweeps": {"n": {"key": "num_devices"}}}, "values"),
    ("sweep named like scenario", {"sweeps": {"default": {"key": "num_devices", "values": [5]}}}, "sweeps.default"),
    ("train.scenario unknown", {"train": {"scenario": "mars"}}, "train.scenario"),
    ("report.scenario unknown", {"report": {"scenario": "devices_9"}, "sweeps": {"devices": {
        "key": "num_devices", "values": [5]}}}, "report.scenario"),
    ("bad method", {"optimize": {"methods": ["ao", "magic"]}}, "optimize.methods"),
    ("not a mapping", [1, 2], "mapping"),
]


@pytest.mark.parametrize("what,config,needle", BAD, ids=[b[0] for b in BAD])
def test_bad_values_name_the_key(what, config, needle):
    with pytest.raises(ConfigError) as exc:
        validate_config(config)
    assert needle in str(exc.value), str(exc.value)


def test_enum_error_lists_allowed_values():
    with pytest.raises(ConfigError, match="allowed: none, rayleigh"):
        validate_config({"physical": {"fading": "rician"}})
    with pytest.raises(ConfigError, match="known keys:.*num_devices"):
        validate_config({"physical": {"num_device": 3}})


@pytest.mark.parametrize("key,value", [("total_bandwidth_hz", -5.0), ("num_devices", "many"),
                                       ("device_flops", 3e9), ("min_split", 0)])
def test_sweep_values_are_validated(key, value):
    with pytest.raises(ConfigError, match=r"sweeps\.s\.values\[1\]"):
        validate_config({"sweeps": {"s": {"key": key, "values": [scenario_default(key), value]}}})


def scenario_default(key):
    return validate_config({})["physical"][key]


def test_load_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("physical: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml.*not valid YAML"):
        load_config(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty)["physical"]["num_devices"] == 10
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("physical:\n  fading: sometimes\n")
    with pytest.raises(ConfigError, match="physical.fading"):
        load_config(wrong)


def test_scenario_spec_named_and_sweep_point(cfg):
    default = scenario_spec(cfg, "default")
    assert default == cfg["physical"]
    ray = scenario_spec(cfg, "rayleigh")
    assert ray == {**cfg["physical"], "fading": "rayleigh"}
    points = sweep_points(cfg)
    assert points["devices_2"] == ("devices", 2)
    assert scenario_spec(cfg, "devices_2") == {**cfg["physical"], "num_devices": 20}
    assert scenario_spec(cfg, "bandwidth_0")["total_bandwidth_hz"] == 1e6
    assert scenario_spec(cfg, "compute-spread_3")["device_flops"] == [1.0e8, 1.09e10]
    with pytest.raises(ConfigError, match="unknown scenario 'devices_9'"):
        scenario_spec(cfg, "devices_9")
    # a sweep on top of a named scenario keeps the scenario's overrides
    c2 = validate_config({"scenarios": {"default": {}, "ded": {"server_sharing": "dedicated"}},
                          "sweeps": {"n": {"key": "num_devices", "values": [3, 4], "base": "ded"}},
                          "train": {"scenario": "n_1"}})
    s = scenario_spec(c2, "n_1")
    assert s["server_sharing"] == "dedicated" and s["num_devices"] == 4
    assert all_scenarios(c2) == ["default", "ded", "n_0", "n_1"]
    # every scenario of the shipped config generates
    for name in all_scenarios(cfg):
        scen = generate_scenario(scenario_spec(cfg, name), cfg["seed"], name)
        assert len(scen["devices"]) == scenario_spec(cfg, name)["num_devices"]


def test_server_sharing_sweep_and_issue_10_settings():
    """A sweep over server_sharing takes the three rules (string values) and refuses others; the default
    config's new scenarios and train.fading_policy validate."""
    cfg = validate_config({"sweeps": {"s": {"key": "server_sharing", "values": ["equal", "dedicated", "optimized"]}}})
    assert [scenario_spec(cfg, f"s_{i}")["server_sharing"] for i in range(3)] == ["equal", "dedicated", "optimized"]
    with pytest.raises(ConfigError, match=r"sweeps\.s\.values\[1\].*'shared' is not a valid server_sharing"):
        validate_config({"sweeps": {"s": {"key": "server_sharing", "values": ["equal", "shared"]}}})
    assert validate_config({})["train"]["fading_policy"] == "per_round"
    with pytest.raises(ConfigError, match="allowed: static, static_first, per_round"):
        validate_config({"train": {"fading_policy": "sometimes"}})
    shipped = load_config(CONFIG)
    assert scenario_spec(shipped, "rayleigh-per-round")["fading"] == "rayleigh_per_round"
    assert scenario_spec(shipped, "optimized-server")["server_sharing"] == "optimized"
    assert scenario_spec(shipped, "devices-optimized_0")["server_sharing"] == "optimized"
