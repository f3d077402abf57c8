"""Split-point and bandwidth optimisation (system model section 5) and the baselines of section 4.

References are independent of hetsfl: cuts allowed per device, A and U by a per-device loop, and the
bandwidth step by plain nested bisection (conftest.py), with exhaustive enumeration by itertools.product.
"""

from __future__ import annotations

import copy
import itertools
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hetsfl.errors import ConfigError, InfeasibleError
from hetsfl.optim.problem import Problem, validate_document
from hetsfl.optim.solvers import METHODS, solve

PARALLEL_BASELINES = ("equal_bandwidth", "fixed_split", "random_split")
KINDS = ("plain", "memory", "min_split", "candidates", "mixed", "dedicated")


def instance(make_doc, seed: int) -> dict:
    """Instance ``seed`` of the suite: N <= 5 devices, L in 3..7 (at most 6 candidate cuts), and a kind
    cycling through plain, memory limits, privacy floor, explicit candidate lists, all three, and a
    dedicated server."""
    rng = np.random.default_rng(seed)
    kind = KINDS[seed % len(KINDS)]
    n, L = 1 + seed % 5, 3 + (seed // 2) % 5
    kw: dict = {}
    if kind in ("memory", "mixed"):
        kw["memory"] = True
    if kind in ("min_split", "mixed"):
        kw["min_split"] = 2 + seed % (L - 2) if L > 3 else 2
    if kind in ("candidates", "mixed"):
        kw["candidates"] = "random"
    if kind == "dedicated":
        kw["sharing"] = "dedicated"
    return make_doc(rng, n, L, **kw)


def check_solution(sol: dict, doc: dict, method: str, allowed=None) -> None:
    """Schema, JSON, and internal consistency of a solution dictionary."""
    text = json.dumps(sol, allow_nan=False)  # no inf / NaN may leak into the file
    validate_document(json.loads(text), "solution", source=f"{method} solution")
    assert sol["method"] == method
    n = len(doc["devices"])
    assert len(sol["splits"]) == len(sol["bandwidth_hz"]) == len(sol["per_device"]) == n
    assert [d["id"] for d in sol["per_device"]] == [d["id"] for d in doc["devices"]]
    lat = [d["latency_s"] for d in sol["per_device"]]
    for d in sol["per_device"]:
        assert d["latency_s"] == pytest.approx(d["compute_s"] + d["uplink_s"] + d["downlink_s"], rel=1e-12)
    B = doc["total_bandwidth_hz"]
    if method == "sl":
        assert sol["objective_s"] == pytest.approx(sum(lat), rel=1e-12)
        assert sol["bandwidth_hz"] == pytest.approx([B] * n)
    else:
        assert sol["objective_s"] == pytest.approx(max(lat), rel=1e-12)
        assert sum(sol["bandwidth_hz"]) <= B * (1 + 1e-12)
    if allowed is not None:
        assert all(s in ok for s, ok in zip(sol["splits"], allowed, strict=True))


def ref_objective(doc: dict, ref, splits) -> float:
    """Round latency of fixed splits with the optimal bandwidth, by the reference nested bisection."""
    A, U = ref.terms(doc)
    xu, xd = ref.x(doc)
    rows = np.arange(len(doc["devices"]))
    cols = np.asarray(splits) - 1
    return float(ref.bandwidth_step(A[rows, cols], U[rows, cols], xu, xd, doc["total_bandwidth_hz"]))


# ---------------------------------------------------------------------------------------------- the suite
@pytest.mark.parametrize("seed", range(60))
def test_methods_agree_on_random_instance(seed, random_problem_document, ref):
    doc = instance(random_problem_document, seed)
    allowed = ref.allowed(doc)
    assert all(allowed), "the generator keeps at least one cut per device"
    p = Problem.from_dict(doc)
    sols = {}
    for method in ("exhaustive", "ao", "global", "equal_bandwidth", "random_split", "fixed_split", "sl", "fl"):
        try:
            sols[method] = solve(p, method)
        except InfeasibleError:
            # a common split may not exist (fixed_split, sl); FL may not fit in memory
            common = set.intersection(*map(set, allowed))
            assert (method in ("fixed_split", "sl") and not common) or (method == "fl" and "memory_bytes" in
                                                                          doc["devices"][0])
            continue
        check_solution(sols[method], doc, method, None if method == "fl" else allowed)
    best = sols["exhaustive"]["objective_s"]
    assert sols["exhaustive"]["combinations"] == math.prod(map(len, allowed))
    assert sols["ao"]["objective_s"] == pytest.approx(best, rel=1e-6)
    assert sols["global"]["objective_s"] == pytest.approx(best, rel=1e-6)
    # the exhaustive optimum's splits, re-solved by the reference bandwidth step
    assert ref_objective(doc, ref, sols["exhaustive"]["splits"]) == pytest.approx(best, rel=1e-9)
    # certificate of the global method
    g = sols["global"]["objective_s"]
    lower = sols["global"]["lower_bound_s"]
    assert lower <= g and lower >= g * (1 - 1e-6)
    # global is at most every parallel baseline: they optimise over a subset of (splits, bandwidths)
    for method in PARALLEL_BASELINES:
        if method in sols:
            assert g <= sols[method]["objective_s"] * (1 + 1e-9), method
    # ... and at most sl when K D is the same for every device (proof in test_global_vs_sl_needs_equal_kd)
    if "sl" in sols:
        assert g <= sols["sl"]["objective_s"] * (1 + 1e-9)
    # AO trace: tau non-increasing, last entry = the objective
    taus = [it["tau_s"] for it in sols["ao"]["iterations"]]
    assert len(taus) >= 2
    assert all(b <= a * (1 + 1e-12) for a, b in itertools.pairwise(taus)), taus
    assert taus[-1] == pytest.approx(sols["ao"]["objective_s"], rel=1e-9)
    assert sols["ao"]["iterations"][-1]["changed"] == 0


@pytest.mark.parametrize("seed", [0, 3, 7, 10, 14, 17, 22, 28])
def test_exhaustive_matches_independent_enumeration(seed, random_problem_document, ref):
    """solvers' exhaustive (and global) against itertools.product + nested bisection written here."""
    kind = ("plain", "memory", "min_split", "candidates")[seed % 4]
    rng = np.random.default_rng(500 + seed)
    kw = {"memory": kind == "memory", "min_split": 2 if kind == "min_split" else 1,
          "candidates": "random" if kind == "candidates" else None}
    doc = random_problem_document(rng, 1 + seed % 3, 3 + seed % 3, **kw)
    tau_ref, splits_ref = ref.exhaustive(doc)
    p = Problem.from_dict(doc)
    sol = solve(p, "exhaustive")
    assert sol["objective_s"] == pytest.approx(tau_ref, rel=1e-6)
    assert solve(p, "global")["objective_s"] == pytest.approx(tau_ref, rel=1e-6)
    # the splits may differ only on exact ties; the reference must rate solvers' splits equally well
    assert ref_objective(doc, ref, sol["splits"]) == pytest.approx(tau_ref, rel=1e-6)


def test_reference_enumeration_can_tell_splits_apart(random_problem_document, ref):
    """Guard on the reference itself: on a plain instance the best split beats the worst clearly."""
    doc = random_problem_document(np.random.default_rng(3), 2, 4)
    taus = [ref_objective(doc, ref, s) for s in itertools.product(range(1, 4), repeat=2)]
    assert max(taus) > 1.01 * min(taus)
    assert min(taus) == pytest.approx(ref.exhaustive(doc)[0], rel=1e-12)


# ---------------------------------------------------------------------------------------------- baselines
@pytest.mark.parametrize("seed", range(6))
def test_baselines_against_reference(seed, random_problem_document, ref):
    rng = np.random.default_rng(900 + seed)
    doc = random_problem_document(rng, 2 + seed % 4, 4 + seed % 3, sharing=("equal", "dedicated")[seed % 2])
    p = Problem.from_dict(doc)
    A, U = ref.terms(doc)
    xu, xd = ref.x(doc)
    n, L, B = len(doc["devices"]), len(doc["layers"]), doc["total_bandwidth_hz"]
    cuts = np.arange(1, L)
    # equal bandwidth: each device its best cut at B / N
    T_eq = A[:, :-1] + U[:, :-1] * ref.phi(B / n, xu, xd)[:, None]
    eq = solve(p, "equal_bandwidth")
    assert eq["splits"] == (cuts[np.argmin(T_eq, axis=1)]).tolist()
    assert eq["objective_s"] == pytest.approx(T_eq.min(axis=1).max(), rel=1e-12)
    assert eq["bandwidth_hz"] == pytest.approx([B / n] * n, rel=1e-14)
    # fixed split: best common cut with optimal bandwidth
    per_cut = [ref_objective(doc, ref, [s] * n) for s in cuts]
    fx = solve(p, "fixed_split")
    assert fx["objective_s"] == pytest.approx(min(per_cut), rel=1e-9)
    assert set(fx["splits"]) == {int(cuts[np.argmin(per_cut)])}
    # FL: the whole model on every device, optimal bandwidth
    fl = solve(p, "fl")
    assert fl["splits"] == [L] * n
    assert fl["objective_s"] == pytest.approx(ref_objective(doc, ref, [L] * n), rel=1e-9)
    # SL: devices one after another with the whole band and the whole server
    As, Us = ref.terms(doc, sequential=True)
    T_sl = (As[:, :-1] + Us[:, :-1] * ref.phi(B, xu, xd)[:, None]).sum(axis=0)
    sl = solve(p, "sl")
    assert sl["objective_s"] == pytest.approx(T_sl.min(), rel=1e-12)
    assert sl["sequential"] is True and set(sl["splits"]) == {int(cuts[np.argmin(T_sl)])}
    # random split: seeded, reproducible, any allowed cut, optimal bandwidth for those cuts
    r1, r2 = solve(p, "random_split", seed=5), solve(p, "random_split", seed=5)
    assert r1["splits"] == r2["splits"] and r1["seed"] == 5
    assert r1["objective_s"] == pytest.approx(ref_objective(doc, ref, r1["splits"]), rel=1e-9)
    draws = {tuple(solve(p, "random_split", seed=s)["splits"]) for s in range(8)}
    assert len(draws) > 1


def test_ao_cvxpy_matches_ao(random_problem):
    p = random_problem(np.random.default_rng(11), 4, 5)
    a, c = solve(p, "ao"), solve(p, "ao_cvxpy")
    assert c["method"] == "ao_cvxpy"
    validate_document(c, "solution")
    assert c["objective_s"] == pytest.approx(a["objective_s"], rel=1e-6)
    assert c["splits"] == a["splits"]


def test_fl_is_outside_the_split_candidates(random_problem_document):
    """Why `global <= fl` is not asserted: s = L (FL) is not a candidate of the optimisation (C_n is within
    1..L-1), and FL wins when the smashed data per round outweighs the whole model."""
    doc = random_problem_document(np.random.default_rng(0), 3, 2)
    doc["layers"][0].update(out_bits=1e6, param_bits=1e3, fwd_flops=1e3, bwd_flops=1e3)
    doc["layers"][1].update(out_bits=1e2, param_bits=1e3, fwd_flops=1e3, bwd_flops=1e3)
    p = Problem.from_dict(doc)
    assert solve(p, "fl")["objective_s"] < 0.01 * solve(p, "global")["objective_s"]


def test_global_vs_sl_needs_equal_kd(random_problem_document):
    """Why `global <= sl` is asserted only when K_n D_n is the same for every device.

    With equal K D and a common cut s: give device n the band fraction theta_n = c_n / sum_m c_m, c_m its
    SL transfer time; concavity of r with r(0) = 0 gives r(theta B) >= theta r(B), so its transfer time is
    at most sum_m c_m. Its own computing is at most the sum of all devices' computing, and its share c_S/N
    of the server takes N times one device's server time, which is the SL total. So T_n <= the SL round.
    With unequal K D under `equal` sharing the server term breaks this: here SL is about twice as fast.
    """
    doc = random_problem_document(np.random.default_rng(1), 2, 2)
    doc["layers"][0].update(out_bits=1e3, param_bits=1e3, fwd_flops=1e3, bwd_flops=1e3)
    doc["layers"][1].update(out_bits=1e3, param_bits=1e3, fwd_flops=5e9, bwd_flops=5e9)
    doc["devices"][0]["batch_size"] = 1000
    doc["devices"][1]["batch_size"] = 1
    p = Problem.from_dict(doc)
    g, s = solve(p, "global")["objective_s"], solve(p, "sl")["objective_s"]
    assert s < 0.6 * g
    doc["server"]["sharing"] = "dedicated"
    p = Problem.from_dict(doc)
    assert solve(p, "global")["objective_s"] <= solve(p, "sl")["objective_s"]


# ---------------------------------------------------------------------------------------------- properties
def _doc(make_doc, seed, n, L):
    return make_doc(np.random.default_rng(seed), n, L)


def _global(doc) -> float:
    return solve(Problem.from_dict(doc), "global")["objective_s"]


PROPS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@PROPS
@given(seed=st.integers(0, 10**6), n=st.integers(1, 8), L=st.integers(2, 8), factor=st.floats(1.0, 100.0))
def test_optimum_not_increasing_in_bandwidth(random_problem_document, seed, n, L, factor):
    doc = _doc(random_problem_document, seed, n, L)
    base = _global(doc)
    doc["total_bandwidth_hz"] *= factor
    assert _global(doc) <= base * (1 + 1e-9)


@PROPS
@given(seed=st.integers(0, 10**6), n=st.integers(1, 8), L=st.integers(2, 8), new_seed=st.integers(0, 10**6))
def test_optimum_not_decreasing_when_a_device_joins(random_problem_document, ref, seed, n, L, new_seed):
    doc = _doc(random_problem_document, seed, n, L)
    base = _global(doc)
    doc["devices"].append(ref.device(np.random.default_rng(new_seed), "newcomer"))
    assert _global(doc) >= base * (1 - 1e-9)


@PROPS
@given(seed=st.integers(0, 10**6), n=st.integers(1, 8), L=st.integers(2, 8), which=st.integers(0, 7),
       factor=st.floats(1.0, 100.0))
def test_optimum_not_increasing_in_device_compute(random_problem_document, seed, n, L, which, factor):
    doc = _doc(random_problem_document, seed, n, L)
    base = _global(doc)
    doc["devices"][which % n]["flops"] *= factor
    assert _global(doc) <= base * (1 + 1e-9)


# ---------------------------------------------------------------------------------------------- infeasible
def _named_doc(make_doc, seed=0, n=3, L=4, **kw):
    doc = make_doc(np.random.default_rng(seed), n, L, **kw)
    for i, d in enumerate(doc["devices"]):
        d["id"] = f"dev-{chr(ord('a') + i)}"
    return doc


@pytest.mark.parametrize("method", ["ao", "global", "exhaustive", "equal_bandwidth", "random_split"])
def test_infeasible_memory_names_device(random_problem_document, method):
    doc = _named_doc(random_problem_document)
    doc["devices"][1]["memory_bytes"] = 10.0  # smaller than any client-side model
    with pytest.raises(InfeasibleError, match="dev-b") as exc:
        solve(Problem.from_dict(doc), method)
    assert "memory" in str(exc.value) and "dev-a" not in str(exc.value)


def test_infeasible_fl_memory_names_device(random_problem_document):
    doc = _named_doc(random_problem_document)
    doc["devices"][2]["memory_bytes"] = 10.0
    with pytest.raises(InfeasibleError, match="dev-c"):
        solve(Problem.from_dict(doc), "fl")


def test_infeasible_privacy_floor_names_device(random_problem_document):
    doc = _named_doc(random_problem_document, L=5, min_split=3)
    doc["devices"][0]["split_candidates"] = [1, 2]
    with pytest.raises(InfeasibleError, match="dev-a") as exc:
        solve(Problem.from_dict(doc), "global")
    assert "min_split" in str(exc.value) and "dev-b" not in str(exc.value)
    # min_split above every cut of the model: every device is named
    doc = _named_doc(random_problem_document, L=4, min_split=4)
    with pytest.raises(InfeasibleError) as exc:
        solve(Problem.from_dict(doc), "ao")
    assert all(f"dev-{c}" in str(exc.value) for c in "abc")


def test_infeasible_messages_list_plain_integers(random_problem_document):
    doc = _named_doc(random_problem_document, L=5, min_split=3)
    doc["devices"][0]["split_candidates"] = [1, 2]
    with pytest.raises(InfeasibleError) as exc:
        solve(Problem.from_dict(doc), "global")
    assert "np.int64" not in str(exc.value) and "[1, 2]" in str(exc.value)
    doc = _named_doc(random_problem_document, n=2, L=4)
    doc["devices"][0]["split_candidates"], doc["devices"][1]["split_candidates"] = [1], [2]
    with pytest.raises(InfeasibleError) as exc:
        solve(Problem.from_dict(doc), "fixed_split")
    assert "np.int64" not in str(exc.value)


@pytest.mark.parametrize("method", ["fixed_split", "sl"])
def test_infeasible_common_split(random_problem_document, method):
    doc = _named_doc(random_problem_document, n=3, L=5)
    doc["devices"][0]["split_candidates"] = [1, 2]
    doc["devices"][1]["split_candidates"] = [3, 4]
    with pytest.raises(InfeasibleError, match="common split") as exc:
        solve(Problem.from_dict(doc), method)
    assert "dev-a" in str(exc.value) and "dev-b" in str(exc.value)
    # the per-device methods still work
    assert solve(Problem.from_dict(doc), "global")["objective_s"] > 0


def test_infeasible_deadline_names_hopeless_device(random_problem_document):
    doc = _named_doc(random_problem_document, n=4, L=4)
    free = _global(doc)
    doc["devices"][2]["flops"] = 1e6  # a thousand times slower than the slowest default device
    doc["deadline_s"] = 2 * free
    p = Problem.from_dict(doc)
    with pytest.raises(InfeasibleError, match="deadline") as exc:
        solve(p, "global")
    msg = str(exc.value)
    assert "dev-c" in msg and "even with the whole band" in msg
    assert "dev-a" not in msg and "dev-b" not in msg and "dev-d" not in msg


def test_infeasible_deadline_all_together(random_problem_document):
    """Every device alone meets the deadline with the whole band, but not all at once."""
    doc = _named_doc(random_problem_document, n=4, L=4)
    free = _global(doc)
    doc["deadline_s"] = free * (1 - 1e-3)
    with pytest.raises(InfeasibleError, match="cannot all finish") as exc:
        solve(Problem.from_dict(doc), "global")
    assert all(f"dev-{c}" in str(exc.value) for c in "abcd")  # the slowest devices are listed
    doc["deadline_s"] = free * (1 + 1e-6)
    sol = solve(Problem.from_dict(doc), "global")
    assert sol["objective_s"] <= doc["deadline_s"]


def test_infeasible_deadline_respects_allowed_cuts(random_problem_document, ref):
    doc = _named_doc(random_problem_document, n=3, L=3)
    doc["layers"][0].update(out_bits=1e7)  # cut 1: 3.2e9 bits of smashed data per round
    doc["layers"][1].update(out_bits=1e3)  # cut 2: cheap
    doc["devices"][0]["split_candidates"] = [1]
    A, U = ref.terms(doc)
    xu, xd = ref.x(doc)
    alone = A + U * ref.phi(doc["total_bandwidth_hz"], xu, xd)[:, None]  # each device with the whole band
    assert alone[0, 0] > 3 * alone[0, 1]
    doc["deadline_s"] = float(0.5 * (alone[0, 0] + max(alone[0, 1], alone[1:, :2].min(axis=1).max())))
    with pytest.raises(InfeasibleError) as exc:
        solve(Problem.from_dict(doc), "global")
    msg = str(exc.value)  # today: "the devices cannot all finish ..., the slowest under global are ..."
    assert "even with the whole band" in msg
    assert "dev-a" in msg.split("even with the whole band")[0]


# ---------------------------------------------------------------------------------------------- config errors
def test_exhaustive_over_limit(random_problem):
    p = random_problem(np.random.default_rng(0), 5, 7)  # 6^5 = 7776 combinations
    with pytest.raises(ConfigError, match=r"7,776 split combinations.*limit 1,000") as exc:
        solve(p, "exhaustive", exhaustive_limit=1000)
    assert "global" in str(exc.value)
    assert solve(p, "exhaustive", exhaustive_limit=7776)["combinations"] == 7776


def test_unknown_method(random_problem):
    p = random_problem(np.random.default_rng(0), 2, 3)
    with pytest.raises(ConfigError, match="unknown method 'magic'") as exc:
        solve(p, "magic")
    assert all(m in str(exc.value) for m in METHODS)


def test_solve_does_not_mutate_problem(random_problem_document):
    doc = random_problem_document(np.random.default_rng(4), 3, 5, memory=True)
    before = copy.deepcopy(doc)
    p = Problem.from_dict(doc)
    first = solve(p, "global")
    for m in ("ao", "sl", "fl", "exhaustive"):
        try:
            solve(p, m)
        except InfeasibleError:
            pass
    assert doc == before
    assert solve(p, "global")["splits"] == first["splits"]


def test_suite_covers_the_constraints(random_problem_document, ref):
    """The 60-instance suite really exercises memory limits, the privacy floor and candidate lists."""
    removed_by_memory = floors = listed = dedicated = 0
    for seed in range(60):
        doc = instance(random_problem_document, seed)
        L = len(doc["layers"])
        no_mem = copy.deepcopy(doc)
        for d in no_mem["devices"]:
            d.pop("memory_bytes", None)
        removed_by_memory += ref.allowed(no_mem) != ref.allowed(doc)
        floors += doc["min_split"] > 1
        listed += any("split_candidates" in d and len(d["split_candidates"]) < L - 1 for d in doc["devices"])
        dedicated += doc["server"]["sharing"] == "dedicated"
    assert removed_by_memory >= 10 and floors >= 10 and listed >= 10 and dedicated >= 10


# ---- infeasible methods are results (solve_or_infeasible) --------------------------------------------
def test_solve_or_infeasible_returns_an_infeasible_solution(random_problem_document):
    from hetsfl.optim.solvers import is_feasible, require_feasible, solve_or_infeasible
    from hetsfl.optim.tables import solution_row, solutions_table

    doc = _named_doc(random_problem_document)
    doc["devices"][2]["memory_bytes"] = 10.0
    problem = Problem.from_dict(doc)
    for method in ("fl", "ao", "sl"):
        sol = solve_or_infeasible(problem, method)
        validate_document(json.loads(json.dumps(sol)), "solution", method)
        assert sol["status"] == "infeasible" and not is_feasible(sol)
        assert sol["objective_s"] is None and sol["per_device"] == [] and sol["splits"] == []
        assert sol["infeasible_devices"] == ["dev-c"] and "dev-c" in sol["reason"]
        with pytest.raises(InfeasibleError, match="dev-c") as exc:
            require_feasible(sol, "x.json")
        assert exc.value.devices == ["dev-c"] and "x.json" in str(exc.value)
    rows = [solution_row(solve_or_infeasible(problem, m), "s") for m in ("fl", "global")]
    doc["devices"][2].pop("memory_bytes")
    rows.append(solution_row(solve_or_infeasible(Problem.from_dict(doc), "global"), "t"))
    table = solutions_table(rows)
    assert table["status"].tolist() == ["infeasible", "infeasible", "feasible"]
    assert table["objective_s"].isna().tolist() == [True, True, False]
    assert "dev-c" in table["reason"].iloc[0] and table["reason"].iloc[2] == ""


def test_solve_or_infeasible_is_solve_when_feasible(random_problem_document):
    from hetsfl.optim.solvers import require_feasible, solve_or_infeasible

    problem = Problem.from_dict(_named_doc(random_problem_document))
    for method in ("ao", "fl", "sl", "fixed_split"):
        a, b = solve(problem, method), solve_or_infeasible(problem, method)
        a.pop("solve_time_s"), b.pop("solve_time_s")
        assert a == b and b["status"] == "feasible"
        assert require_feasible(b) is b


def test_solve_or_infeasible_deadline_and_common_split(random_problem_document):
    from hetsfl.optim.solvers import solve_or_infeasible

    doc = _named_doc(random_problem_document, n=3, L=5)
    doc["devices"][0]["split_candidates"] = [1, 2]
    doc["devices"][1]["split_candidates"] = [3, 4]
    sol = solve_or_infeasible(Problem.from_dict(doc), "fixed_split")
    assert sol["status"] == "infeasible" and "common split" in sol["reason"]
    doc = _named_doc(random_problem_document, n=3, L=4)
    doc["deadline_s"] = 1e-6
    sol = solve_or_infeasible(Problem.from_dict(doc), "ao")
    assert sol["status"] == "infeasible" and "deadline" in sol["reason"]
    assert set(sol["infeasible_devices"]) == {"dev-a", "dev-b", "dev-c"}


def test_other_errors_still_raise(random_problem):
    from hetsfl.optim.solvers import solve_or_infeasible

    with pytest.raises(ConfigError, match="unknown method"):
        solve_or_infeasible(random_problem(np.random.default_rng(0), 2, 3), "simplex")


def test_old_solution_files_without_status_are_feasible():
    from hetsfl.optim.solvers import is_feasible

    assert is_feasible({"method": "ao", "objective_s": 1.0})


def test_non_finite_result_is_a_clear_error_naming_the_device(random_problem_document):
    from hetsfl.optim.solvers import build_solution

    problem = Problem.from_dict(_named_doc(random_problem_document))
    b = np.full(problem.num_devices, problem.total_bandwidth / problem.num_devices)
    b[1] = np.nan
    with pytest.raises(ConfigError, match="dev-b"):
        build_solution(problem, "ao", np.ones(problem.num_devices, dtype=int), b, [], 0.0)
