"""Problem documents: validation errors that name the field or file, derived masks and the scenario round trip."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from hetsfl.config import scenario_spec, validate_config
from hetsfl.errors import ConfigError, InfeasibleError
from hetsfl.optim.build import build_problem
from hetsfl.optim.problem import Problem, load_json_schema, read_json, validate_document
from hetsfl.system.scenario import generate_scenario


@pytest.fixture
def doc(random_problem_document):
    return random_problem_document(np.random.default_rng(42), 3, 5)


def test_valid_document_builds_problem(doc):
    p = Problem.from_dict(doc)
    assert p.num_devices == 3 and p.num_layers == 5
    assert p.device_ids == (0, 1, 2)
    assert p.total_bandwidth == doc["total_bandwidth_hz"]
    assert p.layer_names == tuple(u["name"] for u in doc["layers"])
    assert np.all(np.isposinf(p.memory)) and p.split_candidates == (None, None, None)
    assert p.min_split == 1 and p.deadline is None and p.optimizer_state_copies == 1
    assert p.fwd_flops.tolist() == [u["fwd_flops"] for u in doc["layers"]]
    assert p.gain.tolist() == [d["channel_gain"] for d in doc["devices"]]


def _mutations():
    """(description, mutation of the document, text the error must contain)."""

    def drop(*path):
        def f(d):
            for k in path[:-1]:
                d = d[k]
            del d[path[-1]]
        return f

    def put(value, *path):
        def f(d):
            for k in path[:-1]:
                d = d[k]
            d[path[-1]] = value
        return f

    return [
        ("missing top-level field", drop("total_bandwidth_hz"), "total_bandwidth_hz"),
        ("missing server field", drop("server", "sharing"), "sharing"),
        ("missing device field", drop("devices", 1, "channel_gain"), "channel_gain"),
        ("missing layer field", drop("layers", 2, "out_bits"), "out_bits"),
        ("negative bandwidth", put(-1e6, "total_bandwidth_hz"), "total_bandwidth_hz"),
        ("zero bandwidth", put(0, "total_bandwidth_hz"), "total_bandwidth_hz"),
        ("negative noise", put(-1e-21, "noise_psd_w_per_hz"), "noise_psd_w_per_hz"),
        ("wrong type: string batch", put("32", "devices", 0, "batch_size"), "devices.0.batch_size"),
        ("wrong type: float iters", put(2.5, "devices", 2, "local_iters"), "devices.2.local_iters"),
        ("wrong type: layers not a list", put({"a": 1}, "layers"), "layers"),
        ("wrong type: id", put(1.5, "devices", 1, "id"), "devices.1.id"),
        ("bad sharing", put("fair", "server", "sharing"), "server.sharing"),
        ("unknown server key", put(3, "server", "cores"), "cores"),
        ("zero device flops", put(0.0, "devices", 0, "flops"), "devices.0.flops"),
        ("negative memory", put(-5.0, "devices", 0, "memory_bytes"), "devices.0.memory_bytes"),
        ("min_split zero", put(0, "min_split"), "min_split"),
        ("empty candidates", put([], "devices", 0, "split_candidates"), "split_candidates"),
        ("candidate zero", put([0, 1], "devices", 0, "split_candidates"), "split_candidates"),
        ("candidate = L", put([1, 5], "devices", 1, "split_candidates"), "split_candidates"),
        ("candidate > L", put([9], "devices", 2, "split_candidates"), "split_candidates"),
        ("duplicate ids", put(0, "devices", 2, "id"), "id"),
        ("duplicate ids across types", put("1", "devices", 2, "id"), "id"),
        ("one layer", lambda d: d.__setitem__("layers", d["layers"][:1]), "layers"),
        ("no devices", put([], "devices"), "devices"),
        ("not an object", None, "top level"),
    ]


@pytest.mark.parametrize("what,mutate,needle", _mutations(), ids=[m[0] for m in _mutations()])
def test_invalid_documents_name_the_field(doc, what, mutate, needle):
    bad = copy.deepcopy(doc)
    if mutate is None:
        bad = [bad]
    else:
        mutate(bad)
    with pytest.raises(ConfigError) as exc:
        Problem.from_dict(bad, source="my-problem.json")
    msg = str(exc.value)
    assert needle in msg, msg
    assert "my-problem.json" in msg


def test_candidate_error_says_which_device_and_the_range(doc):
    doc["devices"][1]["split_candidates"] = [2, 5, 7]
    with pytest.raises(ConfigError, match=r"device 1: split_candidates \[5, 7\].*1\.\.4"):
        Problem.from_dict(doc)


def test_read_missing_and_corrupt_files(tmp_path, doc):
    missing = tmp_path / "nope.json"
    with pytest.raises(ConfigError, match="nope.json") as exc:
        Problem.read(missing)
    assert "does not exist" in str(exc.value)
    broken = tmp_path / "broken.json"
    broken.write_text('{"total_bandwidth_hz": 1e6, ')
    with pytest.raises(ConfigError, match="broken.json") as exc:
        Problem.read(broken)
    assert "not valid JSON" in str(exc.value)
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\x00\x01 not json")
    with pytest.raises(ConfigError, match="binary.json"):
        Problem.read(binary)
    invalid = tmp_path / "invalid.json"
    invalid.write_text(json.dumps({**doc, "total_bandwidth_hz": "wide"}))
    with pytest.raises(ConfigError, match=r"invalid\.json(.|\n)*total_bandwidth_hz"):
        Problem.read(invalid)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(doc))
    assert Problem.read(good).num_devices == 3
    with pytest.raises(ConfigError, match="scenario file"):
        read_json(missing, "scenario")


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(ConfigError, match=str(tmp_path.name)):
        Problem.read(tmp_path)


def test_validate_document_lists_several_errors(doc):
    doc["total_bandwidth_hz"] = -1
    doc["devices"][0]["batch_size"] = 0
    with pytest.raises(ConfigError) as exc:
        validate_document(doc, "problem", "x.json")
    assert "total_bandwidth_hz" in str(exc.value) and "devices.0.batch_size" in str(exc.value)


# ---------------------------------------------------------------------------------------------- derived masks
@pytest.mark.parametrize("seed", range(12))
def test_allowed_mask_and_memory_against_reference(seed, random_problem_document, ref):
    rng = np.random.default_rng(seed)
    L = 3 + seed % 5
    doc = random_problem_document(rng, 1 + seed % 4, L, memory=seed % 2 == 0, min_split=1 + seed % 2,
                                  candidates="random" if seed % 3 == 0 else None)
    doc["optimizer_state_copies"] = seed % 3
    for d in doc["devices"]:
        d["batch_size"] = int(rng.integers(8, 64))
    p = Problem.from_dict(doc)
    expected = ref.allowed(doc)
    if not all(expected):
        with pytest.raises(InfeasibleError):
            p.allowed()
        return
    mask = p.allowed()
    assert mask.shape == (p.num_devices, L - 1)
    assert [list(np.flatnonzero(row) + 1) for row in mask] == expected
    for i, d in enumerate(doc["devices"]):
        fp = ref.footprint(doc["layers"], d["batch_size"], doc["optimizer_state_copies"])
        np.testing.assert_allclose(p.memory_bytes()[i], fp, rtol=1e-12)


def test_full_model_fit_check(random_problem_document, ref):
    doc = random_problem_document(np.random.default_rng(2), 3, 4)
    need = ref.footprint(doc["layers"], 32)[-1]
    doc["devices"][1]["memory_bytes"] = need * 0.999
    doc["devices"][2]["memory_bytes"] = need * 1.001
    p = Problem.from_dict(doc)
    with pytest.raises(InfeasibleError, match="device") as exc:
        p.check_full_model_fits()
    assert "1 (" in str(exc.value) and "2 (" not in str(exc.value)


# ---------------------------------------------------------------------------------------------- scenario round trip
def toy_profile(rng, n_units=6, bits=32):
    units = []
    for j in range(n_units):
        fwd = float(10 ** rng.uniform(5, 8))
        units.append({"name": f"u{j}", "fwd_flops": fwd, "bwd_flops": 2 * fwd,
                      "out_bits": float(bits * rng.integers(100, 30000)),
                      "param_bits": float(bits * rng.integers(0, 300000)), "params": 0, "out_elems": 0,
                      "time_fwd_s": 1e-4, "time_bwd_s": 2e-4, "time_s": 3e-4})
    return {"meta": {"model": "toy", "bits_per_activation": bits, "bits_per_param": bits}, "units": units}


@pytest.mark.parametrize("scenario", ["default", "rayleigh", "dedicated-server", "devices_1", "compute-spread_3"])
def test_build_problem_round_trips_through_schema(tmp_path, scenario):
    cfg = validate_config({"scenarios": {"default": {}, "rayleigh": {"fading": "rayleigh"},
                                         "dedicated-server": {"server_sharing": "dedicated",
                                                              "device_memory_bytes": [1e7, 1e8]}},
                           "sweeps": {"devices": {"key": "num_devices", "values": [3, 7]},
                                      "compute-spread": {"key": "device_flops",
                                                         "values": [[1e9, 2e9], [2e9, 3e9], [1e9, 1e9],
                                                                    [1e8, 1e10]]}}})
    spec = scenario_spec(cfg, scenario)
    scen = generate_scenario(spec, cfg["seed"], scenario)
    profile = toy_profile(np.random.default_rng(0))
    doc = build_problem(scen, profile, optimizer_state_copies=2)
    validate_document(doc, "problem", "built")
    path = tmp_path / "problem.json"
    path.write_text(json.dumps(doc, allow_nan=False))
    assert json.loads(path.read_text()) == doc
    p = Problem.read(path)
    assert p.num_devices == spec["num_devices"] and p.num_layers == 6
    assert p.sharing == spec["server_sharing"] and p.optimizer_state_copies == 2
    assert p.total_bandwidth == spec["total_bandwidth_hz"]
    assert p.noise_psd == pytest.approx(10 ** ((spec["noise_psd_dbm_per_hz"] - 30) / 10), rel=1e-12)
    assert p.fwd_flops.tolist() == [u["fwd_flops"] for u in profile["units"]]
    assert p.out_bits.tolist() == [u["out_bits"] for u in profile["units"]]
    assert p.gain.tolist() == [d["channel_gain"] for d in scen["devices"]]
    assert p.meta == {"scenario": scenario, "model": "toy", "fading": spec["fading"]}
    assert ("memory_bytes" in doc["devices"][0]) == (scenario == "dedicated-server")
    # the document carries everything the schema knows and nothing else at the top level
    assert set(doc) <= set(load_json_schema("problem")["properties"])


def test_build_problem_rescales_bit_widths():
    cfg = validate_config({"physical": {"bits_per_activation": 16, "bits_per_param": 8}})
    scen = generate_scenario(scenario_spec(cfg, "default"), 0)
    profile = toy_profile(np.random.default_rng(1), bits=32)
    doc = build_problem(scen, profile)
    for built, unit in zip(doc["layers"], profile["units"], strict=True):
        assert built["out_bits"] == pytest.approx(unit["out_bits"] / 2)
        assert built["param_bits"] == pytest.approx(unit["param_bits"] / 4)
        assert built["fwd_flops"] == unit["fwd_flops"]
    # a profile without bit widths is taken at face value
    bare = {"units": profile["units"]}
    assert [u["out_bits"] for u in build_problem(scen, bare)["layers"]] == [u["out_bits"] for u in profile["units"]]
    assert build_problem(scen, bare)["meta"]["model"] == "unknown"


def test_non_utf8_file_gives_config_error(tmp_path):
    path = tmp_path / "problem.json.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00\xff\xfe binary")
    with pytest.raises(ConfigError, match="problem.json.gz"):
        Problem.read(path)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("field", ["total_bandwidth_hz", "channel_gain"])
@pytest.mark.parametrize("text", ["NaN", "Infinity"])
def test_non_finite_numbers_are_rejected(tmp_path, doc, field, text):
    target = doc if field == "total_bandwidth_hz" else doc["devices"][0]
    target[field] = 12345.0
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc).replace("12345.0", text))
    with pytest.raises(ConfigError, match=field):
        Problem.read(path)


# ---------------------------------------------------------------------- fast validation == jsonschema verdict
_BAD_VALUES = [None, True, False, -1, 0, 0.0, 1, 2.5, 1e-300, 1e300, 10**30, 10**400, -(10**400), "x", "", [], [1], [0, 1], [1, 1],
               {}, {"a": 1}, float("nan"), float("inf"), 3.0]


def _verdict(doc, name):
    """(valid?, error text) by validate_document, and the reference verdict: jsonschema's plus finiteness."""
    import jsonschema

    from hetsfl.optim.validate import _non_finite

    reference = not list(jsonschema.Draft7Validator(load_json_schema(name)).iter_errors(doc)) and not list(
        _non_finite(doc))
    try:
        validate_document(doc, name, "doc")
        return True, "", reference
    except ConfigError as exc:
        return False, str(exc), reference


