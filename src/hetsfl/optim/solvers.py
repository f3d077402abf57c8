"""Split-point and bandwidth optimisation (system model section 5) and the baselines of section 4.

Every method returns a solution dictionary in the format of schemas/solution.schema.json. The maths is in
pure functions on arrays: A[n, s-1] (computing seconds) and U[n, s-1] (bits each way) for cut s, a mask of
allowed cuts, and the channel constants x_u, x_d of each device.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from hetsfl.errors import ConfigError, InfeasibleError
from hetsfl.optim.bandwidth import allocate, deadline_search, least_bandwidth
from hetsfl.optim.problem import Problem
from hetsfl.system.latency import latency, latency_terms, seconds_per_bit, seconds_per_bit_limit

BandwidthStep = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float], tuple]


# ---- pure building blocks ---------------------------------------------------------------------------
def best_splits(
    A: np.ndarray, U: np.ndarray, b: np.ndarray, xu: np.ndarray, xd: np.ndarray, current: np.ndarray | None = None
) -> np.ndarray:
    """Split step: for fixed bandwidth each device takes argmin_s T_n(s, b_n) (A = inf marks forbidden cuts).

    Returns 0-based column indices; with ``current`` a device keeps its split unless another is strictly
    better (by more than 1e-12 relative), so that alternating optimisation stops at a fixed point.
    """
    T = A + U * seconds_per_bit(b, xu, xd)[:, None]
    choice = np.argmin(T, axis=1)
    if current is not None:
        rows = np.arange(len(b))
        keep = T[rows, current] <= T[rows, choice] * (1 + 1e-12)
        choice = np.where(keep, current, choice)
    return choice


def global_optimum(
    A: np.ndarray, U: np.ndarray, xu: np.ndarray, xd: np.ndarray, B: float
) -> tuple[float, np.ndarray, np.ndarray, float]:
    """Joint optimum by bisection on the deadline: the least tau with sum_n beta_n(tau) <= B, where
    beta_n(tau) = min_s (least bandwidth with which cut s meets tau). Returns (tau, column per device,
    bandwidth per device, a certified lower bound). Forbidden cuts have A = inf.

    All cuts of device n share the function phi_n, so the cut needing the least bandwidth is the one with
    the most seconds per bit to spare, argmax_s (tau - A_ns) / U_ns: one root per device, not per cut.
    """
    rows = np.arange(len(A))
    phi_inf = seconds_per_bit_limit(xu, xd)
    tau_lo = np.max(np.min(A + U * phi_inf[:, None], axis=1))
    phi_eq = seconds_per_bit(B / len(A), xu, xd)
    tau_hi = np.max(np.min(A + U * phi_eq[:, None], axis=1))

    def best(tau):
        return np.argmax((tau - A) / U, axis=1)

    def demand(tau):
        j = best(tau)
        b, db = least_bandwidth(tau - A[rows, j], U[rows, j], xu, xd)
        return b.sum(), db.sum()

    tau, lower, _ = deadline_search(demand, tau_lo, tau_hi, B)
    tau = float(tau)
    # Certificate: a deadline a hair below tau needs more than the whole band.
    probe = tau * (1 - 1e-9)
    if probe > lower and demand(np.array(probe))[0] > B:
        lower = probe
    j = best(tau)
    b, _ = least_bandwidth(tau - A[rows, j], U[rows, j], xu, xd)
    return tau, j, b * (B / b.sum()), float(lower)


def exhaustive_optimum(
    A: np.ndarray, U: np.ndarray, allowed: np.ndarray, xu: np.ndarray, xd: np.ndarray, B: float, limit: int
) -> tuple[np.ndarray, int]:
    """Try every combination of allowed cuts, solving the bandwidth step for each. Returns (columns, count)."""
    cands = [np.flatnonzero(row) for row in allowed]
    count = int(np.prod([len(c) for c in cands], dtype=float))
    if count > limit:
        raise ConfigError(
            f"exhaustive search would try {count:,} split combinations, above the limit {limit:,}; use method "
            "'global' or 'ao' (exact and fast), or raise optimize.exhaustive_limit / --exhaustive-limit"
        )
    rows = np.arange(len(A))
    best_obj, best = np.inf, np.array([c[0] for c in cands])
    combos = itertools.product(*cands)
    while chunk := list(itertools.islice(combos, 4096)):
        S = np.array(chunk)
        obj, _, _ = allocate(A[rows, S], U[rows, S], xu, xd, B)
        i = int(np.argmin(obj))
        if obj[i] < best_obj:
            best_obj, best = obj[i], S[i]
    return best, count


def alternating_optimisation(
    A: np.ndarray,
    U: np.ndarray,
    xu: np.ndarray,
    xd: np.ndarray,
    B: float,
    max_iters: int = 100,
    bandwidth_step: BandwidthStep = allocate,
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """The source paper's AO: equal bandwidth, then alternate the exact split step and the exact bandwidth
    step until the splits stop changing. Returns (columns, bandwidth, trace of tau per iteration)."""
    n = len(A)
    b = np.full(n, B / n)
    cols = best_splits(A, U, b, xu, xd)
    trace = [{"iteration": 0, "tau_s": float(np.max(latency(A[np.arange(n), cols], U[np.arange(n), cols], b, xu, xd))),
              "step": "equal bandwidth, best splits", "changed": n}]
    rows = np.arange(n)
    for it in range(1, max_iters + 1):
        obj, b, _ = bandwidth_step(A[rows, cols], U[rows, cols], xu, xd, B)
        new = best_splits(A, U, b, xu, xd, current=cols)
        changed = int(np.count_nonzero(new != cols))
        trace.append({"iteration": it, "tau_s": float(obj), "step": "bandwidth, then splits", "changed": changed})
        if changed == 0:
            break
        cols = new
    return cols, b, trace


# ---- methods on a Problem ----------------------------------------------------------------------------
def _masked(A: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.where(mask, A, np.inf)


def _common_columns(mask: np.ndarray, problem: Problem) -> np.ndarray:
    common = np.flatnonzero(mask.all(axis=0))
    if common.size == 0:
        raise InfeasibleError(
            "infeasible: no split point is allowed on every device, so a common split (fixed_split, sl) does not "
            "exist; allowed splits per device: "
            + "; ".join(f"{d}: {(np.flatnonzero(r) + 1).tolist()}" for d, r in zip(problem.device_ids[:20], mask, strict=False))
            + (f"; ... and {len(mask) - 20} more devices" if len(mask) > 20 else "")
        )
    return common


@dataclass(frozen=True)
class SolveInputs:
    """What a method's solver function gets: the problem, its terms and the options of ``solve``."""

    problem: Problem
    A_all: np.ndarray  # A[n, s-1] for every cut s = 1..L (s = L is FL)
    U_all: np.ndarray
    max_iters: int
    exhaustive_limit: int
    seed: int | None
    rounds: int = 1  # SFL-V2: rounds whose latencies the solution lists

    @cached_property
    def mask(self) -> np.ndarray:
        """Allowed split points s = 1..L-1 (raises InfeasibleError naming devices without one)."""
        return self.problem.allowed()

    @cached_property
    def A(self) -> np.ndarray:
        """A over the split points 1..L-1, inf where a cut is not allowed."""
        return _masked(self.A_all[:, : self.problem.num_layers - 1], self.mask)

    @property
    def U(self) -> np.ndarray:
        return self.U_all[:, : self.problem.num_layers - 1]

    @property
    def rows(self) -> np.ndarray:
        return np.arange(self.problem.num_devices)


