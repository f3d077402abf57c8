"""SFL-V2's optimisation under its own clock (issue 10, docs/model.md "SFL-V2 round"): the exact bandwidth for
fixed cuts, the best common cut, a local search and exhaustive search over individual cuts, and the solution
document for the training stage.

The round latency (optim/sfl_v2_clock.py, whose names this module re-exports) is, for fixed cuts and device
order, a max of sums of durations, each constant or convex decreasing in b_n: convex in b.
``optimal_bandwidth`` minimises it exactly as a convex program (epigraph with one start time per job).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from hetsfl.errors import ConfigError, InfeasibleError
from hetsfl.optim.problem import Problem
from hetsfl.optim.sfl_v2_clock import (
    batch_durations,
    device_order,
    job_sequence,
    round_latencies,
    round_latency,
)
from hetsfl.optim.split_search import exhaustive_search
from hetsfl.system.channel import LN2

if TYPE_CHECKING:
    import cvxpy as cp

__all__ = [
    "batch_durations",
    "best_common_split",
    "device_order",
    "exhaustive_splits",
    "job_sequence",
    "local_search_splits",
    "optimal_bandwidth",
    "round_latencies",
    "round_latency",
    "solve_sfl_v2",
    "V2_METHODS",
    "v2_solution",
]

log = logging.getLogger("hetsfl.optim.sfl_v2")


# ---- optimisation -----------------------------------------------------------------------------------------
def optimal_bandwidth(
    problem: Problem, splits: ArrayLike, seed: int, round_idx: int = 0, solver: str = "CLARABEL"
) -> tuple[float, np.ndarray, float | None]:
    """Exact minimum over b (sum b <= B) of the round latency for fixed cuts and order, as a convex program:
    min tau s.t. t_j >= (device ready) + p + up(b), t_j >= t_prev + sigma_prev (server sequence), tau >= finish,
    with z_u,n >= B / (ln2 r_u,n(b_n)) and z_d,n likewise (seconds per bit scaled by B / ln 2, near one; convex,
    and every constraint is increasing in z, so they are tight at the optimum). Returns (latency at the returned
    b, b, the solver's tau). If Clarabel fails (seen on badly scaled fading rounds: a device in a deep fade beside
    one above 60 dB), the best of equal bandwidth, the SFL-V1 optimum for these cuts and an SCS solution is
    returned with tau = None."""
    import cvxpy as cp

    from hetsfl.optim.bandwidth_cvx import HIGH_SNR, SOLVER_OPTIONS, _scaled_rate

    p = problem
    n, B = p.num_devices, p.total_bandwidth
    s = np.asarray(splits, dtype=int)
    d = batch_durations(p, s, np.ones(n))  # the bandwidth-free parts; transfers are rebuilt from z below
    out = np.concatenate([[0.0], p.out_bits])
    params = np.concatenate([[0.0], np.cumsum(p.param_bits)])
    smashed = p.batch * out[s] * (LN2 / B)  # bits times ln2 / B: seconds per unit of z
    model = params[s] * (LN2 / B)
    frac = cp.Variable(n, nonneg=True)
    zu, zd = cp.Variable(n), cp.Variable(n)
    cons = [cp.sum(frac) <= 1]
    qu, qd = p.xu / B, p.xd / B
    for q, z in ((qu, zu), (qd, zd)):  # each device with the rate formulation that suits its SNR
        for high in (False, True):
            i = np.flatnonzero((q >= HIGH_SNR) == high)
            if i.size:
                cons.append(cp.inv_pos(_scaled_rate(frac[i], q[i])) <= z[i])
    seq = np.array(job_sequence(p.iters, seed, round_idx))
    m = len(seq)
    t = cp.Variable(m)
    tau = cp.Variable()
    prev = np.full(m, -1)
    last: dict[int, int] = {}
    for j, dev in enumerate(seq):
        prev[j] = last.get(int(dev), -1)
        last[int(dev)] = j
    first, later = np.flatnonzero(prev < 0), np.flatnonzero(prev >= 0)
    df, dl = seq[first], seq[later]
    msg = p.per_message_s  # the fixed latency of each message (up, down, model up, aggregate down)
    cons.append(d["fwd"][df] + msg + cp.multiply(smashed[df], zu[df]) <= t[first])
    if later.size:
        cons.append(t[prev[later]] + d["server"][dl] + d["bwd"][dl] + d["fwd"][dl] + 2 * msg
                    + cp.multiply(smashed[dl], zu[dl] + zd[dl]) <= t[later])
    if m > 1:
        cons.append(t[:-1] + d["server"][seq[:-1]] <= t[1:])
    ends = np.array([last[dev] for dev in range(n) if dev in last])
    de = seq[ends]
    cons.append(t[ends] + d["server"][de] + d["bwd"][de] + 3 * msg + cp.multiply(smashed[de], zd[de])
                + cp.multiply(model[de], zu[de] + zd[de]) <= tau)
    prob = cp.Problem(cp.Minimize(tau), cons)
    try:
        prob.solve(solver=solver, **SOLVER_OPTIONS.get(solver, {}))
        ok = prob.status in ("optimal", "optimal_inaccurate") and frac.value is not None
    except cp.error.SolverError:
        ok = False
    if ok:
        value = frac.value
        assert value is not None
        b = np.maximum(value, 0.0) * B
        b = b * min(1.0, B / b.sum())
        return float(round_latency(p, s, b, seed, round_idx)), b, float(tau.value)  # type: ignore[arg-type]
    # Rare badly scaled instances (a device in a deep fade next to one at > 60 dB): the best of feasible
    # candidates, flagged inexact by tau = None (the latency returned is still the true one at b).
    return _fallback_bandwidth(p, s, seed, round_idx, prob, frac)


def _fallback_bandwidth(
    p: Problem, s: np.ndarray, seed: int, round_idx: int, prob: cp.Problem, frac: cp.Variable
) -> tuple[float, np.ndarray, None]:
    from hetsfl.optim.bandwidth import allocate

    n, B = p.num_devices, p.total_bandwidth
    log.warning("SFL-V2 bandwidth program failed (N=%d, cuts %s); using the best of feasible candidates", n,
                s.tolist())
    rows = np.arange(n)
    A, U = p.terms()
    cands = [np.full(n, B / n), allocate(A[rows, s - 1], U[rows, s - 1], p.xu, p.xd, B)[1]]
    try:
        prob.solve(solver="SCS", eps=1e-9, max_iters=200_000)
        if frac.value is not None and np.all(np.isfinite(frac.value)) and frac.value.sum() > 0:
            f = np.maximum(frac.value, 1e-12)
            cands.append(f / f.sum() * B)
    except Exception:  # noqa: BLE001 - any solver failure leaves the other candidates
        pass
    Ts = [float(round_latency(p, s, b, seed, round_idx)) for b in cands]
    k = int(np.argmin(Ts))
    return Ts[k], cands[k], None


def _allowed_common(problem: Problem) -> tuple[np.ndarray, np.ndarray]:
    mask = problem.allowed()
    common = np.flatnonzero(mask.all(axis=0)) + 1
    if common.size == 0:
        raise InfeasibleError("infeasible: no split point is allowed on every device, so SFL-V2 has no common split")
    return mask, common


def best_common_split(problem: Problem, seed: int, bandwidth: str = "optimal", round_idx: int = 0) -> dict:
    """The best common cut under SFL-V2's latency, with optimal (convex program per cut) or equal bandwidth.
    Exact for the round's order. Returns {splits, bandwidth_hz, objective_s, tried_splits}."""
    _, common = _allowed_common(problem)
    n, B = problem.num_devices, problem.total_bandwidth
    tried, best, exact = {}, None, True
    for c in common:
        s = np.full(n, int(c))
        if bandwidth == "optimal":
            T, b, tau = optimal_bandwidth(problem, s, seed, round_idx)
            exact &= tau is not None
        elif bandwidth == "equal":
            b = np.full(n, B / n)
            T = float(round_latency(problem, s, b, seed, round_idx))
        else:
            raise ConfigError(f"bandwidth must be 'optimal' or 'equal', got {bandwidth!r}")
        tried[int(c)] = T
        if best is None or T < best[0]:
            best = (T, s, b)
    assert best is not None  # common is not empty
    return {"objective_s": best[0], "splits": best[1].tolist(), "bandwidth_hz": best[2].tolist(),
            "tried_splits": tried, "bandwidth_exact": exact}


