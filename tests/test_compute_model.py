"""optimize.compute_model: the problem stage with counted FLOPs (default, unchanged) or the measured-compute
refinement (effective FLOPs H t from the profile, H measured by the profile stage)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from hetsfl.config import scenario_spec, validate_config
from hetsfl.errors import ConfigError
from hetsfl.io import write_json
from hetsfl.optim.build import build_problem
from hetsfl.optim.problem import Problem
from hetsfl.optim.solvers import solve
from hetsfl.profiling.files import read_profile
from hetsfl.stages.problem import stage_problem
from hetsfl.stages.settings import problem_settings
from hetsfl.system.scenario import generate_scenario


@pytest.fixture(scope="module")
def cnn_profile(tmp_path_factory):
    """A real profile of the CNN written by the profile stage (small batch, few repeats)."""
    from hetsfl.stages.profile import stage_profile

    d = tmp_path_factory.mktemp("profile")
    stage_profile(model="cnn", dataset="fashion_mnist", batch_size=4, repeats=2, threads=1, bits_per_activation=32,
                  bits_per_param=32, seed=0, out_json=d / "cnn.json", out_csv=d / "cnn.csv")
    return d / "cnn.json"


@pytest.fixture(scope="module")
def scenario_path(tmp_path_factory):
    cfg = validate_config({})
    path = tmp_path_factory.mktemp("scenario") / "default.json"
    write_json(path, generate_scenario(scenario_spec(cfg, "default"), cfg["seed"], "default"))
    return path


def test_profile_stage_records_host_flops(cnn_profile):
    meta = read_profile(cnn_profile)["meta"]
    host = meta["host_flops_per_s"]
    # a CPU core does between 1e8 and 1e13 FLOP/s on the CNN's forward + backward
    assert isinstance(host, float) and math.isfinite(host) and 1e8 < host < 1e13
    assert "CPU time" in meta["host_flops_method"] and "1 thread" in meta["host_flops_method"]


def test_profile_stage_records_batch_costs(cnn_profile):
    """meta.batch_costs: the measured fixed CPU cost per batch beyond the units (hetsfl.profiling.step_cost)."""
    profile = read_profile(cnn_profile)
    costs, L = profile["meta"]["batch_costs"], len(profile["units"])
    assert costs["batch_size"] == 4 and costs["repeats"] == 2  # step_repeats: None -> profile.repeats
    assert [p["split"] for p in costs["per_split"]] == list(range(1, L))
    for key in ("device_s", "server_s", "fl_s"):
        assert math.isfinite(costs[key]) and 0 <= costs[key] < 1.0  # seconds per batch of 4 on a CPU
    assert "thread CPU time" in costs["method"] and costs["wall_s"] > 0


def test_measured_overheads_from_a_real_profile(tmp_path, cnn_profile, scenario_path):
    meta = read_profile(cnn_profile)["meta"]
    cfg = validate_config({"optimize": {"compute_model": "measured",
                                        "overheads": {"device_batch_flops": "measured", "server_batch_flops": "measured"}}})
    doc = stage_problem(scenario_path=scenario_path, profile_path=cnn_profile, out=tmp_path / "m.json",
                        **problem_settings(cfg))
    H, costs = meta["host_flops_per_s"], meta["batch_costs"]
    # per cut s = 1..L: the residue at each split (FL's whole-step residue at s = L; no server step), at least 0
    device = [max(0.0, p["device_s"]) for p in costs["per_split"]] + [max(0.0, costs["fl"]["device_s"])]
    server = [max(0.0, p["server_s"]) for p in costs["per_split"]] + [0.0]
    assert len(device) == len(doc["layers"])
    assert doc["overheads"]["device_batch_flops"] == pytest.approx([H * x for x in device])
    assert doc["overheads"]["server_batch_flops"] == pytest.approx([H * x for x in server])
    assert doc["meta"]["compute_host_flops"] == doc["meta"]["measured_overheads"]["host_flops_per_s"] == H
    Problem.read(tmp_path / "m.json")  # a valid problem


def test_flops_model_is_the_unrefined_problem_byte_for_byte(tmp_path, cnn_profile, scenario_path):
    default, flops = tmp_path / "default.json", tmp_path / "flops.json"
    stage_problem(scenario_path=scenario_path, profile_path=cnn_profile, out=default)
    stage_problem(scenario_path=scenario_path, profile_path=cnn_profile, out=flops, compute_model="flops")
    reference = tmp_path / "reference.json"
    write_json(reference, build_problem(json.loads(scenario_path.read_text()), read_profile(cnn_profile), 1))
    assert flops.read_bytes() == default.read_bytes() == reference.read_bytes()
    assert "compute_model" not in json.loads(flops.read_text())["meta"]


def test_measured_model_uses_host_flops_times_measured_time(tmp_path, cnn_profile, scenario_path):
    out = tmp_path / "measured.json"
    doc = stage_problem(scenario_path=scenario_path, profile_path=cnn_profile, out=out, compute_model="measured")
    profile = read_profile(cnn_profile)
    host = profile["meta"]["host_flops_per_s"]
    assert doc["meta"]["compute_model"] == "measured" and doc["meta"]["compute_host_flops"] == host
    assert [layer["name"] for layer in doc["layers"]] == [u["name"] for u in profile["units"]]
    for layer, unit in zip(doc["layers"], profile["units"], strict=True):
        assert layer["fwd_flops"] == pytest.approx(host * unit["time_fwd_s"], rel=1e-12)
        assert layer["bwd_flops"] == pytest.approx(host * unit["time_bwd_s"], rel=1e-12)
    flops = build_problem(json.loads(scenario_path.read_text()), profile, 1)
    # only the FLOPs change: devices, bandwidth, sizes are the unrefined problem's
    assert doc["devices"] == flops["devices"]
    assert [(a["out_bits"], a["param_bits"]) for a in doc["layers"]] == [
        (b["out_bits"], b["param_bits"]) for b in flops["layers"]]
    p = Problem.read(out)
    sol = solve(p, "ao")
    assert sol["status"] == "feasible" and math.isfinite(sol["objective_s"]) and sol["objective_s"] > 0
    assert len(sol["splits"]) == p.num_devices


def test_old_profile_without_host_flops(tmp_path, cnn_profile, scenario_path):
    old = json.loads(cnn_profile.read_text())
    del old["meta"]["host_flops_per_s"], old["meta"]["host_flops_method"]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    read_profile(path)  # still readable
    stage_problem(scenario_path=scenario_path, profile_path=path, out=tmp_path / "p.json")  # flops: fine
    with pytest.raises(ConfigError, match="rerun the profile stage") as exc:
        stage_problem(scenario_path=scenario_path, profile_path=path, out=tmp_path / "m.json",
                      compute_model="measured")
    assert str(path) in str(exc.value) and "host_flops_per_s" in str(exc.value)
    assert not (tmp_path / "m.json").exists()


def test_config_key_is_validated_and_reaches_the_stage():
    assert validate_config({})["optimize"]["compute_model"] == "flops"
    cfg = validate_config({"optimize": {"compute_model": "measured"}})
    assert problem_settings(cfg)["compute_model"] == "measured"
    with pytest.raises(ConfigError, match="compute_model"):
        validate_config({"optimize": {"compute_model": "memory"}})


def test_stage_refuses_unknown_compute_model(tmp_path, cnn_profile, scenario_path):
    with pytest.raises(ConfigError, match="compute_model"):
        stage_problem(scenario_path=scenario_path, profile_path=cnn_profile, out=tmp_path / "x.json",
                      compute_model="memory")


def test_refined_problem_differs_only_where_times_disagree_with_flops(tmp_path, cnn_profile, scenario_path):
    """Independent check of the compute term: device n at cut s needs K D H sum_{j<=s} t_j / c_n."""
    doc = stage_problem(scenario_path=scenario_path, profile_path=cnn_profile, out=tmp_path / "m.json",
                        compute_model="measured")
    profile = read_profile(cnn_profile)
    p = Problem.from_dict(doc)
    a, _ = p.device_server_terms()
    t = np.cumsum([u["time_fwd_s"] + u["time_bwd_s"] for u in profile["units"]])
    host = profile["meta"]["host_flops_per_s"]
    np.testing.assert_allclose(a, (p.iters * p.batch / p.dev_flops)[:, None] * host * t[None, :], rtol=1e-9)


def test_cli_problem_takes_the_compute_model(tmp_path, cnn_profile, scenario_path):
    from hetsfl.cli import main

    out = tmp_path / "cli.json"
    assert main(["problem", "--scenario", str(scenario_path), "--profile", str(cnn_profile), "--out", str(out),
                 "--compute-model", "measured"]) == 0
    assert json.loads(out.read_text())["meta"]["compute_model"] == "measured"