# A method's answer: (0-based columns, bandwidth per device, AO trace, extra solution fields).
Answer = tuple[np.ndarray, np.ndarray, list[dict], dict]


def _allocated(x: SolveInputs, cols: np.ndarray) -> np.ndarray:
    """The exact bandwidth step for fixed columns."""
    p = x.problem
    return allocate(x.A[x.rows, cols], x.U[x.rows, cols], p.xu, p.xd, p.total_bandwidth)[1]


def _solve_ao(x: SolveInputs, step: BandwidthStep = allocate) -> Answer:
    p = x.problem
    cols, b, trace = alternating_optimisation(x.A, x.U, p.xu, p.xd, p.total_bandwidth, x.max_iters, step)
    return cols, b, trace, {}


def _solve_ao_cvxpy(x: SolveInputs) -> Answer:
    from hetsfl.optim.bandwidth_cvx import allocate_cvxpy

    return _solve_ao(x, allocate_cvxpy)


def _solve_global(x: SolveInputs) -> Answer:
    p = x.problem
    _, cols, b, lower = global_optimum(x.A, x.U, p.xu, p.xd, p.total_bandwidth)
    return cols, b, [], {"lower_bound_s": lower}


def _solve_exhaustive(x: SolveInputs) -> Answer:
    p = x.problem
    cols, count = exhaustive_optimum(x.A, x.U, x.mask, p.xu, p.xd, p.total_bandwidth, x.exhaustive_limit)
    return cols, _allocated(x, cols), [], {"combinations": count}