def _long_doc(random_problem_document, seed, n=80):
    doc = random_problem_document(np.random.default_rng(seed), n, 4, memory=seed % 2 == 0,
                                  candidates="random" if seed % 3 == 0 else None)
    for i, d in enumerate(doc["devices"]):
        d["id"] = f"dev{i}" if seed % 2 else i
    return doc


@pytest.mark.parametrize("seed", range(40))
def test_fast_validation_agrees_with_jsonschema_on_long_arrays(seed, random_problem_document):
    """Documents with 80 devices (above the fast-path threshold) with one field of one device (or of the
    solution's per-device records) set to an odd value: the verdict is jsonschema's, and an error names the
    device's field."""
    from hetsfl.optim.solvers import solve

    rng = np.random.default_rng(seed)
    doc = _long_doc(random_problem_document, seed)
    valid, _, ref = _verdict(doc, "problem")
    assert valid and ref
    keys = ["id", "flops", "tx_power_w", "channel_gain", "batch_size", "local_iters", "split_candidates",
            "memory_bytes", "distance_m", "unknown_key"]
    for _ in range(15):
        bad = copy.deepcopy(doc)
        i, key = int(rng.integers(len(bad["devices"]))), keys[int(rng.integers(len(keys)))]
        bad["devices"][i][key] = _BAD_VALUES[int(rng.integers(len(_BAD_VALUES)))]
        valid, message, ref = _verdict(bad, "problem")
        assert valid == ref, (key, bad["devices"][i][key], message)
        if not valid:
            assert f"devices.{i}" in message, message
        if rng.random() < 0.3:  # a missing key
            bad = copy.deepcopy(doc)
            bad["devices"][i].pop(key, None)
            valid, message, ref = _verdict(bad, "problem")
            assert valid == ref
    sol = solve(Problem.from_dict(doc), "ao")
    sol = json.loads(json.dumps(sol))
    assert _verdict(sol, "solution")[0]
    for _ in range(10):
        bad = copy.deepcopy(sol)
        i = int(rng.integers(len(bad["per_device"])))
        key = ["id", "split", "bandwidth_hz", "latency_s", "bits_up"][int(rng.integers(5))]
        bad["per_device"][i][key] = _BAD_VALUES[int(rng.integers(len(_BAD_VALUES)))]
        valid, message, ref = _verdict(bad, "solution")
        assert valid == ref, (key, bad["per_device"][i][key], message)
        if not valid:
            assert f"per_device.{i}" in message
        bad = copy.deepcopy(sol)
        bad["splits"][i] = _BAD_VALUES[int(rng.integers(len(_BAD_VALUES)))]
        valid, message, ref = _verdict(bad, "solution")
        assert valid == ref and (valid or f"splits.{i}" in message)


def test_validation_errors_are_one_line(doc):
    doc["devices"][0]["flops"] = "fast"
    doc["layers"][1]["name"] = {"a": list(range(1000))}
    with pytest.raises(ConfigError) as exc:
        validate_document(doc, "problem", "x.json")
    assert "\n" not in str(exc.value) and len(str(exc.value)) < 600
