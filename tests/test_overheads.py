"""Optional fixed costs in the latency model (issue 11 §3, docs/model.md "Optional fixed costs"): a latency l per
message and a compute cost per batch on the device and on the server.

    A_n(s) = K D (F_dev(s)/c_n + F_srv(s)/c_S,n) + K dev_batch(s)/c_n + [s < L] K srv_batch(s)/c_S,n + m(s) l
    m(s) = 2 K + 2 (s < L),  m(L) = 2 (FL)

with dev_batch and srv_batch one number for every cut or a list of one per cut s = 1..L. The formula is written
out here (``ref_terms``) and every solver is checked against it and against an exhaustive enumeration with a
bisection bandwidth step (conftest.py), on random instances with random overheads (numbers on even seeds,
per-cut lists on odd ones).
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from hetsfl.config import validate_config
from hetsfl.errors import ConfigError
from hetsfl.optim import sfl_v2
from hetsfl.optim.build import OVERHEAD_KEYS
from hetsfl.optim.problem import Problem
from hetsfl.optim.solvers import METHODS, solve, solve_or_infeasible
from hetsfl.stages.emulate import TABLE_COLUMNS, emulation_rows, predicted_terms
from hetsfl.stages.problem import stage_problem
from hetsfl.stages.settings import problem_settings
from hetsfl.system.latency import fixed_costs, messages_per_round

KEYS = ("per_message_s", "device_batch_flops", "server_batch_flops")


def test_one_set_of_keys_everywhere():
    import dataclasses

    from hetsfl.config import load_schema
    from hetsfl.optim.validate import load_json_schema

    config = load_schema()["properties"]["optimize"]["properties"]["overheads"]["properties"]
    problem = load_json_schema("problem")["properties"]["overheads"]["properties"]
    fields = {f.name for f in dataclasses.fields(Problem)}
    assert tuple(config) == tuple(problem) == OVERHEAD_KEYS == KEYS and set(KEYS) <= fields


# ---- the formula, written out -------------------------------------------------------------------------------
def at(value, s: int) -> float:
    """A fixed cost at cut s: the number, or the list's entry for s."""
    return value[s - 1] if isinstance(value, list) else value


