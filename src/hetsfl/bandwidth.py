"""Exact bandwidth allocation (system model section 5, step 3). Pure, vectorised numpy.

Two primitives:

* ``least_bandwidth``: the least b with A + U phi(b) <= tau, i.e. the root of phi(b) = t := (tau - A) / U
  (``bandwidth_for_target``). phi is convex and decreasing in log b, so Newton's method in u = log b started from the upper bound
  b0 = ln2 / (t - phi_inf) (from y / ln(1+y) <= 1 + y/2), improved by one step of the monotone fixed point
  b <- (ln2 / t) (1/ln(1 + x_u/b) + 1/ln(1 + x_d/b)), converges in three to five steps.
* ``deadline_search``: the smallest deadline tau whose least bandwidths sum to at most B. Sum_n b_n(tau)
  is decreasing in tau; safeguarded Newton on B / sum_n b_n(tau) - 1 (nearly linear in tau), with
  bisection whenever Newton leaves the bracket [tau_lo, tau_hi] (tau_lo: some device needs infinite
  bandwidth; tau_hi: feasible).

``allocate`` (splits fixed) is the bandwidth step of alternating optimisation; it is batched over leading
axes so that many split assignments are solved at once.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hetsfl.channel import LN2
from hetsfl.latency import latency, seconds_per_bit_limit

STOP_STEP = 1e-7  # on log b: the next step, and the error left, would be ~1e-14
MAX_NEWTON = 12
# Start the deadline search just above the pole tau_lo: there B / demand - 1 is close to linear and
# Newton converges from the left; from tau_hi it overshoots past tau_lo and falls back to bisection
# (5.5 evaluations on average and at most 7, against up to 14 from tau_hi, on the benchmark instances).
START_FRACTION = 0.01


def _rho_and_slope(b: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """rho(b) = b ln(1 + x/b) (= r(b) ln 2) and d rho / d ln b = b (ln(1+y) - y/(1+y)), y = x/b."""
    y = x / b
    log1py = np.log1p(y)
    # ln(1+y) - y/(1+y) loses all digits for small y; use its series there.
    small = y < 1e-4
    d = np.where(small, y * y * (0.5 - y * (2.0 / 3.0 - 0.75 * y)), log1py - y / (1.0 + y))
    return b * log1py, b * d


def bandwidth_for_target(t: np.ndarray, xu: np.ndarray, xd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The b with phi(b) = t (seconds per bit, up + down), and db/dt (< 0).

    b = inf where t <= phi_inf (no bandwidth suffices), b = 0 where t = +inf. Arguments broadcast together.
    (Starting from the previous root of a nearby t is slower: from the right Newton overshoots far left.)
    """
    t, xu, xd = np.broadcast_arrays(np.asarray(t, float), np.asarray(xu, float), np.asarray(xd, float))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        excess = t - seconds_per_bit_limit(xu, xd)
        active = (excess > 0) & np.isfinite(t)
        xu_a, xd_a, t_a = xu[active], xd[active], t[active]
        x = np.stack([xu_a, xd_a])  # uplink and downlink in one array: half the numpy calls
        b0 = LN2 / excess[active]  # upper bound on the root
        u_a = np.log((LN2 / t_a) * (1.0 / np.log1p(xu_a / b0) + 1.0 / np.log1p(xd_a / b0)))
        for _ in range(MAX_NEWTON):
            b = np.exp(u_a)
            rho, drho = _rho_and_slope(b, x)
            g = LN2 * np.sum(1.0 / rho, axis=0)  # phi(b)
            dg = -LN2 * np.sum(drho / rho**2, axis=0)  # d phi / d ln b  (< 0)
            step = (g - t_a) / dg
            step = np.where(np.isfinite(step), step, 0.0)
            u_a = u_a - step
            # Quadratic convergence: after a step below STOP_STEP the error is about its square.
            if not np.any(np.abs(step) > STOP_STEP * np.maximum(1.0, np.abs(u_a))):
                break
        b = np.exp(u_a)
        dphi_db = dg / b  # at the last iterate but one: relative error ~ the last step, for the outer search
    out = np.full(t.shape, np.inf)
    deriv = np.full(t.shape, -np.inf)
    out[active] = b
    deriv[active] = 1.0 / dphi_db
    enough = np.isposinf(t)
    out[enough] = 0.0
    deriv[enough] = 0.0
    return out, deriv


