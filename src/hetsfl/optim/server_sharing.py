"""The methods of ``solvers.solve`` when the server's compute is a decision variable (`sharing: optimized`).

``solve_optimized(problem, method)`` returns a solution (schemas/solution.schema.json) whose per-device
entries carry ``server_flops`` (f_n). Methods:

* ``ao``: the equal-sharing AO's fixed point (a feasible point of this model), then {joint bandwidth and
  compute step (exact); split step} until no cut changes (``resources.alternating_resources``). Never worse
  than the equal-sharing AO.
* ``global``: the best of ``ao`` and of AO started from the cuts the Lagrangian dual picks near its price, with
  the dual's certified lower bound (``lower_bound_s``) and ``duality_gap`` = (objective - lower) / objective.
* ``exhaustive``: every cut combination with the exact joint step.
* ``equal_bandwidth``: b = B/N, best cuts and optimal compute (exact for that b).
* ``fixed_split``: the best common cut with the joint step. ``random_split``: seeded cuts, joint step.
* ``fl`` and ``sl`` are not dispatched here: FL has no server work, SL gives the whole server to one device
  at a time (``solvers.solve`` handles both unchanged).
"""

from __future__ import annotations

import time

import numpy as np
from numpy.typing import ArrayLike

from hetsfl.errors import ConfigError, InfeasibleError
from hetsfl.optim.problem import Problem
from hetsfl.optim.resources import (
    alternating_resources,
    compute_for_bandwidth,
    exhaustive_resources,
    joint_allocate,
    round_latency,
)
from hetsfl.optim.resources_dual import dual_lower_bound
from hetsfl.system.latency import latency_terms

METHODS = ("ao", "global", "exhaustive", "equal_bandwidth", "fixed_split", "random_split")


def _common(mask: np.ndarray, problem: Problem) -> np.ndarray:
    common = np.flatnonzero(mask.all(axis=0))
    if common.size == 0:
        raise InfeasibleError("infeasible: no split point is allowed on every device, so a common split "
                              "(fixed_split) does not exist")
    return common


def solve_optimized(problem: Problem, method: str, max_iters: int = 100, exhaustive_limit: int = 200_000,
                    seed: int | None = None) -> dict:
    """Solve ``problem`` (sharing == 'optimized') with ``method``; see the module docstring."""
    from hetsfl.optim.joint import alternating_optimisation

    if method not in METHODS:
        raise ConfigError(f"method {method!r} is not available with server sharing 'optimized'; choose one of "
                          f"{', '.join(METHODS)} (fl and sl are solved by solvers.solve)")
    start = time.perf_counter()
    p = problem
    n, L, B, C = p.num_devices, p.num_layers, p.total_bandwidth, p.server_flops
    xu, xd = p.xu, p.xd
    rows = np.arange(n)
    mask = p.allowed()
    a_all, w_all = p.device_server_terms()
    _, U_all = p.terms()
    a = np.where(mask, a_all[:, : L - 1], np.inf)
    w, U = w_all[:, : L - 1], U_all[:, : L - 1]
    extra: dict = {}
    iterations: list[dict] = []
    if method in ("ao", "global"):
        A_eq = a + w * (n / C)
        cols, _, trace0 = alternating_optimisation(A_eq, U, xu, xd, B, max_iters)
        cols, b, f, trace = alternating_resources(a, w, U, xu, xd, B, C, cols, max_iters)
        iterations = [{**t, "step": "equal sharing AO: " + t["step"]} for t in trace0]
        iterations += [{**t, "iteration": t["iteration"] + len(trace0) - 1} for t in trace]
        if method == "global":
            obj = float(np.max(round_latency(a[rows, cols], w[rows, cols], U[rows, cols], b, f, xu, xd)))
            lower, candidates, nu = dual_lower_bound(a, w, U, xu, xd, B, C, obj)
            # primal: AO from each cut choice the dual made near its optimal price; keep the best
            for start_cols in candidates:
                if np.array_equal(start_cols, cols):
                    continue
                c2, b2, f2, _ = alternating_resources(a, w, U, xu, xd, B, C, start_cols, max_iters)
                o2 = float(np.max(round_latency(a[rows, c2], w[rows, c2], U[rows, c2], b2, f2, xu, xd)))
                if o2 < obj:
                    cols, b, f, obj = c2, b2, f2, o2
            lower = min(lower, obj)
            extra.update(lower_bound_s=float(lower), duality_gap=float((obj - lower) / obj),
                         compute_price=float(nu))
    elif method == "exhaustive":
        cols, count = exhaustive_resources(a, w, U, mask, xu, xd, B, C, exhaustive_limit)
        _, b, f, _ = joint_allocate(a[rows, cols], w[rows, cols], U[rows, cols], xu, xd, B, C)
        extra["combinations"] = count
    elif method == "equal_bandwidth":
        b = np.full(n, B / n)
        _, cols, f = compute_for_bandwidth(a, w, U, b, xu, xd, C)
    elif method == "fixed_split":
        common = _common(mask, p)
        obj, bs, fs, _ = joint_allocate(a[:, common].T, w[:, common].T, U[:, common].T, xu, xd, B, C)
        k = int(np.argmin(obj))
        cols, b, f = np.full(n, common[k]), bs[k], fs[k]
        extra["tried_splits"] = {int(c + 1): float(o) for c, o in zip(common, obj, strict=True)}
    else:  # random_split
        rng = np.random.default_rng(p.seed if seed is None else seed)
        cols = np.array([rng.choice(np.flatnonzero(r)) for r in mask])
        _, b, f, _ = joint_allocate(a[rows, cols], w[rows, cols], U[rows, cols], xu, xd, B, C)
        extra["seed"] = int(p.seed if seed is None else seed)
    sol = build_solution_optimized(p, method, cols + 1, b, f, iterations, time.perf_counter() - start)
    sol.update(extra)
    if p.deadline is not None and sol["objective_s"] > p.deadline:
        raise InfeasibleError(
            f"infeasible: best round latency {sol['objective_s']:.6g} s > deadline_s {p.deadline:g} s with "
            f"{method} and optimized server sharing (total band {B:g} Hz, server {C:g} FLOP/s)")
    return sol