def _solve_equal_bandwidth(x: SolveInputs) -> Answer:
    p = x.problem
    b = np.full(p.num_devices, p.total_bandwidth / p.num_devices)
    return best_splits(x.A, x.U, b, p.xu, p.xd), b, [], {}


def _solve_fixed_split(x: SolveInputs) -> Answer:
    p = x.problem
    common = _common_columns(x.mask, p)
    obj, bs, _ = allocate(x.A[:, common].T, x.U[:, common].T, p.xu, p.xd, p.total_bandwidth)
    k = int(np.argmin(obj))
    tried = {int(c + 1): float(o) for c, o in zip(common, obj, strict=True)}
    return np.full(p.num_devices, common[k]), bs[k], [], {"tried_splits": tried}


def _solve_random_split(x: SolveInputs) -> Answer:
    seed = x.problem.seed if x.seed is None else x.seed
    rng = np.random.default_rng(seed)
    cols = np.array([rng.choice(np.flatnonzero(r)) for r in x.mask])
    return cols, _allocated(x, cols), [], {"seed": int(seed)}


def _solve_fl(x: SolveInputs) -> Answer:
    p = x.problem
    p.check_full_model_fits()
    cols = np.full(p.num_devices, p.num_layers - 1)
    _, b, _ = allocate(x.A_all[:, -1], x.U_all[:, -1], p.xu, p.xd, p.total_bandwidth)
    return cols, b, [], {}


def _solve_sl(x: SolveInputs) -> Answer:
    p = x.problem
    common = _common_columns(x.mask, p)
    T = x.A[:, common] + x.U[:, common] * seconds_per_bit(p.total_bandwidth, p.xu, p.xd)[:, None]
    k = int(np.argmin(T.sum(axis=0)))
    tried = {int(c + 1): float(t) for c, t in zip(common, T.sum(axis=0), strict=True)}
    cols, b = np.full(p.num_devices, common[k]), np.full(p.num_devices, p.total_bandwidth)
    return cols, b, [], {"sequential": True, "tried_splits": tried}


def _solve_sfl_v2(x: SolveInputs, method: str = "sfl_v2") -> Answer:
    """SFL-V2 under its own clock (optim.sfl_v2), for the device order of training seed ``x.seed`` (default 0).
    Its extra fields (objective_s, per_device, round_latency_s, ...) replace the SFL-V1 evaluation."""
    from hetsfl.optim.sfl_v2 import solve_sfl_v2

    own = solve_sfl_v2(x.problem, method, seed=0 if x.seed is None else int(x.seed), rounds=x.rounds)
    extra = {k: v for k, v in own.items() if k not in ("method", "meta")}
    return np.asarray(own["splits"]) - 1, np.asarray(own["bandwidth_hz"]), [], extra


def _solve_sfl_v2_common(x: SolveInputs) -> Answer:
    return _solve_sfl_v2(x, "sfl_v2_common")


# The one registry of optimisation methods: name -> solver. The config schema's `optimize.methods`, the
# solution schema's `method` and the CLI's choices are tested against it (tests/test_registries.py).
SOLVERS: dict[str, Callable[[SolveInputs], Answer]] = {
    "ao": _solve_ao,
    "global": _solve_global,
    "exhaustive": _solve_exhaustive,
    "equal_bandwidth": _solve_equal_bandwidth,
    "fixed_split": _solve_fixed_split,
    "random_split": _solve_random_split,
    "fl": _solve_fl,
    "sl": _solve_sl,
    "ao_cvxpy": _solve_ao_cvxpy,  # reference only: AO with the bandwidth step by cvxpy (tests, benchmark)
    "sfl_v2": _solve_sfl_v2,  # SFL-V2's own clock: individual cuts (local search), exact bandwidth
    "sfl_v2_common": _solve_sfl_v2_common,  # SFL-V2's own clock: the best common cut, exact bandwidth
}
# Methods whose rounds are sequential (devices take turns, each with the whole band).
SEQUENTIAL = frozenset({"sl"})
# Methods for reference and testing only, not offered to the pipeline's configuration.
REFERENCE_METHODS = frozenset({"ao_cvxpy"})
METHODS = tuple(m for m in SOLVERS if m not in REFERENCE_METHODS)