def local_search_splits(problem: Problem, seed: int, bandwidth: str = "equal", round_idx: int = 0,
                        start: dict | None = None, max_sweeps: int = 50) -> dict:
    """Individual cuts under SFL-V2's latency by coordinate descent: each device in turn takes the cut that
    minimises the round latency with the others fixed (all its cuts evaluated at once), until a sweep changes
    nothing; with ``bandwidth='optimal'`` the bandwidth is re-optimised (convex program) after each sweep.
    Starts from the best common cut. A local optimum: not certified (``exhaustive`` is exact for small N)."""
    mask = problem.allowed()
    n = problem.num_devices
    if start is None:
        start = best_common_split(problem, seed, bandwidth, round_idx)
    s = np.array(start["splits"], dtype=int)
    b = np.array(start["bandwidth_hz"], dtype=float)
    T = float(round_latency(problem, s, b, seed, round_idx))
    exact = start.get("bandwidth_exact", True)
    for _ in range(max_sweeps):
        changed = False
        for i in range(n):
            cand = np.flatnonzero(mask[i]) + 1
            S = np.repeat(s[None, :], len(cand), axis=0)
            S[:, i] = cand
            Ts = round_latency(problem, S, b, seed, round_idx)
            k = int(np.argmin(Ts))
            if Ts[k] < T * (1 - 1e-12):
                s, T, changed = S[k], float(Ts[k]), True
        if bandwidth == "optimal":
            T2, b2, tau2 = optimal_bandwidth(problem, s, seed, round_idx)
            if T2 < T * (1 - 1e-12):
                T, b, changed = T2, b2, True
                exact = tau2 is not None
        if not changed:
            break
    return {"objective_s": T, "splits": s.tolist(), "bandwidth_hz": b.tolist(), "bandwidth_exact": exact}