def least_bandwidth(
    slack: np.ndarray, U: np.ndarray, xu: np.ndarray, xd: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Least bandwidth b with U phi(b) <= slack (slack = tau - A), and db/dslack (< 0)."""
    slack, U = np.asarray(slack, float), np.asarray(U, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(U > 0, slack / U, np.where(slack >= 0, np.inf, -np.inf))
        b, db_dt = bandwidth_for_target(t, xu, xd)
        return b, np.where(U > 0, db_dt / U, 0.0)


def deadline_search(
    demand: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    tau_lo: np.ndarray,
    tau_hi: np.ndarray,
    total_bandwidth: float,
    rtol: float = 1e-13,
    max_iter: int = 300,
) -> tuple[np.ndarray, np.ndarray]:
    """Smallest tau with demand(tau) <= B, for a batch of independent problems.

    ``demand(tau)`` returns (sum of least bandwidths, its derivative in tau) for each problem; it must be
    non-increasing. ``tau_lo`` must be infeasible (or the infeasibility limit) and ``tau_hi`` feasible.
    Returns (tau, lower) where ``lower`` is a certified lower bound: demand(lower) > B or lower = tau_lo.
    """
    lo = np.array(tau_lo, dtype=float, copy=True)
    hi = np.array(tau_hi, dtype=float, copy=True)
    tau = lo + START_FRACTION * (hi - lo)
    B = float(total_bandwidth)
    done = np.zeros(tau.shape, dtype=bool)
    for _ in range(max_iter):
        need, dneed = demand(tau)
        F = need - B
        feasible = F <= 0
        hi = np.where(~done & feasible, np.minimum(hi, tau), hi)
        lo = np.where(~done & ~feasible, np.maximum(lo, tau), lo)
        done |= (np.abs(F) <= rtol * B) | (hi - lo <= rtol * hi)
        if done.all():
            break
        with np.errstate(divide="ignore", invalid="ignore"):
            # Newton on B / demand(tau) - 1, which is close to linear in tau (demand ~ 1 / (tau - tau_n)).
            newton = tau - F * need / (B * dneed)
        inside = np.isfinite(newton) & (newton > lo) & (newton < hi)
        tau = np.where(done, tau, np.where(inside, newton, 0.5 * (lo + hi)))
    return tau, lo


def allocate(
    A: np.ndarray, U: np.ndarray, xu: np.ndarray, xd: np.ndarray, total_bandwidth: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bandwidth step with splits fixed: minimise max_n A_n + U_n phi_n(b_n) s.t. sum b <= B.

    A, U: (..., N) per device for the chosen splits (leading axes are independent problems); xu, xd: (N,).
    Returns (objective, b, lower_bound); b sums to B along the last axis and objective = max_n T_n(b_n).
    """
    A = np.asarray(A, float)
    U = np.asarray(U, float)
    n = A.shape[-1]
    B = float(total_bandwidth)
    phi_inf = seconds_per_bit_limit(xu, xd)
    tau_lo = np.max(A + U * phi_inf, axis=-1)
    tau_hi = np.max(latency(A, U, B / n, xu, xd), axis=-1)

    last = {}

    def demand(tau):
        b, db = least_bandwidth(tau[..., None] - A, U, xu, xd)
        last.update(tau=tau.copy(), b=b)
        return b.sum(-1), db.sum(-1)

    tau, lower = deadline_search(demand, tau_lo, tau_hi, B)
    b = last["b"] if np.array_equal(last["tau"], tau) else least_bandwidth(tau[..., None] - A, U, xu, xd)[0]
    b = _fill_band(b, B)
    return np.max(latency(A, U, b, xu, xd), axis=-1), b, lower


def _fill_band(b: np.ndarray, B: float) -> np.ndarray:
    """Scale the least bandwidths so that they use the whole band (every device then finishes no later);
    when nobody needs any bandwidth, share it equally."""
    total = b.sum(-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, b * (B / total), B / b.shape[-1])
