"""SFL-V2's own round latency (issue 10): the recursion against an event-by-event simulation written here
(a heap of timed events, a single server taking jobs in the engine's order), against the SFL-V1 model where
they must agree (one device), and the optimisers against enumeration / sampling.
"""

from __future__ import annotations

import heapq
import math

import numpy as np
import pytest

from hetsfl.optim import sfl_v2
from hetsfl.optim.problem import Problem
from hetsfl.optim.solvers import solve

LN2 = math.log(2.0)


def durations(doc: dict, splits, bandwidth) -> list[dict]:
    """Per-batch step times of every device from the layer list (no hetsfl code)."""
    layers = doc["layers"]
    out = []
    n0 = doc["noise_psd_w_per_hz"]
    for dev, s, b in zip(doc["devices"], splits, bandwidth, strict=True):
        D, c = dev["batch_size"], dev["flops"]
        xu = dev["tx_power_w"] * dev["channel_gain"] / n0
        xd = doc["server"]["tx_power_w"] * dev["channel_gain"] / n0
        ru, rd = b * math.log2(1 + xu / b), b * math.log2(1 + xd / b)
        w_bits = sum(u["param_bits"] for u in layers[:s])
        out.append({
            "fwd": D * sum(u["fwd_flops"] for u in layers[:s]) / c,
            "bwd": D * sum(u["bwd_flops"] for u in layers[:s]) / c,
            "server": D * sum(u["fwd_flops"] + u["bwd_flops"] for u in layers[s:]) / doc["server"]["flops"],
            "up": D * layers[s - 1]["out_bits"] / ru,
            "down": D * layers[s - 1]["out_bits"] / rd,
            "model": w_bits / ru + w_bits / rd,
            "K": dev["local_iters"],
        })
    return out


def simulate(doc: dict, splits, bandwidth, sequence: list[int]) -> list[float]:
    """Event-driven simulation; returns each device's finishing time."""
    d = durations(doc, splits, bandwidth)
    n = len(d)
    events: list = []
    counter = 0

    def push(t, kind, dev):
        nonlocal counter
        heapq.heappush(events, (t, counter, kind, dev))
        counter += 1

    arrived, served, done_iters = [0] * n, [0] * n, [0] * n
    finish = [None] * n
    state = {"busy": False, "ptr": 0}

    def try_server(t):
        if state["busy"] or state["ptr"] >= len(sequence):
            return
        dev = sequence[state["ptr"]]
        if arrived[dev] > served[dev]:
            state["busy"] = True
            state["ptr"] += 1
            served[dev] += 1
            push(t + d[dev]["server"], "server_done", dev)

    for dev in range(n):
        push(d[dev]["fwd"], "fwd_done", dev)
    while events:
        t, _, kind, dev = heapq.heappop(events)
        if kind == "fwd_done":
            push(t + d[dev]["up"], "arrived", dev)
        elif kind == "arrived":
            arrived[dev] += 1
            try_server(t)
        elif kind == "server_done":
            state["busy"] = False
            push(t + d[dev]["down"], "down_done", dev)
            try_server(t)
        elif kind == "down_done":
            push(t + d[dev]["bwd"], "bwd_done", dev)
        elif kind == "bwd_done":
            done_iters[dev] += 1
            if done_iters[dev] < d[dev]["K"]:
                push(t + d[dev]["fwd"], "fwd_done", dev)
            else:
                push(t + d[dev]["model"], "finished", dev)
        else:
            finish[dev] = t
    assert state["ptr"] == len(sequence) and None not in finish
    return finish


def instance(make_doc, seed: int, n: int, L: int = 5) -> dict:
    rng = np.random.default_rng(seed)
    doc = make_doc(rng, n, L)
    for dev in doc["devices"]:
        dev["local_iters"] = int(rng.integers(1, 5))  # unequal K: devices drop out of later iterations
    return doc


def test_order_is_the_training_engines():
    from hetsfl.train.schedule import device_order

    for seed, r, k in [(0, 0, 0), (3, 5, 2), (11, 2, 9)]:
        assert sfl_v2.device_order(seed, r, k, [0, 2, 3, 7, 9]) == device_order(seed, r, k, [0, 2, 3, 7, 9])


