"""Block fading redrawn every round and the static / per-round policies (issue 10).

References: the realised round latency of a kept solution is recomputed here from the formula (conftest's
independent phi and terms); the fading draws are checked against the Exp(1) distribution (Kolmogorov-Smirnov)
and for stability when devices are added.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from hetsfl.errors import ConfigError
from hetsfl.optim.problem import Problem, validate_document
from hetsfl.optim.rounds import POLICIES, simulate_rounds
from hetsfl.optim.solvers import solve
from hetsfl.system.fading import fading_power, fading_powers, round_gains


def test_fading_is_exponential_and_reproducible():
    g = fading_powers(7, 50, 200)
    assert g.shape == (50, 200)
    assert np.array_equal(g, fading_powers(7, 50, 200))
    assert not np.array_equal(g, fading_powers(8, 50, 200))
    assert stats.kstest(g.ravel(), "expon").pvalue > 1e-3
    assert abs(g.mean() - 1.0) < 0.02
    # rounds are independent draws, not copies
    assert abs(np.corrcoef(g[:-1].ravel(), g[1:].ravel())[0, 1]) < 0.05


def test_fading_stable_when_devices_change():
    small, large = fading_power(3, 4, 10), fading_power(3, 4, 1000)
    assert np.array_equal(small, large[:10])
    assert np.array_equal(fading_power(3, 4, 5, "none"), np.ones(5))
    np.testing.assert_array_equal(round_gains(np.full(10, 2e-12), 3, 4), 2e-12 * small)
    with pytest.raises(ValueError, match="unknown fading model"):
        fading_power(0, 0, 3, "rician")
    with pytest.raises(ValueError, match="non-negative"):
        fading_power(0, -1, 3)


def realised_latency(doc, sol, power, ref) -> float:
    """Round latency of a kept solution on gains x |g|^2, from the formula (no hetsfl latency code)."""
    d = copy.deepcopy(doc)
    for dev, g in zip(d["devices"], power, strict=True):
        dev["channel_gain"] *= g
    A, U = ref.terms(d, sequential=bool(sol.get("sequential")))
    xu, xd = ref.x(d)
    rows = np.arange(len(doc["devices"]))
    cols = np.array(sol["splits"]) - 1
    T = A[rows, cols] + U[rows, cols] * ref.phi(np.array(sol["bandwidth_hz"]), xu, xd)
    return float(T.sum() if sol.get("sequential") else T.max())


@pytest.mark.parametrize("seed", range(6))
def test_per_round_never_worse_than_static(seed, random_problem_document, ref):
    doc = random_problem_document(np.random.default_rng(seed), 2 + seed % 4, 5,
                                  sharing=("equal", "dedicated")[seed % 2])
    p = Problem.from_dict(doc)
    R = 6
    for method in ("global", "ao", "exhaustive"):
        res = {pol: simulate_rounds(p, method, pol, R, seed=seed) for pol in POLICIES}
        for pol in ("static", "static_first"):
            for r in range(R):
                assert res["per_round"]["round_latency_s"][r] <= res[pol]["round_latency_s"][r] * (1 + 1e-9)
        # the kept solution's latency on each round's channel, recomputed here
        kept = solve(p, method)
        power = fading_powers(seed, R, len(doc["devices"]))
        for r in range(R):
            assert res["static"]["round_latency_s"][r] == pytest.approx(realised_latency(doc, kept, power[r], ref),
                                                                         rel=1e-10)
            assert res["static"]["splits"][r] == kept["splits"]
        # per-round re-solving equals solving the realised problem from scratch
        d = copy.deepcopy(doc)
        for dev, g in zip(d["devices"], power[2], strict=True):
            dev["channel_gain"] *= g
        assert res["per_round"]["round_latency_s"][2] == pytest.approx(
            solve(Problem.from_dict(d), method)["objective_s"], rel=1e-12)
        assert res["per_round"]["sim_time_s"][-1] == pytest.approx(sum(res["per_round"]["round_latency_s"]))
        assert res["static"]["solve_time_s"][1:] == [0.0] * (R - 1)
        assert all(t > 0 for t in res["per_round"]["solve_time_s"])


def test_per_round_with_optimized_sharing(random_problem_document):
    doc = random_problem_document(np.random.default_rng(4), 3, 4, sharing="optimized")
    p = Problem.from_dict(doc)
    per = simulate_rounds(p, "exhaustive", "per_round", 4, seed=1)
    st = simulate_rounds(p, "exhaustive", "static", 4, seed=1)
    assert all(a <= b * (1 + 1e-9) for a, b in zip(per["round_latency_s"], st["round_latency_s"], strict=True))


def test_no_fading_gives_the_plain_solution_every_round(random_problem_document):
    p = Problem.from_dict(random_problem_document(np.random.default_rng(9), 4, 5))
    for method in ("ao", "sl", "fl", "equal_bandwidth"):
        plain = solve(p, method)["objective_s"]
        for pol in POLICIES:
            res = simulate_rounds(p, method, pol, 3, fading="none")
            assert res["round_latency_s"] == pytest.approx([plain] * 3, rel=1e-12), (method, pol)


def test_rounds_reproducible_and_validated(random_problem_document):
    p = Problem.from_dict(random_problem_document(np.random.default_rng(2), 3, 4))
    a = simulate_rounds(p, "ao", "per_round", 3)
    b = simulate_rounds(p, "ao", "per_round", 3)
    assert a["round_latency_s"] == b["round_latency_s"] and a["splits"] == b["splits"]
    assert a["seed"] == p.seed
    assert simulate_rounds(p, "ao", "per_round", 3, seed=p.seed + 1)["round_latency_s"] != a["round_latency_s"]
    with pytest.raises(ConfigError, match="unknown fading policy"):
        simulate_rounds(p, "ao", "sometimes", 3)
    with pytest.raises(ConfigError, match="rounds must be"):
        simulate_rounds(p, "ao", "static", 0)


def test_sfl_v2_clock_under_fading(random_problem_document):
    """SFL-V2 rounds: static keeps the cuts and bandwidths, timed with each round's order and channel;
    re-optimising the common cut and bandwidth for the round (exact for its order) is never worse."""
    from hetsfl.optim import sfl_v2

    doc = random_problem_document(np.random.default_rng(6), 3, 4)
    for dev in doc["devices"]:
        dev["local_iters"] = 3
    p = Problem.from_dict(doc)
    R = 3
    st = simulate_rounds(p, "sfl_v2_common", "static", R, seed=5, train_seed=2)
    per = simulate_rounds(p, "sfl_v2_common", "per_round", R, seed=5, train_seed=2)
    kept = sfl_v2.solve_sfl_v2(p, "sfl_v2_common", seed=2)
    power = fading_powers(5, R, 3)
    for r in range(R):
        d = copy.deepcopy(doc)
        for dev, g in zip(d["devices"], power[r], strict=True):
            dev["channel_gain"] *= g
        pr = Problem.from_dict(d)
        assert st["round_latency_s"][r] == pytest.approx(
            float(sfl_v2.round_latency(pr, kept["splits"], kept["bandwidth_hz"], 2, r)), rel=1e-12)
        assert per["round_latency_s"][r] <= st["round_latency_s"][r] * (1 + 1e-6)
    none = simulate_rounds(p, "sfl_v2_common", "static", R, fading="none", train_seed=2)
    assert none["round_latency_s"] == pytest.approx(sfl_v2.round_latencies(p, kept["splits"], kept["bandwidth_hz"], 2,
                                                                            R), rel=1e-12)


def test_per_round_scenario_keeps_the_mean_gain_and_tells_the_problem():
    """fading rayleigh_per_round: the scenario's gain is the no-fading gain (same shadowing draws), the kind is
    in the scenario and the problem's meta; a single-draw rayleigh scenario differs only by that draw."""
    from hetsfl.config import load_config, scenario_spec
    from hetsfl.optim.build import build_problem
    from hetsfl.system.scenario import generate_scenario

    cfg = load_config(Path(__file__).resolve().parents[1] / "config" / "config.yaml")
    spec = scenario_spec(cfg, "default")
    plain = generate_scenario(spec, 5, "a")
    per_round = generate_scenario({**spec, "fading": "rayleigh_per_round"}, 5, "b")
    once = generate_scenario({**spec, "fading": "rayleigh"}, 5, "c")
    g0, g1, g2 = (np.array([d["channel_gain"] for d in s["devices"]]) for s in (plain, per_round, once))
    np.testing.assert_array_equal(g0, g1)
    assert not np.allclose(g0, g2) and np.all(g2 > 0)
    assert (plain["fading"], per_round["fading"], once["fading"]) == ("none", "rayleigh_per_round", "rayleigh")
    profile = {"meta": {"model": "cnn"}, "units": [
        {"name": "u1", "fwd_flops": 1e6, "bwd_flops": 2e6, "out_bits": 1e4, "param_bits": 1e5},
        {"name": "u2", "fwd_flops": 1e6, "bwd_flops": 2e6, "out_bits": 1e3, "param_bits": 1e5}]}
    doc = build_problem(per_round, profile)
    validate_document(doc, "problem", "per-round problem")
    assert doc["meta"]["fading"] == "rayleigh_per_round"