def exhaustive_splits(problem: Problem, seed: int, round_idx: int = 0, limit: int = 200_000) -> dict:
    """Exact best individual cuts with equal bandwidth B/N (every combination, batched)."""
    n, B = problem.num_devices, problem.total_bandwidth
    b = np.full(n, B / n)

    def objective(S: np.ndarray) -> np.ndarray:
        return round_latency(problem, S + 1, b, seed, round_idx)

    too_many = "exhaustive SFL-V2 search would try {count:,} combinations, above the limit {limit:,}"
    T, cols, count = exhaustive_search(problem.allowed(), objective, limit, too_many, chunk=8192)
    return {"objective_s": T, "splits": (cols + 1).tolist(), "bandwidth_hz": b.tolist(), "combinations": count}


# ---- a solution file for the training stage --------------------------------------------------------------
V2_METHODS = ("sfl_v2", "sfl_v2_common")


def solve_sfl_v2(problem: Problem, method: str = "sfl_v2", seed: int = 0, rounds: int = 1,
                 round_idx: int = 0) -> dict:
    """SFL-V2 under its own clock, as a solution (schemas/solution.schema.json) for training seed ``seed``.

    ``sfl_v2_common``: the best common cut with optimal bandwidth (exact for round 0's order).
    ``sfl_v2``: individual cuts by local search with optimal bandwidth, started from the better of that
    common cut and the SFL-V1 AO solution (a local optimum, not certified).
    Both optimise the order of round ``round_idx`` (default 0); ``round_latency_s`` lists rounds 0..rounds-1
    (each with its own order), for the training engine's per-round latencies. ``objective_s`` is the latency of
    round ``round_idx``.
    """
    import time

    from hetsfl.optim.solvers import solve

    if method not in V2_METHODS:
        raise ConfigError(f"unknown SFL-V2 method {method!r}; choose one of {', '.join(V2_METHODS)}")
    if problem.sharing == "optimized":
        # SFL-V2's server serves one device at a time with its whole compute, so no sharing rule enters its
        # clock; only the SFL-V1 start below depends on it: start from the equal-share AO solution
        problem = dataclasses.replace(problem, sharing="equal")
    t0 = time.perf_counter()
    r = int(round_idx)
    best = best_common_split(problem, seed, "optimal", r)
    if method == "sfl_v2":
        v1 = solve(problem, "ao")
        T1 = float(round_latency(problem, v1["splits"], v1["bandwidth_hz"], seed, r))
        start = best if best["objective_s"] <= T1 else {"splits": v1["splits"], "bandwidth_hz": v1["bandwidth_hz"]}
        best = local_search_splits(problem, seed, "optimal", r, start=start)
    sol = v2_solution(problem, method, best["splits"], best["bandwidth_hz"], seed, rounds,
                      time.perf_counter() - t0, r)
    sol["bandwidth_exact"] = bool(best.get("bandwidth_exact", True))
    return sol