def build_solution_optimized(problem: Problem, method: str, splits: ArrayLike, bandwidth: ArrayLike,
                             server_flops: ArrayLike, iterations: list[dict], solve_time: float) -> dict:
    """Evaluate cuts, bandwidths and server shares (T_n = a_n + w_n/f_n + U_n phi_n(b_n)) as a solution
    (a_n with the per-message latency reported apart as message_s when the problem has one)."""
    p = problem
    rows = np.arange(p.num_devices)
    splits = np.asarray(splits, dtype=int)
    b = np.asarray(bandwidth, float)
    f = np.asarray(server_flops, float)
    a_all, w_all = p.device_server_terms(messages=False)
    _, U_all = p.terms()
    a, w, u = a_all[rows, splits - 1], w_all[rows, splits - 1], U_all[rows, splits - 1]
    with np.errstate(divide="ignore"):
        compute = a + np.where(w > 0, w / f, 0.0)
    messages = p.fixed_costs().message_s[rows, splits - 1] if p.per_message_s else None
    terms = latency_terms(compute, u, b, p.xu, p.xd, messages)
    lat = terms["latency_s"]
    per_device = [
        {
            "id": p.device_ids[i],
            "split": int(splits[i]),
            "bandwidth_hz": float(b[i]),
            "server_flops": float(f[i]),
            "latency_s": float(lat[i]),
            "compute_s": float(terms["compute_s"][i]),
            "uplink_s": float(terms["uplink_s"][i]),
            "downlink_s": float(terms["downlink_s"][i]),
            "bits_up": float(u[i]),
            "bits_down": float(u[i]),
            **({"message_s": float(terms["message_s"][i])} if "message_s" in terms else {}),
        }
        for i in rows
    ]
    return {
        "method": method,
        "objective_s": float(lat.max()),
        "splits": [int(s) for s in splits],
        "bandwidth_hz": [float(x) for x in b],
        "server_flops": [float(x) for x in f],
        "per_device": per_device,
        "iterations": iterations,
        "solve_time_s": float(solve_time),
        "sequential": False,
        "sharing": "optimized",
        "meta": dict(p.meta),
    }
