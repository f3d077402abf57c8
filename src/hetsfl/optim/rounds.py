"""Per-round latencies under block fading (issue 10): optimise once (``static``) or every round (``per_round``).

The problem's ``channel_gain`` is the gain without small-scale fading (h̄_n = path loss x shadowing, the mean
gain since E|g|^2 = 1). Round r realises h_n,r = h̄_n |g_n,r|^2 (``system.fading``). Policies:

* ``static``: solve once on the mean gains h̄ (what is known before the run: the large-scale channel), keep
  the splits, bandwidths (and server shares) for every round;
* ``static_first``: solve once on round 0's realised gains, then keep them;
* ``per_round``: re-solve at the start of every round with that round's realised gains.

Each round's latency is the solution's round latency evaluated on the round's realised channel; the simulated
time of a run is their sum. Re-solving is optimal round by round for an exact method (global, exhaustive; ao
for equal or dedicated sharing, whose fixed points are optimal), so per_round <= static in every round.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from hetsfl.errors import ConfigError
from hetsfl.optim.problem import Problem
from hetsfl.system.fading import fading_power

POLICIES = ("static", "static_first", "per_round")


def with_gains(problem: Problem, gain: np.ndarray) -> Problem:
    """The same problem with other channel gains (x_u, x_d are recomputed)."""
    return dataclasses.replace(problem, gain=np.asarray(gain, dtype=float))


def evaluate(problem: Problem, solution: dict) -> dict:
    """Re-evaluate a solution's splits, bandwidths (and server shares) on ``problem``'s channel."""
    if solution.get("sharing") == "optimized":
        from hetsfl.optim.server_sharing import build_solution_optimized

        return build_solution_optimized(problem, solution["method"], solution["splits"], solution["bandwidth_hz"],
                                        solution["server_flops"], [], 0.0)
    from hetsfl.optim.solution import build_solution

    return build_solution(problem, solution["method"], solution["splits"], solution["bandwidth_hz"], [], 0.0,
                          sequential=bool(solution.get("sequential", False)))


def simulate_rounds(problem: Problem, method: str, policy: str, rounds: int, seed: int | None = None,
                    fading: str = "rayleigh", train_seed: int = 0, **solve_kwargs: Any) -> dict:
    """Round latencies of ``method`` under ``policy`` over ``rounds`` rounds of block fading drawn from ``seed``
    (default: the problem's seed). Returns per-round latencies, solve times (0 for rounds that do not solve),
    splits and bandwidths, and the cumulative simulated time.

    ``method`` is a ``solvers.solve`` method, or ``sfl_v2`` / ``sfl_v2_common`` (SFL-V2's own clock: round r
    is timed with the engine's device order of round r for ``train_seed``; ``per_round`` optimises each
    round's order and channel, the static policies round 0's order)."""
    from hetsfl.optim import sfl_v2
    from hetsfl.optim.solvers import solve

    if method in sfl_v2.V2_METHODS:
        def solve_round(p: Problem, r: int) -> dict:
            return sfl_v2.solve_sfl_v2(p, method, seed=train_seed, rounds=1, round_idx=r)

        def evaluate_round(p: Problem, sol: dict, r: int) -> float:
            return float(sfl_v2.round_latency(p, sol["splits"], sol["bandwidth_hz"], train_seed, r))
    else:
        def solve_round(p: Problem, r: int) -> dict:
            return solve(p, method, **solve_kwargs)

        def evaluate_round(p: Problem, sol: dict, r: int) -> float:
            return evaluate(p, sol)["objective_s"]

    if policy not in POLICIES:
        raise ConfigError(f"unknown fading policy {policy!r}; choose one of {', '.join(POLICIES)}")
    if int(rounds) < 1:
        raise ConfigError(f"rounds must be >= 1, got {rounds}")
    seed = problem.seed if seed is None else int(seed)
    n = problem.num_devices
    base = problem.gain
    realised = [with_gains(problem, base * fading_power(seed, r, n, fading)) for r in range(int(rounds))]
    solve_times = np.zeros(int(rounds))
    fixed = None
    if policy != "per_round":
        t0 = time.perf_counter()
        fixed = solve_round(problem if policy == "static" else realised[0], 0)
        solve_times[0] = time.perf_counter() - t0
    latencies, splits, bandwidths = [], [], []
    for r, p_r in enumerate(realised):
        if fixed is None:
            t0 = time.perf_counter()
            sol = solve_round(p_r, r)
            solve_times[r] = time.perf_counter() - t0
            latencies.append(float(sol["objective_s"]))
        else:
            sol = fixed
            latencies.append(evaluate_round(p_r, fixed, r))
        splits.append([int(s) for s in sol["splits"]])
        bandwidths.append([float(b) for b in sol["bandwidth_hz"]])
    return {
        "method": method,
        "policy": policy,
        "fading": fading,
        "seed": seed,
        "round_latency_s": latencies,
        "sim_time_s": np.cumsum(latencies).tolist(),
        "solve_time_s": solve_times.tolist(),
        "splits": splits,
        "bandwidth_hz": bandwidths,
    }
