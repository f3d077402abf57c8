"""Stage `emulate` (issue 11 §3): predicted terms, the table, the loopback fallback and one short emulation
on the test configuration (root with iproute2 only; skipped otherwise with the one-line reason)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hetsfl.config import load_config, scenario_spec
from hetsfl.emulation import available
from hetsfl.optim.problem import Problem
from hetsfl.optim.solvers import build_solution
from hetsfl.stages import settings
from hetsfl.stages.emulate import TABLE_COLUMNS, emulation_rows, predicted_terms, stage_emulate
from hetsfl.system.channel import rate

ROOT = Path(__file__).resolve().parent.parent
NET_OK, NET_REASON = available()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    """The test configuration's default scenario: problem and the ao and fl solutions, built by the stages."""
    from hetsfl.stages.optimize import stage_optimize
    from hetsfl.stages.problem import stage_problem
    from hetsfl.stages.profile import stage_profile
    from hetsfl.stages.scenario import stage_scenario

    cfg = load_config(ROOT / "config/test.yaml")
    d = tmp_path_factory.mktemp("emulate_inputs")
    stage_scenario(spec=scenario_spec(cfg, "default"), seed=cfg["seed"], name="default", out=d / "scenario.json")
    stage_profile(**settings.profile_settings(cfg), out_json=d / "profile.json", out_csv=d / "profile.csv")
    stage_problem(scenario_path=d / "scenario.json", profile_path=d / "profile.json", out=d / "problem.json")
    sols = {}
    for m in ("ao", "fl", "sl"):
        stage_optimize(problem_path=d / "problem.json", method=m, out=d / f"{m}.json")
        sols[m] = d / f"{m}.json"
    return {"cfg": cfg, "dir": d, "problem": d / "problem.json", "solutions": sols}


def _read(path):
    return json.loads(Path(path).read_text())


@pytest.mark.parametrize("method", ["ao", "fl", "sl"])
def test_predicted_terms_are_alpha_times_the_solution(inputs, method):
    problem = Problem.read(inputs["problem"])
    sol = _read(inputs["solutions"][method])
    pred = predicted_terms(problem, sol, alpha=3.0)
    per = pd.DataFrame(sol["per_device"])
    for col in ("compute_s", "uplink_s", "downlink_s", "latency_s"):
        np.testing.assert_allclose(pred[col], 3.0 * per[col], rtol=1e-12)
    assert pred.attrs["objective_s"] == pytest.approx(3.0 * sol["objective_s"], rel=1e-12)
    # the emulated link moves the bits in the predicted (dilated) time: U / (r(b) / alpha)
    np.testing.assert_allclose(8 * pred["up_bytes"] / pred["up_bps"], pred["uplink_s"], rtol=1e-9)
    np.testing.assert_allclose(pred["up_bps"], rate(per["bandwidth_hz"], problem.xu) / 3.0, rtol=1e-12)
    # compute = device part + server part
    np.testing.assert_allclose(pred["device_compute_s"] + pred["server_compute_s"], pred["compute_s"], rtol=1e-9)


def test_local_iters_override_recomputes_the_terms_with_that_k(inputs):
    problem = Problem.read(inputs["problem"])
    sol = _read(inputs["solutions"]["ao"])
    pred = predicted_terms(problem, sol, alpha=2.0, local_iters=1)
    k1 = dataclasses.replace(problem, iters=np.ones(problem.num_devices, dtype=problem.iters.dtype))
    ref = build_solution(k1, "ao", sol["splits"], sol["bandwidth_hz"], [], 0.0)
    np.testing.assert_allclose(pred["latency_s"], 2.0 * np.array([d["latency_s"] for d in ref["per_device"]]))
    full = predicted_terms(problem, sol, alpha=2.0)
    K = problem.iters.astype(float)
    np.testing.assert_allclose(pred["compute_s"] * K, full["compute_s"], rtol=1e-9)  # compute is linear in K
    assert (pred["up_bytes"] < full["up_bytes"]).all()  # fewer batches of smashed data
    assert (pred["local_iters"] == 1).all()