@pytest.mark.parametrize("seed", range(12))
def test_recursion_matches_event_simulation(seed, random_problem_document):
    n = 1 + seed % 6
    doc = instance(random_problem_document, seed, n)
    p = Problem.from_dict(doc)
    rng = np.random.default_rng(seed)
    splits = rng.integers(1, 5, n)
    b = rng.dirichlet(np.ones(n)) * doc["total_bandwidth_hz"]
    for r in (0, 3):
        seq = sfl_v2.job_sequence([d["local_iters"] for d in doc["devices"]], seed, r)
        assert sorted(seq) == sorted(sum(([i] * d["local_iters"] for i, d in enumerate(doc["devices"])), []))
        ref = simulate(doc, splits, b, seq)
        got = sfl_v2.round_latency(p, splits, b, seed, r, detail=True)
        np.testing.assert_allclose(got["finish_s"], ref, rtol=1e-12)
        assert float(got["latency_s"]) == pytest.approx(max(ref), rel=1e-12)
    # batched evaluation equals one by one
    S = rng.integers(1, 5, (6, n))
    batched = sfl_v2.round_latency(p, S, b, seed)
    assert batched == pytest.approx([float(sfl_v2.round_latency(p, s, b, seed)) for s in S], rel=1e-14)


@pytest.mark.parametrize("seed", range(5))
def test_one_device_equals_v1_with_the_whole_server(seed, random_problem_document):
    """N = 1: nobody waits, so the round is K (p + up + sigma + dn + q) + model = the SFL-V1 latency with c_S."""
    doc = random_problem_document(np.random.default_rng(seed), 1, 5, sharing="dedicated")
    p = Problem.from_dict(doc)
    for s in range(1, 5):
        from hetsfl.optim.solvers import build_solution

        v1 = build_solution(p, "x", [s], [doc["total_bandwidth_hz"]], [], 0.0)["objective_s"]
        assert float(sfl_v2.round_latency(p, [s], [doc["total_bandwidth_hz"]], seed)) == pytest.approx(v1, rel=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_bounds_on_the_round(seed, random_problem_document):
    """The round lasts at least the server's total work and at least every device's own chain."""
    n = 2 + seed % 4
    doc = instance(random_problem_document, 50 + seed, n)
    p = Problem.from_dict(doc)
    splits = np.random.default_rng(seed).integers(1, 5, n)
    b = np.full(n, doc["total_bandwidth_hz"] / n)
    d = durations(doc, splits, b)
    got = sfl_v2.round_latency(p, splits, b, seed, detail=True)
    T = float(got["latency_s"])
    assert T >= sum(x["K"] * x["server"] for x in d) * (1 - 1e-12)
    assert got["server_busy_s"] == pytest.approx(sum(x["K"] * x["server"] for x in d))
    for x, e in zip(d, got["finish_s"], strict=True):
        assert e >= x["K"] * (x["fwd"] + x["up"] + x["server"] + x["down"] + x["bwd"]) + x["model"] - 1e-12 * e


@pytest.mark.parametrize("seed", range(4))
def test_optimal_bandwidth_is_optimal(seed, random_problem_document):
    n = 2 + seed % 3
    doc = instance(random_problem_document, 80 + seed, n)
    p = Problem.from_dict(doc)
    B = doc["total_bandwidth_hz"]
    splits = np.random.default_rng(seed).integers(1, 5, n)
    T, b, tau = sfl_v2.optimal_bandwidth(p, splits, seed)
    assert b.sum() <= B * (1 + 1e-12)
    assert T == pytest.approx(tau, rel=1e-6)  # the convex program's constraints are the recursion
    assert T == pytest.approx(max(simulate(doc, splits, b, sfl_v2.job_sequence(p.iters, seed, 0))), rel=1e-12)
    samples = np.random.default_rng(seed).dirichlet(np.ones(n), 3000) * B
    sampled = sfl_v2.round_latency(p, np.broadcast_to(splits, samples.shape), samples, seed)
    assert T <= sampled.min() * (1 + 1e-6)
    # and local perturbations of the optimum along the simplex do not improve it
    for i, j in [(0, 1), (1, 0)]:
        for eps in (1e-3, 1e-5):
            bb = b.copy()
            bb[i] += eps * bb[j]
            bb[j] -= eps * bb[j]
            assert float(sfl_v2.round_latency(p, splits, bb, seed)) >= T * (1 - 1e-7)


@pytest.mark.parametrize("seed", range(4))
def test_split_optimisers(seed, random_problem_document):
    n = 2 + seed % 3
    doc = instance(random_problem_document, 120 + seed, n, L=4)
    p = Problem.from_dict(doc)
    B = doc["total_bandwidth_hz"]
    ex = sfl_v2.exhaustive_splits(p, seed)
    assert ex["combinations"] == 3**n
    # exhaustive = brute force with the event simulation on every combination (equal bandwidth)
    import itertools

    seq = sfl_v2.job_sequence(p.iters, seed, 0)
    ref = min(max(simulate(doc, s, [B / n] * n, seq)) for s in itertools.product(range(1, 4), repeat=n))
    assert ex["objective_s"] == pytest.approx(ref, rel=1e-12)
    ce = sfl_v2.best_common_split(p, seed, "equal")
    assert ce["objective_s"] == pytest.approx(min(max(simulate(doc, [s] * n, [B / n] * n, seq)) for s in (1, 2, 3)))
    loc = sfl_v2.local_search_splits(p, seed, "equal")
    assert ex["objective_s"] <= loc["objective_s"] * (1 + 1e-12) <= ce["objective_s"] * (1 + 1e-12)
    co = sfl_v2.best_common_split(p, seed, "optimal")
    assert co["objective_s"] <= ce["objective_s"] * (1 + 1e-7)
    lo = sfl_v2.local_search_splits(p, seed, "optimal")
    assert lo["objective_s"] <= co["objective_s"] * (1 + 1e-12)


def test_v1_solution_under_v2_clock(random_problem_document):
    """The V2 clock of the V1 optimum is what training reports today; it is a valid V2 point, so the V2
    optimisers with optimal bandwidth starting there cannot do worse."""
    doc = random_problem_document(np.random.default_rng(5), 4, 5)
    p = Problem.from_dict(doc)
    ao = solve(p, "ao")
    v2_of_v1 = float(sfl_v2.round_latency(p, ao["splits"], ao["bandwidth_hz"], 0))
    start = {"splits": ao["splits"], "bandwidth_hz": ao["bandwidth_hz"]}
    best = sfl_v2.local_search_splits(p, 0, "optimal", start=start)
    assert best["objective_s"] <= v2_of_v1 * (1 + 1e-12)


@pytest.mark.parametrize("method", sfl_v2.V2_METHODS)
def test_v2_solution_file(method, random_problem_document):
    import json

    from hetsfl.errors import ConfigError
    from hetsfl.optim.problem import validate_document

    doc = random_problem_document(np.random.default_rng(8), 3, 5)
    p = Problem.from_dict(doc)
    sol = sfl_v2.solve_sfl_v2(p, method, seed=4, rounds=5)
    validate_document(json.loads(json.dumps(sol, allow_nan=False)), "solution", source="v2 solution")
    seqs = [sfl_v2.job_sequence(p.iters, 4, r) for r in range(5)]
    assert sol["round_latency_s"] == pytest.approx(
        [max(simulate(doc, sol["splits"], sol["bandwidth_hz"], q)) for q in seqs], rel=1e-12)
    assert sol["objective_s"] == sol["round_latency_s"][0]
    assert sol["objective_s"] == pytest.approx(max(d["latency_s"] for d in sol["per_device"]))
    if method == "sfl_v2_common":
        assert len(set(sol["splits"])) == 1
    else:
        common = sfl_v2.solve_sfl_v2(p, "sfl_v2_common", seed=4)
        assert sol["objective_s"] <= common["objective_s"] * (1 + 1e-9)
    with pytest.raises(ConfigError, match="unknown SFL-V2 method"):
        sfl_v2.solve_sfl_v2(p, "sfl_v3")


def test_fallback_when_the_program_fails(random_problem_document, monkeypatch):
    """A failed convex program gives the best feasible candidate, flagged inexact, never a crash."""
    import cvxpy as cp

    doc = random_problem_document(np.random.default_rng(3), 3, 4)
    p = Problem.from_dict(doc)
    good = sfl_v2.optimal_bandwidth(p, [2, 2, 2], 0)
    original = cp.Problem.solve

    def failing(self, *args, **kwargs):
        if kwargs.get("solver") == "CLARABEL":
            raise cp.error.SolverError("forced")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cp.Problem, "solve", failing)
    T, b, tau = sfl_v2.optimal_bandwidth(p, [2, 2, 2], 0)
    assert tau is None and b.sum() <= doc["total_bandwidth_hz"] * (1 + 1e-12)
    assert T == pytest.approx(float(sfl_v2.round_latency(p, [2, 2, 2], b, 0)), rel=1e-12)
    assert T >= good[0] * (1 - 1e-6)
    assert sfl_v2.solve_sfl_v2(p, "sfl_v2_common", seed=0)["bandwidth_exact"] is False


