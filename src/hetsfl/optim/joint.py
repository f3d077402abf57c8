"""The joint split-point and bandwidth algorithms (system model section 5) as pure functions on arrays:
A[n, s-1] (computing seconds, inf = forbidden cut) and U[n, s-1] (bits each way) for cut s, and the channel
constants x_u, x_d of each device. optim/solvers.py applies them to a Problem."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hetsfl.optim.bandwidth import allocate, deadline_search, least_bandwidth
from hetsfl.optim.split_search import exhaustive_search, stable_argmin, too_many_splits
from hetsfl.system.latency import latency, seconds_per_bit, seconds_per_bit_limit

BandwidthStep = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float], tuple]


def best_splits(
    A: np.ndarray, U: np.ndarray, b: np.ndarray, xu: np.ndarray, xd: np.ndarray, current: np.ndarray | None = None
) -> np.ndarray:
    """Split step: for fixed bandwidth each device takes argmin_s T_n(s, b_n) (A = inf marks forbidden cuts).

    Returns 0-based column indices; with ``current`` a device keeps its split unless another is strictly
    better (by more than 1e-12 relative), so that alternating optimisation stops at a fixed point.
    """
    return stable_argmin(A + U * seconds_per_bit(b, xu, xd)[:, None], current)


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

    def best(tau: float | np.ndarray) -> np.ndarray:
        return np.argmax((tau - A) / U, axis=1)

    def demand(tau: float | np.ndarray) -> tuple[float, float]:
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
    rows = np.arange(len(A))

    def objective(S: np.ndarray) -> np.ndarray:
        return allocate(A[rows, S], U[rows, S], xu, xd, B)[0]

    _, cols, count = exhaustive_search(allowed, objective, limit, too_many_splits("'global' or 'ao' (exact and fast)"))
    return cols, count


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