def v2_solution(problem: Problem, method: str, splits: ArrayLike, bandwidth: ArrayLike, seed: int,
                rounds: int, solve_time: float, round_idx: int = 0) -> dict:
    """Package cuts and bandwidths with SFL-V2's clock: per device the finishing time, its compute, transfer
    and waiting seconds (waiting = finish - the rest: time spent queueing for the server)."""
    p = problem
    s = np.asarray(splits, dtype=int)
    b = np.asarray(bandwidth, dtype=float)
    d = batch_durations(p, s, b)
    det = round_latency(p, s, b, seed, round_idx, detail=True)
    K = p.iters
    out = np.concatenate([[0.0], p.out_bits])
    params = np.concatenate([[0.0], np.cumsum(p.param_bits)])
    bits = K * p.batch * out[s] + params[s]
    compute = K * (d["fwd"] + d["bwd"] + d["server"])
    message = p.fixed_costs().message_s[np.arange(p.num_devices), s - 1]  # m(s) l, s < L
    with np.errstate(divide="ignore", invalid="ignore"):
        up = K * d["up"] + params[s] * LN2 / (b * np.log1p(p.xu / b))
        down = K * d["down"] + params[s] * LN2 / (b * np.log1p(p.xd / b))
    wait = det["finish_s"] - compute - message - up - down
    per_device = [
        {"id": p.device_ids[i], "split": int(s[i]), "bandwidth_hz": float(b[i]),
         "latency_s": float(det["finish_s"][i]), "compute_s": float(compute[i]), "uplink_s": float(up[i]),
         "downlink_s": float(down[i]), "wait_s": float(max(wait[i], 0.0)),
         "bits_up": float(bits[i]), "bits_down": float(bits[i]),
         **({"message_s": float(message[i])} if p.per_message_s else {})}
        for i in range(p.num_devices)
    ]
    return {
        "method": method,
        "latency_model": "sfl_v2",
        "objective_s": float(det["latency_s"]),
        "splits": s.tolist(),
        "bandwidth_hz": b.tolist(),
        "per_device": per_device,
        "iterations": [],
        "solve_time_s": float(solve_time),
        "sequential": False,
        "order_seed": int(seed),
        "server_busy_s": float(det["server_busy_s"]),
        "round_latency_s": round_latencies(p, s, b, seed, max(int(rounds), 1)),
        "meta": dict(p.meta),
    }