def solve(problem: Problem, method: str, max_iters: int = 100, exhaustive_limit: int = 200_000,
          seed: int | None = None, rounds: int = 1) -> dict:
    """Solve ``problem`` with ``method`` and return a solution dictionary (schemas/solution.schema.json).

    ``seed``: random_split's draw (default: the problem's seed); for sfl_v2 and sfl_v2_common the training
    seed whose device order is timed (default 0), ``rounds`` the rounds whose latencies they list."""
    if method not in SOLVERS:
        raise ConfigError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if problem.sharing == "optimized" and method not in ("fl", "sl", "sfl_v2", "sfl_v2_common"):
        # issue 10: server compute as a decision variable (fl: no server work; sl: the whole server in turn)
        from hetsfl.optim.server_sharing import solve_optimized

        return solve_optimized(problem, method, max_iters, exhaustive_limit, seed)
    start = time.perf_counter()
    sequential = method in SEQUENTIAL
    A_all, U_all = problem.terms(sequential=sequential)
    inputs = SolveInputs(problem, A_all, U_all, max_iters, exhaustive_limit, seed, int(rounds))
    cols, b, iterations, extra = SOLVERS[method](inputs)
    solution = build_solution(problem, method, cols + 1, b, iterations, time.perf_counter() - start, sequential)
    solution.update(extra)
    check_deadline(problem, solution)
    return solution


def solve_or_infeasible(problem: Problem, method: str, max_iters: int = 100, exhaustive_limit: int = 200_000,
                        seed: int | None = None, rounds: int = 1) -> dict:
    """``solve``, except that an infeasible problem is a result, not an error.

    Returns the solution of ``solve`` (``status: "feasible"``), or, when ``solve`` raises InfeasibleError, a
    solution document with ``status: "infeasible"``, ``reason`` (the error's message, naming the devices),
    ``infeasible_devices`` (their ids; empty when the devices only fail together, e.g. a deadline),
    ``objective_s: null`` and empty per-device arrays. Other errors (bad arguments, an unknown method, a
    numerical failure) still raise. A caller that needs a runnable assignment (the training stage) checks it
    with ``require_feasible``.
    """
    start = time.perf_counter()
    try:
        return solve(problem, method, max_iters, exhaustive_limit, seed, rounds)
    except InfeasibleError as exc:
        return infeasible_solution(problem, method, str(exc), exc.devices, time.perf_counter() - start)


def infeasible_solution(problem: Problem, method: str, reason: str, devices=(), solve_time: float = 0.0) -> dict:
    """The solution document of a method that cannot run on ``problem`` (schemas/solution.schema.json)."""
    return {
        "method": method,
        "status": "infeasible",
        "reason": reason,
        "infeasible_devices": list(devices),
        "objective_s": None,
        "splits": [],
        "bandwidth_hz": [],
        "per_device": [],
        "iterations": [],
        "solve_time_s": float(solve_time),
        "sequential": method == "sl",
        "meta": dict(problem.meta),
    }


def is_feasible(solution: dict) -> bool:
    """True unless the solution says it is infeasible (files written before the status field are feasible)."""
    return solution.get("status", "feasible") != "infeasible"


def require_feasible(solution: dict, source: str = "solution") -> dict:
    """Return ``solution`` if it is feasible; else raise InfeasibleError with its reason (for callers such as
    the training stage, which cannot run a method that has no assignment)."""
    if not is_feasible(solution):
        raise InfeasibleError(
            f"{source}: method {solution.get('method')!r} is infeasible in this problem, so it cannot run: "
            f"{solution.get('reason', 'no reason recorded')}",
            solution.get("infeasible_devices", ()),
        )
    return solution