def test_rows_pair_each_measurement_with_its_prediction(inputs):
    problem = Problem.read(inputs["problem"])
    pred = predicted_terms(problem, _read(inputs["solutions"]["ao"]), alpha=5.0, local_iters=1)
    n = len(pred)
    devices = pd.DataFrame({
        "round": 1, "device": range(n), "method": "sfl", "compute_s": 1.0, "device_compute_s": 0.6,
        "server_compute_s": 0.4, "up_s": 2.0, "down_s": 3.0, "round_s": 6.5, "up_bytes": 10.0, "down_bytes": 20.0,
        "wait_s": 0.1, "other_s": 0.5, "up_msgs": 2, "down_msgs": 2, "up_latency_s": 0.01, "down_latency_s": 0.02,
        "device_cpu_s": 0.03,
    })
    rounds = pd.DataFrame({"round": [1], "method": ["sfl"], "train_s": [7.0], "wall_s": [7.5], "up_bytes": [40.0],
                           "down_bytes": [80.0]})
    rows = emulation_rows("ao", pred, devices, rounds, alpha=5.0, emulated=False, paces=None)
    assert list(rows.columns) == TABLE_COLUMNS
    dev = rows[rows["row"] == "device"]
    assert len(dev) == n and not dev["emulated"].any()
    np.testing.assert_allclose(dev["predicted_up_s"], pred["uplink_s"])
    np.testing.assert_allclose(dev["measured_round_s"], 6.5)
    np.testing.assert_allclose(dev["measured_device_cpu_s"], 0.03)
    assert dev["measured_server_cpu_s"].isna().all()  # absent from the runtime's rows: NaN, not an error
    rnd = rows[rows["row"] == "round"].iloc[0]
    assert rnd["predicted_round_s"] == pytest.approx(pred.attrs["objective_s"])
    assert rnd["measured_round_s"] == 7.0


def _run(inputs, tmp_path, methods, **kw):
    cfg = inputs["cfg"]
    args = settings.emulate_settings(cfg)
    args.update(methods=methods, rounds=1, local_iters=1, **kw)
    table = stage_emulate(**args, solution_paths=inputs["solutions"], problem_path=inputs["problem"],
                          out_dir=tmp_path / "emulation", table_path=tmp_path / "emulation.csv", progress=False)
    return table, pd.read_csv(tmp_path / "emulation.csv")


def test_a_configured_alpha_too_small_for_one_method_fails_before_any_method_runs(inputs, tmp_path, monkeypatch):
    import hetsfl.emulation
    from hetsfl.emulation import QuotaError

    monkeypatch.setattr(hetsfl.emulation, "available", lambda: (True, None))
    monkeypatch.setattr(hetsfl.emulation, "calibrate_model", lambda *a, **k: 1e11)  # H = 100 GFLOP/s
    problem = Problem.read(inputs["problem"])
    alpha = 1.5 * problem.server_flops / problem.num_devices / 1e11  # ao's shares c_S / N fit, SL's c_S not
    need = problem.server_flops / 1e11  # SL runs on the whole server: alpha >= c_S / H
    assert alpha < need
    with pytest.raises(QuotaError, match=rf"server share of device 0: .* at alpha={alpha:g} .* use alpha >= {need:.3g}"):
        _run(inputs, tmp_path, ["ao", "sl"], alpha=alpha)
    assert not (tmp_path / "emulation").exists()  # nothing ran


def test_a_measured_model_problem_is_paced_with_its_own_host_flops(inputs, tmp_path, monkeypatch):
    """The problem's FLOP-equivalents were made with the profile's H: pacing must use that H, not a new
    calibration (alpha's lower bound c_S / H shows which H was used)."""
    import hetsfl.emulation
    from hetsfl.emulation import QuotaError

    monkeypatch.setattr(hetsfl.emulation, "available", lambda: (True, None))
    monkeypatch.setattr(hetsfl.emulation, "calibrate_model", lambda *a, **k: 1e11)
    doc = _read(inputs["problem"])
    doc.setdefault("meta", {})["compute_host_flops"] = 4e11
    path = tmp_path / "measured_problem.json"
    path.write_text(json.dumps(doc))
    c_s = Problem.read(inputs["problem"]).server_flops
    alpha = 0.5 * c_s / 4e11  # too small for SL's whole server under either H
    with pytest.raises(QuotaError, match=rf"use alpha >= {c_s / 4e11:.3g}"):
        _run({**inputs, "problem": path}, tmp_path, ["sl"], alpha=alpha)


def test_problem_host_flops_reads_the_measured_models_h():
    from hetsfl.errors import ConfigError
    from hetsfl.optim.refine import problem_host_flops

    assert problem_host_flops({}) is None
    assert problem_host_flops({"compute_host_flops": 9e10}) == 9e10
    assert problem_host_flops({"measured_overheads": {"host_flops_per_s": 8e10}}) == 8e10
    assert problem_host_flops({"compute_host_flops": 8e10, "measured_overheads": {"host_flops_per_s": 8e10}}) == 8e10
    with pytest.raises(ConfigError, match="disagree"):
        problem_host_flops({"compute_host_flops": 9e10, "measured_overheads": {"host_flops_per_s": 8e10}})
    with pytest.raises(ConfigError, match="must be FLOP/s > 0"):
        problem_host_flops({"compute_host_flops": -1.0})