def ref_terms(doc: dict, sequential: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """a[n, s-1] (device seconds incl. messages), w[n, s-1] (server FLOPs), A = a + w / c_S,n and U, by loops."""
    layers, devices, over = doc["layers"], doc["devices"], doc.get("overheads", {})
    ell = over.get("per_message_s", 0.0)
    dev_batch, srv_batch = over.get("device_batch_flops", 0.0), over.get("server_batch_flops", 0.0)
    n, L = len(devices), len(layers)
    a, w, A, U = (np.zeros((n, L)) for _ in range(4))
    share = doc["server"]["flops"] if sequential or doc["server"]["sharing"] == "dedicated" else doc["server"]["flops"] / n
    for i, dev in enumerate(devices):
        K, D, c = dev["local_iters"], dev["batch_size"], dev["flops"]
        for s in range(1, L + 1):
            f_dev = sum(u["fwd_flops"] + u["bwd_flops"] for u in layers[:s])
            f_srv = sum(u["fwd_flops"] + u["bwd_flops"] for u in layers[s:])
            messages = 2 * K + 2 if s < L else 2
            a[i, s - 1] = K * D * f_dev / c + K * at(dev_batch, s) / c + messages * ell
            w[i, s - 1] = K * D * f_srv + (K * at(srv_batch, s) if s < L else 0.0)
            A[i, s - 1] = a[i, s - 1] + w[i, s - 1] / share
            wbits = sum(u["param_bits"] for u in layers[:s])
            U[i, s - 1] = wbits if s == L else K * D * layers[s - 1]["out_bits"] + wbits
    return a, w, A, U


def ref_objective(doc: dict, ref, solution: dict) -> float:
    """max_n T_n (sum for SL) of a solution's cuts, bandwidths (and server shares) by the formula above."""
    sequential = solution.get("sequential", False)
    a, w, A, U = ref_terms(doc, sequential)
    rows = np.arange(len(doc["devices"]))
    cols = np.asarray(solution["splits"]) - 1
    b = np.asarray(solution["bandwidth_hz"], float)
    xu, xd = ref.x(doc)
    comm = U[rows, cols] * ref.phi(b, xu, xd)
    if solution.get("sharing") == "optimized":
        f = np.asarray(solution["server_flops"], float)
        with np.errstate(divide="ignore"):
            T = a[rows, cols] + np.where(w[rows, cols] > 0, w[rows, cols] / f, 0.0) + comm
    else:
        T = A[rows, cols] + comm
    return float(T.sum() if sequential else T.max())


def with_overheads(doc: dict, rng: np.random.Generator, per_cut: bool = False) -> dict:
    """Random overheads of a size that moves the optimum: each key present with probability 0.8; with ``per_cut``
    the per-batch costs are lists of L values drawn from the same ranges (the server's last, FL's, 0)."""
    L = len(doc["layers"])

    def draw(lo: float, hi: float):
        x = np.exp(rng.uniform(math.log(lo), math.log(hi), L if per_cut else None))
        return [float(v) for v in x] if per_cut else float(x)

    draws = {"per_message_s": math.exp(rng.uniform(math.log(1e-4), math.log(0.3))),
             "device_batch_flops": draw(1e6, 3e9), "server_batch_flops": draw(1e6, 1e11)}
    if per_cut:
        draws["server_batch_flops"][-1] = 0.0
    doc["overheads"] = {k: v for k, v in draws.items() if rng.uniform() < 0.8}
    return doc


def instance(make_doc, seed: int, **kw) -> dict:
    rng = np.random.default_rng(seed)
    n, L = 2 + seed % 3, 3 + seed % 4
    doc = make_doc(rng, n, L, memory=seed % 4 == 1, candidates="random" if seed % 3 == 2 else None, **kw)
    for dev in doc["devices"]:
        dev["local_iters"] = int(rng.integers(1, 12))  # unequal K: unequal message counts
    return with_overheads(doc, rng, per_cut=seed % 2 == 1)


def ref_exhaustive(doc: dict, ref) -> float:
    """Best combination of allowed cuts, each by the conftest's nested-bisection bandwidth step, on A above."""
    _, _, A, U = ref_terms(doc)
    xu, xd = ref.x(doc)
    combos = np.array(list(itertools.product(*ref.allowed(doc))))
    rows = np.arange(len(doc["devices"]))
    return float(ref.bandwidth_step(A[rows, combos - 1], U[rows, combos - 1], xu, xd, doc["total_bandwidth_hz"]).min())


# ---- the terms ---------------------------------------------------------------------------------------------
def test_messages_per_round_fl_and_split():
    m = messages_per_round([1, 3, 10], 4)
    np.testing.assert_array_equal(m, [[4, 4, 4, 2], [8, 8, 8, 2], [22, 22, 22, 2]])
    fc = fixed_costs([1, 3], 3, [2.0, 4.0], per_message_s=0.5, device_batch_flops=8.0, server_batch_flops=5.0)
    np.testing.assert_array_equal(fc.message_s, [[2.0, 2.0, 1.0], [4.0, 4.0, 1.0]])
    np.testing.assert_array_equal(fc.device_s, [[4.0, 4.0, 4.0], [6.0, 6.0, 6.0]])
    np.testing.assert_array_equal(fc.server_flops, [[5.0, 5.0, 0.0], [15.0, 15.0, 0.0]])  # FL: no server work
    fc = fixed_costs([1, 3], 3, [2.0, 4.0], device_batch_flops=[8.0, 4.0, 2.0], server_batch_flops=[5.0, 1.0, 0.0])
    np.testing.assert_array_equal(fc.device_s, [[4.0, 2.0, 1.0], [6.0, 3.0, 1.5]])
    np.testing.assert_array_equal(fc.server_flops, [[5.0, 1.0, 0.0], [15.0, 3.0, 0.0]])


@pytest.mark.parametrize("seed", range(4))
def test_fixed_costs_per_cut_are_a_loop(seed):
    rng = np.random.default_rng(seed)
    n, L = int(rng.integers(1, 6)), int(rng.integers(1, 7))
    K, c = rng.integers(1, 20, n), rng.uniform(1e8, 1e10, n)
    dev, srv, ell = rng.uniform(0, 1e9, L), rng.uniform(0, 1e9, L), float(rng.uniform(0, 0.1))
    fc = fixed_costs(K, L, c, per_message_s=ell, device_batch_flops=dev, server_batch_flops=srv)
    for i in range(n):
        for s in range(1, L + 1):
            assert fc.device_s[i, s - 1] == pytest.approx(K[i] * dev[s - 1] / c[i], rel=1e-14)
            assert fc.server_flops[i, s - 1] == (pytest.approx(K[i] * srv[s - 1], rel=1e-14) if s < L else 0.0)
            assert fc.message_s[i, s - 1] == pytest.approx((2 * K[i] + 2 if s < L else 2) * ell, rel=1e-14)
    # a number is the list of that number at every cut
    one = fixed_costs(K, L, c, ell, float(dev[0]), float(srv[0]))
    same = fixed_costs(K, L, c, ell, [float(dev[0])] * L, [float(srv[0])] * L)
    assert all(np.array_equal(x, y) for x, y in zip(one, same, strict=True))
    with pytest.raises(ValueError, match=f"{L} entries"):
        fixed_costs(K, L, c, device_batch_flops=np.ones(L + 1))


@pytest.mark.parametrize("sharing", ["equal", "dedicated", "optimized"])
@pytest.mark.parametrize("seed", range(6))
def test_terms_are_the_formula(seed, sharing, random_problem_document):
    doc = instance(random_problem_document, seed, sharing=sharing)
    p = Problem.from_dict(doc)
    for sequential in (False, True):
        a, w, A, U = ref_terms(doc, sequential)
        got_A, got_U = p.terms(sequential)
        np.testing.assert_allclose(got_A, A, rtol=1e-12)
        np.testing.assert_allclose(got_U, U, rtol=1e-12)
    got_a, got_w = p.device_server_terms()
    np.testing.assert_allclose(got_a, a, rtol=1e-12)
    np.testing.assert_allclose(got_w, w, rtol=1e-12, atol=0)
    # only the message term depends on the flag, and by m(s) l
    no_msg, _ = p.terms(messages=False)
    m = messages_per_round(p.iters, p.num_layers)
    np.testing.assert_allclose(p.terms()[0] - no_msg, m * p.per_message_s, rtol=1e-9, atol=1e-15)


def test_message_count_fl_against_split(random_problem_document):
    doc = random_problem_document(np.random.default_rng(1), 3, 4)
    for dev, k in zip(doc["devices"], (1, 4, 7), strict=True):
        dev["local_iters"] = k
    base = Problem.from_dict(doc)
    doc["overheads"] = {"per_message_s": 0.25}
    extra = Problem.from_dict(doc).terms()[0] - base.terms()[0]
    np.testing.assert_allclose(extra[:, :3], np.array([[4.0], [10.0], [16.0]]) * 0.25 * np.ones((1, 3)), rtol=1e-9)
    np.testing.assert_allclose(extra[:, 3], 2 * 0.25, rtol=1e-9)  # FL: the model down and up


# ---- the solvers -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(16))
def test_exact_methods_agree_and_the_objective_is_the_formula(seed, random_problem_document, ref):
    doc = instance(random_problem_document, seed)
    p = Problem.from_dict(doc)
    sols = {m: solve_or_infeasible(p, m) for m in ("ao", "global", "exhaustive", "equal_bandwidth", "fixed_split",
                                                   "random_split", "fl", "sl")}
    sols = {m: sol for m, sol in sols.items() if sol["status"] == "feasible"}  # fl, sl, fixed_split may not be
    best = sols["exhaustive"]["objective_s"]
    assert sols["ao"]["objective_s"] == pytest.approx(best, rel=1e-9)
    assert sols["global"]["objective_s"] == pytest.approx(best, rel=1e-9)
    assert sols["global"]["lower_bound_s"] <= best * (1 + 1e-9)
    assert ref_exhaustive(doc, ref) == pytest.approx(best, rel=1e-9)
    for method, sol in sols.items():
        assert sol["objective_s"] == pytest.approx(ref_objective(doc, ref, sol), rel=1e-12), method
        assert sol["objective_s"] >= best * (1 - 1e-9) or method in ("fl", "sl"), method
        for d in sol["per_device"]:  # the parts add up to the device's latency
            parts = d["compute_s"] + d.get("message_s", 0.0) + d["uplink_s"] + d["downlink_s"]
            assert d["latency_s"] == pytest.approx(parts, rel=1e-12)
        assert ("message_s" in sol["per_device"][0]) == ("per_message_s" in doc["overheads"])
    # overheads only add time: the optimum without them is not larger
    plain = dict(doc)
    del plain["overheads"]
    assert solve(Problem.from_dict(plain), "exhaustive")["objective_s"] <= best


@pytest.mark.parametrize("seed", range(8))
def test_optimized_sharing_takes_the_overheads(seed, random_problem_document, ref):
    """sharing optimized works on a and w: its solutions meet the formula, stay within both budgets, and the
    exact (exhaustive) optima keep dedicated <= optimized <= equal."""
    doc = instance(random_problem_document, seed, sharing="optimized")
    p = Problem.from_dict(doc)
    sols = {m: solve(p, m) for m in ("ao", "global", "exhaustive", "equal_bandwidth", "fixed_split")}
    best = sols["exhaustive"]["objective_s"]
    for method, sol in sols.items():
        assert sol["objective_s"] == pytest.approx(ref_objective(doc, ref, sol), rel=1e-9), method
        assert sum(sol["server_flops"]) <= doc["server"]["flops"] * (1 + 1e-9)
        assert sum(sol["bandwidth_hz"]) <= doc["total_bandwidth_hz"] * (1 + 1e-9)
        assert sol["objective_s"] >= best * (1 - 1e-7), method
    assert sols["global"]["lower_bound_s"] <= best * (1 + 1e-7)
    bounds = {}
    for sharing in ("equal", "dedicated"):
        other = json.loads(json.dumps(doc))
        other["server"]["sharing"] = sharing
        bounds[sharing] = solve(Problem.from_dict(other), "exhaustive")["objective_s"]
    assert bounds["dedicated"] * (1 - 1e-7) <= best <= bounds["equal"] * (1 + 1e-7)


def _strip(solution: dict) -> str:
    return json.dumps({k: v for k, v in solution.items() if k != "solve_time_s"}, sort_keys=True)


@pytest.mark.parametrize("seed", range(3))
def test_zero_overheads_are_bit_identical_to_none(seed, random_problem_document):
    rng = np.random.default_rng(seed)
    for sharing in ("equal", "optimized"):
        doc = random_problem_document(rng, 3, 4, sharing=sharing)
        zero = dict(doc, overheads=dict.fromkeys(KEYS, 0.0))
        lists = dict(doc, overheads={"device_batch_flops": [0.0] * 4, "server_batch_flops": [0] * 4})
        p, q, r = Problem.from_dict(doc), Problem.from_dict(zero), Problem.from_dict(lists)
        assert not q.has_overheads and not r.has_overheads
        for seq in (False, True):
            assert np.array_equal(p.terms(seq)[0], q.terms(seq)[0])
        assert all(np.array_equal(x, y) for x, y in zip(p.device_server_terms(), q.device_server_terms(), strict=True))
        for method in METHODS:
            assert _strip(solve(p, method)) == _strip(solve(q, method)) == _strip(solve(r, method)), (sharing, method)


@pytest.mark.parametrize("seed", range(2))
def test_a_number_and_the_same_number_at_every_cut_are_bit_identical(seed, random_problem_document):
    rng = np.random.default_rng(10 + seed)
    for sharing in ("equal", "optimized"):
        doc = random_problem_document(rng, 3, 4, sharing=sharing)
        for dev in doc["devices"]:
            dev["local_iters"] = int(rng.integers(1, 6))
        over = {"per_message_s": 0.01, "device_batch_flops": 3e8, "server_batch_flops": 2e10}
        listed = dict(over, device_batch_flops=[3e8] * 4, server_batch_flops=[2e10] * 3 + [0.0])
        p, q = Problem.from_dict(dict(doc, overheads=over)), Problem.from_dict(dict(doc, overheads=listed))
        assert isinstance(q.device_batch_flops, np.ndarray) and q.has_overheads
        for seq in (False, True):
            assert np.array_equal(p.terms(seq)[0], q.terms(seq)[0])
        for method in METHODS:
            assert _strip(solve(p, method)) == _strip(solve(q, method)), (sharing, method)


# ---- SFL-V2's clock ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_v2_one_device_equals_v1_with_the_whole_server(seed, random_problem_document):
    doc = with_overheads(random_problem_document(np.random.default_rng(seed), 1, 5, sharing="dedicated"),
                         np.random.default_rng(100 + seed), per_cut=seed % 2 == 1)
    doc["devices"][0]["local_iters"] = 1 + seed
    p = Problem.from_dict(doc)
    B = doc["total_bandwidth_hz"]
    for s in range(1, 5):
        from hetsfl.optim.solvers import build_solution

        v1 = build_solution(p, "x", [s], [B], [], 0.0)["objective_s"]
        assert float(sfl_v2.round_latency(p, [s], [B], seed)) == pytest.approx(v1, rel=1e-12)
        v2 = sfl_v2.v2_solution(p, "sfl_v2", [s], [B], seed, 1, 0.0)["per_device"][0]
        assert v2["wait_s"] == pytest.approx(0.0, abs=1e-9 * v1)
        assert v2["compute_s"] + v2.get("message_s", 0.0) + v2["uplink_s"] + v2["downlink_s"] == pytest.approx(v1)


@pytest.mark.parametrize("seed", range(3))
def test_v2_clock_and_bandwidth_program_take_the_overheads(seed, random_problem_document, monkeypatch):
    """The recursion against the event simulation of test_sfl_v2 with the overheads in its step times, and the
    convex bandwidth program's deadline against the recursion at its bandwidths."""
    import test_sfl_v2

    rng = np.random.default_rng(seed)
    n = 2 + seed
    doc = with_overheads(test_sfl_v2.instance(random_problem_document, 200 + seed, n), rng, per_cut=seed % 2 == 1)
    over = doc["overheads"]
    ell = over.get("per_message_s", 0.0)
    base = test_sfl_v2.durations

    def durations(d, splits, bandwidth):
        out = base(d, splits, bandwidth)
        for x, dev, s in zip(out, d["devices"], splits, strict=True):
            x["bwd"] += at(over.get("device_batch_flops", 0.0), s) / dev["flops"]
            x["server"] += at(over.get("server_batch_flops", 0.0), s) / d["server"]["flops"]
            x["up"], x["down"], x["model"] = x["up"] + ell, x["down"] + ell, x["model"] + 2 * ell
        return out

    monkeypatch.setattr(test_sfl_v2, "durations", durations)
    p = Problem.from_dict(doc)
    splits = rng.integers(1, 5, n)
    b = rng.dirichlet(np.ones(n)) * doc["total_bandwidth_hz"]
    seq = sfl_v2.job_sequence(p.iters, seed, 0)
    got = sfl_v2.round_latency(p, splits, b, seed, 0, detail=True)
    np.testing.assert_allclose(got["finish_s"], test_sfl_v2.simulate(doc, splits, b, seq), rtol=1e-12)
    T, b_opt, tau = sfl_v2.optimal_bandwidth(p, splits, seed)
    assert tau is not None and T == pytest.approx(tau, rel=1e-6)
    samples = rng.dirichlet(np.ones(n), 2000) * doc["total_bandwidth_hz"]
    assert T <= sfl_v2.round_latency(p, np.broadcast_to(splits, samples.shape), samples, seed).min() * (1 + 1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_v2_batch_durations_take_the_per_cut_costs_at_each_devices_cut(seed, random_problem_document):
    """batch_durations against test_sfl_v2's per-device durations plus the per-cut costs at the device's cut,
    for splits with leading batch axes."""
    import test_sfl_v2

    rng = np.random.default_rng(300 + seed)
    n, L = 2 + seed, 5
    doc = with_overheads(test_sfl_v2.instance(random_problem_document, 300 + seed, n, L), rng, per_cut=True)
    doc["overheads"].setdefault("device_batch_flops", [float(x) for x in rng.uniform(1e6, 1e9, L)])
    over = doc["overheads"]
    p = Problem.from_dict(doc)
    splits = rng.integers(1, L, (2, 3, n))  # leading batch axes
    b = rng.dirichlet(np.ones(n), (2, 3)) * doc["total_bandwidth_hz"]
    got = sfl_v2.batch_durations(p, splits, b)
    for idx in np.ndindex(2, 3):
        want = test_sfl_v2.durations(doc, splits[idx], b[idx])
        for i, (x, dev, s) in enumerate(zip(want, doc["devices"], splits[idx], strict=True)):
            bwd = x["bwd"] + at(over.get("device_batch_flops", 0.0), s) / dev["flops"]
            server = x["server"] + at(over.get("server_batch_flops", 0.0), s) / doc["server"]["flops"]
            assert got["bwd"][(*idx, i)] == pytest.approx(bwd, rel=1e-12)
            assert got["server"][(*idx, i)] == pytest.approx(server, rel=1e-12)
            assert got["fwd"][(*idx, i)] == pytest.approx(x["fwd"], rel=1e-12)


# ---- documents, config and stages ---------------------------------------------------------------------------
@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("value", [-1.0, float("nan")])
def test_problem_document_rejects_bad_values(key, value, random_problem_document):
    doc = random_problem_document(np.random.default_rng(0), 2, 3, overheads={key: value})
    with pytest.raises(ConfigError, match=f"overheads.{key}"):
        Problem.from_dict(doc)


@pytest.mark.parametrize("key", ["device_batch_flops", "server_batch_flops"])
def test_problem_document_checks_per_cut_lists(key, random_problem_document):
    doc = random_problem_document(np.random.default_rng(0), 2, 3, overheads={key: [1.0, 2.0, 0.0]})
    assert Problem.from_dict(doc).has_overheads
    for bad in ([1.0, 2.0], [1.0, 2.0, 0.0, 0.0]):
        doc["overheads"] = {key: bad}
        with pytest.raises(ConfigError, match=f"overheads.{key} is a list of {len(bad)} values.*L=3 layers"):
            Problem.from_dict(doc)
    doc["overheads"] = {key: [1.0, -2.0, 0.0]}
    with pytest.raises(ConfigError, match=rf"overheads\.{key}\.1: -2.0 is less than the minimum of 0"):
        Problem.from_dict(doc)
    for bad in ([1.0, float("nan"), 0.0], [1.0, "x", 0.0], []):
        doc["overheads"] = {key: bad}
        with pytest.raises(ConfigError, match=f"overheads.{key}"):
            Problem.from_dict(doc)
    doc["overheads"] = {key: [1.0, 2.0, 3.0]}
    if key == "server_batch_flops":  # s = L is FL's: no server step
        with pytest.raises(ConfigError, match="server_batch_flops: the last entry .* must be 0"):
            Problem.from_dict(doc)
    else:
        Problem.from_dict(doc)


def test_problem_document_rejects_unknown_keys(random_problem_document):
    doc = random_problem_document(np.random.default_rng(0), 2, 3, overheads={"per_batch_s": 1.0})
    with pytest.raises(ConfigError, match="per_batch_s"):
        Problem.from_dict(doc)


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("value", [-0.5, float("nan"), float("inf"), "1 ms"])
def test_config_rejects_bad_values_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=f"optimize.overheads.{key}"):
        validate_config({"optimize": {"overheads": {key: value}}})


def test_config_rejects_unknown_keys_and_defaults_to_none():
    with pytest.raises(ConfigError, match="per_batch_s"):
        validate_config({"optimize": {"overheads": {"per_batch_s": 1.0}}})
    cfg = validate_config({})
    assert "overheads" not in cfg["optimize"] and "overheads" not in problem_settings(cfg)
    cfg = validate_config({"optimize": {"overheads": {"per_message_s": 0.002}}})
    assert problem_settings(cfg)["overheads"] == {"per_message_s": 0.002}


@pytest.fixture(scope="module")
def stage_inputs(tmp_path_factory):
    """A scenario of the default config and a small hand-written profile (4 units)."""
    from _data import write_problem_inputs

    return write_problem_inputs(tmp_path_factory.mktemp("overheads"), {"profile.json": {"model": "toy"}})


def test_problem_stage_writes_the_block(stage_inputs, tmp_path):
    d = stage_inputs
    args = {"scenario_path": d / "scenario.json", "profile_path": d / "profile.json"}
    stage_problem(**args, out=tmp_path / "plain.json")
    assert "overheads" not in json.loads((tmp_path / "plain.json").read_text())
    cfg = validate_config({"optimize": {"overheads": {"per_message_s": 0.003, "server_batch_flops": 2e9}}})
    doc = stage_problem(**args, out=tmp_path / "over.json", **problem_settings(cfg))
    expected = {"per_message_s": 0.003, "device_batch_flops": 0.0, "server_batch_flops": 2e9}
    assert doc["overheads"] == expected == json.loads((tmp_path / "over.json").read_text())["overheads"]
    p = Problem.read(tmp_path / "over.json")
    assert (p.per_message_s, p.device_batch_flops, p.server_batch_flops) == (0.003, 0.0, 2e9)
    # all else is the plain problem
    plain = json.loads((tmp_path / "plain.json").read_text())
    assert {k: v for k, v in doc.items() if k != "overheads"} == plain
    for bad in ({"per_message_s": -1.0}, {"latency": 1.0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            stage_problem(**args, out=tmp_path / "bad.json", overheads=bad)
    # per-cut lists from the config: one value per cut of the 4-unit model, checked at this stage
    cfg = validate_config({"optimize": {"overheads": {"device_batch_flops": [1e6, 2e6, 3e6, 4e6]}}})
    doc = stage_problem(**args, out=tmp_path / "list.json", **problem_settings(cfg))
    assert json.loads((tmp_path / "list.json").read_text())["overheads"]["device_batch_flops"] == [1e6, 2e6, 3e6, 4e6]
    np.testing.assert_array_equal(Problem.read(tmp_path / "list.json").device_batch_flops, [1e6, 2e6, 3e6, 4e6])
    with pytest.raises(ConfigError, match="overheads.server_batch_flops is a list of 3 values.*L=4"):
        stage_problem(**args, out=tmp_path / "bad.json", overheads={"server_batch_flops": [1.0, 2.0, 0.0]})
    assert not (tmp_path / "bad.json").exists()


def test_cli_problem_takes_the_overheads(stage_inputs, tmp_path):
    from hetsfl.cli import main

    d = stage_inputs
    out = tmp_path / "p.json"
    assert main(["problem", "--scenario", str(d / "scenario.json"), "--profile", str(d / "profile.json"),
                 "--out", str(out), "--per-message-s", "0.004"]) == 0
    assert json.loads(out.read_text())["overheads"]["per_message_s"] == 0.004


@pytest.mark.parametrize("method", ["ao", "fl", "sl"])
def test_emulate_prediction_includes_the_overheads(method, random_problem_document, ref):
    doc = random_problem_document(np.random.default_rng(7), 3, 4,
                                  overheads={"per_message_s": 0.01, "device_batch_flops": 5e8, "server_batch_flops": 4e10})
    p = Problem.from_dict(doc)
    sol = solve(p, method)
    alpha = 3.0
    pred = predicted_terms(p, sol, alpha)
    K = p.iters
    fl = method == "fl"
    share = doc["server"]["flops"] if method == "sl" else doc["server"]["flops"] / 3
    np.testing.assert_allclose(pred["overhead_s"], alpha * (2.0 if fl else 2 * K + 2) * 0.01, rtol=1e-12)
    _, w, _, _ = ref_terms(doc, method == "sl")
    a_plain = ref_terms(dict(doc, overheads={}), method == "sl")[0]
    cols = np.asarray(sol["splits"]) - 1
    rows = np.arange(3)
    np.testing.assert_allclose(pred["device_compute_s"], alpha * (a_plain[rows, cols] + K * 5e8 / p.dev_flops), rtol=1e-12)
    np.testing.assert_allclose(pred["server_compute_s"], alpha * w[rows, cols] / share, rtol=1e-12)
    if fl:
        assert (pred["server_compute_s"] == 0).all()
    np.testing.assert_allclose(pred["compute_s"] + pred["overhead_s"] + pred["uplink_s"] + pred["downlink_s"],
                               pred["latency_s"], rtol=1e-12)
    assert pred.attrs["objective_s"] == pytest.approx(alpha * ref_objective(doc, ref, sol), rel=1e-12)
    n = len(pred)
    devices = {"round": 1, "device": range(n), "method": "sfl", "compute_s": 1.0, "device_compute_s": 0.6,
               "server_compute_s": 0.4, "up_s": 2.0, "down_s": 3.0, "round_s": 6.5, "up_bytes": 10.0,
               "down_bytes": 20.0, "wait_s": 0.1, "other_s": 0.5, "up_msgs": 2, "down_msgs": 2, "up_latency_s": 0.01,
               "down_latency_s": 0.02}
    import pandas as pd

    rounds = pd.DataFrame({"round": [1], "method": ["sfl"], "train_s": [7.0], "wall_s": [7.5], "up_bytes": [40.0],
                           "down_bytes": [80.0]})
    rows_df = emulation_rows(method, pred, pd.DataFrame(devices), rounds, alpha=alpha, emulated=False, paces=None)
    assert list(rows_df.columns) == TABLE_COLUMNS
    np.testing.assert_allclose(rows_df[rows_df["row"] == "device"]["predicted_overhead_s"], pred["overhead_s"])