def check_finite(problem: Problem, method: str, columns: dict[str, np.ndarray]) -> None:
    """Raise ConfigError naming the device if a per-device result is not a finite number (a numerical failure
    that Problem.check_derived did not foresee), instead of failing later in the JSON writer."""
    for name, values in columns.items():
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            i = int(bad[0])
            more = f" (and {bad.size - 1} more device(s))" if bad.size > 1 else ""
            raise ConfigError(
                f"numerical failure: {method} gave {name} = {values[i]} for device {problem.device_ids[i]}{more}; "
                "check that device's numbers in the problem file (channel gain, FLOPs, sizes)"
            )


def build_solution(problem: Problem, method: str, splits, bandwidth, iterations, solve_time: float,
                   sequential: bool = False) -> dict:
    """Evaluate a split/bandwidth assignment with the latency model and package it as a solution."""
    p = problem
    rows = np.arange(p.num_devices)
    splits = np.asarray(splits, dtype=int)
    A, U = p.terms(sequential=sequential)
    a, u = A[rows, splits - 1], U[rows, splits - 1]
    terms = latency_terms(a, u, np.asarray(bandwidth, float), p.xu, p.xd)
    lat = terms["latency_s"]
    bandwidth = np.asarray(bandwidth, dtype=float)
    check_finite(p, method, {"bandwidth_hz": bandwidth, "bits_up": u, **terms})
    # Columns as Python lists (tolist converts once, in C), then one record per device.
    columns = {
        "id": list(p.device_ids),
        "split": splits.tolist(),
        "bandwidth_hz": bandwidth.tolist(),
        "latency_s": np.asarray(lat, dtype=float).tolist(),
        "compute_s": np.asarray(terms["compute_s"], dtype=float).tolist(),
        "uplink_s": np.asarray(terms["uplink_s"], dtype=float).tolist(),
        "downlink_s": np.asarray(terms["downlink_s"], dtype=float).tolist(),
        "bits_up": np.asarray(u, dtype=float).tolist(),
    }
    columns["bits_down"] = columns["bits_up"]
    keys = list(columns)
    per_device = [dict(zip(keys, values, strict=True)) for values in zip(*columns.values(), strict=True)]
    return {
        "method": method,
        "status": "feasible",
        "objective_s": float(lat.sum() if sequential else lat.max()),
        "splits": list(columns["split"]),
        "bandwidth_hz": list(columns["bandwidth_hz"]),
        "per_device": per_device,
        "iterations": iterations,
        "solve_time_s": float(solve_time),
        "sequential": bool(sequential),
        "meta": dict(p.meta),
    }


def check_deadline(problem: Problem, solution: dict) -> None:
    """Raise InfeasibleError, naming devices, when the problem's deadline is missed."""
    p = problem
    if p.deadline is None or solution["objective_s"] <= p.deadline:
        return
    A, U = p.terms(sequential=solution.get("sequential", False))
    L = p.num_layers
    if solution["method"] == "fl":
        allowed = np.zeros(A.shape, dtype=bool)
        allowed[:, L - 1] = True
    else:
        allowed = np.concatenate([p.allowed(), np.zeros((p.num_devices, 1), dtype=bool)], axis=1)
    whole_band = latency(A, U, p.total_bandwidth, p.xu[:, None], p.xd[:, None])
    alone = np.min(np.where(allowed, whole_band, np.inf), axis=1)
    hopeless = [p.device_ids[i] for i in np.flatnonzero(alone > p.deadline)]
    if hopeless:
        why = (f"device(s) {', '.join(map(str, hopeless[:20]))} cannot finish a round within {p.deadline:g} s even "
               "with the whole band and their best split")
    else:
        slow = np.argsort([-d["latency_s"] for d in solution["per_device"]])[:5]
        why = (f"the devices cannot all finish within {p.deadline:g} s with a total band of {p.total_bandwidth:g} Hz; "
               f"the slowest under {solution['method']} are " + ", ".join(
                   f"{solution['per_device'][i]['id']} ({solution['per_device'][i]['latency_s']:.4g} s)" for i in slow))
    raise InfeasibleError(f"infeasible: best round latency {solution['objective_s']:.6g} s > deadline_s; {why}",
                          hopeless)