@pytest.mark.parametrize("method", sfl_v2.V2_METHODS)
def test_v2_methods_through_the_solver_registry_and_the_optimize_stage(method, random_problem_document, tmp_path):
    """solvers.solve (SOLVERS) and stage_optimize give solve_sfl_v2's answer for the order seed and rounds;
    server sharing does not enter SFL-V2's clock, so optimized sharing gives the equal-sharing answer."""
    import json

    from hetsfl.optim.solvers import SOLVERS, solve
    from hetsfl.stages.optimize import stage_optimize

    assert method in SOLVERS
    doc = random_problem_document(np.random.default_rng(11), 3, 5)
    p = Problem.from_dict(doc)
    direct = sfl_v2.solve_sfl_v2(p, method, seed=2, rounds=4)
    via = solve(p, method, seed=2, rounds=4)
    for key in ("splits", "bandwidth_hz", "objective_s", "round_latency_s", "per_device", "latency_model",
                "order_seed", "server_busy_s"):
        assert via[key] == direct[key], key
    assert via["method"] == method and len(via["round_latency_s"]) == 4
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    staged = stage_optimize(problem_path=path, method=method, out=tmp_path / "s.json", seed=2, rounds=4)
    assert staged["objective_s"] == direct["objective_s"]
    assert json.loads((tmp_path / "s.json").read_text())["round_latency_s"] == direct["round_latency_s"]
    doc["server"]["sharing"] = "optimized"
    optimized = solve(Problem.from_dict(doc), method, seed=2, rounds=4)
    for key in ("splits", "bandwidth_hz", "objective_s", "round_latency_s"):
        assert optimized[key] == direct[key], key


def test_train_stage_times_sfl_v2_by_its_own_clock(random_problem_document, tmp_path):
    """The train stage's per-round latencies: SFL-V2 each round with its own order for the training seed
    (the solution's list for the order seed), other methods none (the solution's objective every round)."""
    import json

    from hetsfl.optim.solvers import solve
    from hetsfl.stages.train import round_latencies

    doc = random_problem_document(np.random.default_rng(12), 4, 5)
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    p = Problem.from_dict(doc)
    v2 = solve(p, "sfl_v2", seed=0, rounds=3)
    assert round_latencies(path, doc, v2, "per_round", 3, 0) == pytest.approx(v2["round_latency_s"], rel=1e-12)
    other = round_latencies(path, doc, v2, "per_round", 5, 7)
    assert other == pytest.approx(sfl_v2.round_latencies(p, v2["splits"], v2["bandwidth_hz"], 7, 5), rel=1e-12)
    assert len(set(np.round(other, 12))) > 1  # the order changes the round's latency
    assert round_latencies(path, doc, solve(p, "ao"), "per_round", 3, 0) is None
