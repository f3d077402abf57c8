"""Split-point and bandwidth optimisation (system model section 5) and the baselines of section 4.

Every method returns a solution dictionary in the format of schemas/solution.schema.json (built and
checked by optim/solution.py). The maths is in pure functions on arrays in optim/joint.py. This module
holds the one registry of methods (SOLVERS) and ``solve``, and re-exports the names of both.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from hetsfl.errors import ConfigError, InfeasibleError
from hetsfl.optim.bandwidth import allocate
from hetsfl.optim.joint import (
    BandwidthStep,
    alternating_optimisation,
    best_splits,
    exhaustive_optimum,
    global_optimum,
)
from hetsfl.optim.problem import Problem
from hetsfl.optim.solution import (
    build_solution,
    check_deadline,
    check_finite,
    infeasible_solution,
    is_feasible,
    require_feasible,
)
from hetsfl.system.latency import seconds_per_bit

__all__ = [
    "BandwidthStep",
    "METHODS",
    "REFERENCE_METHODS",
    "SEQUENTIAL",
    "SOLVERS",
    "SolveInputs",
    "alternating_optimisation",
    "best_splits",
    "build_solution",
    "check_deadline",
    "check_finite",
    "exhaustive_optimum",
    "global_optimum",
    "infeasible_solution",
    "is_feasible",
    "require_feasible",
    "solve",
    "solve_or_infeasible",
]

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