def test_rounds_stage_table_is_simulate_rounds(random_problem_document, tmp_path):
    """The rounds stage writes simulate_rounds's latencies for every method and policy; a problem without
    per-round fading is refused with a message naming the setting."""
    import json

    import pandas as pd

    from hetsfl.errors import ConfigError
    from hetsfl.stages.rounds import stage_rounds

    doc = random_problem_document(np.random.default_rng(21), 5, 5)
    doc["meta"] = {"scenario": "fading-test", "fading": "rayleigh_per_round"}
    path, out = tmp_path / "p.json", tmp_path / "rounds.csv"
    path.write_text(json.dumps(doc))
    table = stage_rounds(problem_path=path, out=out, methods=["ao", "fl"], rounds=4)
    pd.testing.assert_frame_equal(table, pd.read_csv(out), check_exact=False, rtol=1e-12)
    p = Problem.from_dict(doc)
    for (method, policy), part in table.groupby(["method", "policy"]):
        sim = simulate_rounds(p, method, policy, 4)
        assert part["round_latency_s"].tolist() == pytest.approx(sim["round_latency_s"], rel=1e-12)
        assert part["sim_time_s"].tolist() == pytest.approx(sim["sim_time_s"], rel=1e-12)
        assert part["round"].tolist() == [1, 2, 3, 4]
    assert set(table["policy"]) == {"static", "static_first", "per_round"}
    ao = table[table["method"] == "ao"].groupby("policy")["round_latency_s"].sum()
    assert ao["per_round"] <= ao["static"] * (1 + 1e-9)
    doc["meta"]["fading"] = "none"
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="rayleigh_per_round"):
        stage_rounds(problem_path=path, out=tmp_path / "no.csv", methods=["ao"], rounds=2)
    assert not (tmp_path / "no.csv").exists()


def test_train_stage_uses_the_policy_under_per_round_fading(random_problem_document, tmp_path):
    import json

    from hetsfl.optim.solvers import solve
    from hetsfl.stages.train import round_latencies

    doc = random_problem_document(np.random.default_rng(22), 4, 5)
    doc["meta"] = {"scenario": "x", "fading": "rayleigh_per_round"}
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    p = Problem.from_dict(doc)
    sol = solve(p, "ao")
    for policy in ("static", "per_round"):
        got = round_latencies(path, doc, sol, policy, 3, 0)
        assert got == pytest.approx(simulate_rounds(p, "ao", policy, 3)["round_latency_s"], rel=1e-12)
    assert len(set(got)) == 3