@pytest.mark.slow
def test_without_namespaces_it_runs_unshaped_on_loopback_and_says_so(inputs, tmp_path, monkeypatch, caplog):
    import hetsfl.emulation

    monkeypatch.setattr(hetsfl.emulation, "available", lambda: (False, "not root (test)"))
    with caplog.at_level(logging.WARNING, logger="hetsfl.emulate"):
        table, written = _run(inputs, tmp_path, ["ao"], alpha=4.0)
    assert "emulation unavailable (not root (test))" in caplog.text
    assert not written["emulated"].any()
    assert set(written["row"]) == {"device", "round"}
    assert (tmp_path / "emulation/ao/measured_devices.csv").exists()
    assert written["device_pace"].isna().all()  # nothing was paced
    meta = _read(tmp_path / "emulation/emulation.json")
    assert meta["emulated"] is False and meta["unavailable_reason"] == "not root (test)"


@pytest.mark.slow
@pytest.mark.skipif(not NET_OK, reason=NET_REASON or "network emulation unavailable")
def test_short_emulation_on_the_test_config(inputs, tmp_path):
    from hetsfl.emulation._sys import owner_alive, read_records
    from hetsfl.emulation.netns import list_namespaces

    before = set(list_namespaces())
    table, written = _run(inputs, tmp_path, ["ao"])
    assert written["emulated"].all()
    dev = written[written["row"] == "device"]
    # links are shaped to the solution's rates: measured transfer times within 10 % of the prediction
    ratio = dev["measured_up_s"] / dev["predicted_up_s"]
    assert ratio.between(0.9, 1.1).all(), ratio.tolist()
    ratio = dev["measured_down_s"] / dev["predicted_down_s"]
    assert ratio.between(0.9, 1.1).all(), ratio.tolist()
    # compute is paced: at least the predicted FLOP time for the server's work (never faster than emulated)
    assert (dev["measured_server_compute_s"] > 0.5 * dev["predicted_server_compute_s"]).all()
    assert (dev["measured_up_bytes"] >= dev["predicted_up_bytes"]).all()  # payload + int64 labels
    # Every namespace of this run is removed. Another test worker may be running its own emulation at the
    # same time: namespaces whose owner record names another live process are that run's, not leftovers.
    records = read_records("net")

    def other_run(ns: str) -> bool:
        record = records.get(ns.rsplit("-", 1)[0], {})
        return record.get("pid") != os.getpid() and owner_alive(record)

    assert [ns for ns in set(list_namespaces()) - before if not other_run(ns)] == []


def test_config_schema_methods_are_the_emulate_registry():
    from hetsfl.config import load_schema
    from hetsfl.optim.solvers import SOLVERS
    from hetsfl.stages.emulate import EMULATE_METHODS

    schema = load_schema()["properties"]["emulate"]["properties"]["methods"]
    assert schema["items"]["enum"] == list(EMULATE_METHODS)
    assert set(EMULATE_METHODS) <= set(SOLVERS)
    assert set(schema["default"]) <= set(EMULATE_METHODS)


def test_choose_alpha_fits_the_largest_rate_and_the_sum_and_rounds_up():
    from hetsfl.emulation import smallest_alpha
    from hetsfl.stages.emulate import choose_alpha

    dev, host = [1e9, 5e9], 5e10
    shares = {"ao": [2.5e11, 2.5e11], "sl": [5e11]}
    a = choose_alpha(dev, shares, host, cores=2, headroom=0.8)
    exact = max(smallest_alpha(dev, s, host, cores=2, headroom=0.8) for s in shares.values())
    assert exact <= a < exact * 1.1  # two significant digits, never below
    assert a == pytest.approx(10.0)  # sl: 5e11 / 5e10 on one core; ao: 5.06e11 / (1.6 x 5e10) = 6.3


def test_pacing_reads_its_fractions_from_the_environment(monkeypatch):
    import importlib

    import hetsfl.runtime.pacing as pacing
    from hetsfl.emulation.compute import paced

    monkeypatch.setenv(pacing.DEVICE_ENV, "0.25")
    monkeypatch.setenv(pacing.SERVER_ENV, "[0.5, 1.0]")
    mod = importlib.reload(pacing)
    try:
        assert isinstance(mod.device_pace(), paced) and mod.device_pace().fraction == 0.25
        assert mod.server_pace(1).fraction == 1.0
        monkeypatch.setenv(pacing.DEVICE_ENV, "2")
        with pytest.raises(ValueError, match="HETSFL_PACE"):
            importlib.reload(pacing)
    finally:
        monkeypatch.delenv(pacing.DEVICE_ENV)
        monkeypatch.delenv(pacing.SERVER_ENV)
        mod = importlib.reload(pacing)
    assert not isinstance(mod.device_pace(), paced)  # no emulation: a no-op
