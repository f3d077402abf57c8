"""Exact bandwidth allocation (system model section 5, step 3). Pure, vectorised numpy.

``allocate`` (splits fixed) is the bandwidth step of alternating optimisation; it is batched over leading
axes so that many split assignments are solved at once. At the optimum every device finishes at the same
deadline tau and the band is used up. Two solvers:

* ``allocate_by_model`` (the default): Newton's method on a power-law model of each device's excess
  seconds per bit psi_n(b) = phi_n(b) - phi_n(inf); the model's least bandwidths are in closed form, the
  deadline at which they sum to B is a scalar search, and three or four iterations reach 1e-14.
* ``allocate_nested`` (the fallback: devices with nothing to send, or no convergence):
  ``deadline_search`` (safeguarded Newton on B / sum_n b_n(tau) - 1, bisection inside the bracket
  [tau_lo: some device needs infinite bandwidth, tau_hi: feasible]) over ``least_bandwidth`` (the least b
  with A + U phi(b) <= tau, i.e. the root of phi(b) = t := (tau - A) / U (``bandwidth_for_target``): Newton
  in u = log b from the upper bound b0 = ln2 / (t - phi_inf) (from y / ln(1+y) <= 1 + y/2), improved by one
  step of the monotone fixed point b <- (ln2 / t) (1/ln(1 + x_u/b) + 1/ln(1 + x_d/b)); three to five steps).
  ``least_bandwidth`` and ``deadline_search`` also serve the global method (``joint.global_optimum``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from hetsfl.system.channel import LN2
from hetsfl.system.latency import latency, seconds_per_bit_limit

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
    demand: Callable[[Any], tuple[Any, Any]],
    tau_lo: float | np.ndarray,
    tau_hi: float | np.ndarray,
    total_bandwidth: float,
    tau: float | np.ndarray | None = None,
    rtol: float = 1e-13,
    max_iter: int = 300,
) -> tuple[Any, Any, bool]:
    """Smallest tau with demand(tau) <= B, for one problem (tau_lo a scalar: the search runs on floats,
    cheaper than 0-d arrays) or a batch of independent problems (arrays).

    ``demand(tau)`` returns (sum of least bandwidths, its derivative in tau) for each problem; it must be
    non-increasing. ``tau_lo`` must be infeasible (or the infeasibility limit) and ``tau_hi`` feasible; it
    may be +inf when a start ``tau`` is given (from an infeasible tau Newton only moves right, and a
    feasible tau closes the bracket). Without ``tau`` the search starts at tau_lo + START_FRACTION (tau_hi -
    tau_lo). Newton on B / demand(tau) - 1, which is close to linear in tau (demand ~ 1 / (tau - tau_n)),
    with bisection whenever it leaves the bracket. Done when |demand - B| <= rtol B, when the bracket is
    below rtol tau, or when Newton's next step is a few units in the last place.
    Returns (tau, lower, converged): ``lower`` is a certified lower bound (demand(lower) > B or
    lower = tau_lo) and ``converged`` whether every problem met the stopping rule within ``max_iter``.
    """
    B = float(total_bandwidth)
    # The same code runs on floats (one problem) and on arrays (a batch): the operations are chosen here.
    where: Callable[..., Any]
    minimum: Callable[..., Any]
    maximum: Callable[..., Any]
    every: Callable[..., Any]
    lo: Any
    hi: Any
    if np.ndim(tau_lo) == 0:
        where, minimum, maximum, every = (lambda c, t, f: t if c else f), min, max, bool
        lo, hi = float(tau_lo), float(tau_hi)
    else:
        where, minimum, maximum, every = np.where, np.minimum, np.maximum, np.all
        lo, hi = np.array(tau_lo, dtype=float), np.array(tau_hi, dtype=float)
    if tau is None:
        tau = lo + START_FRACTION * (hi - lo)
    done = seen = np.zeros(np.shape(lo), dtype=bool)  # seen: hi is a point evaluated, not just the given bound
    with np.errstate(divide="ignore", invalid="ignore"):
        for _ in range(max_iter):
            need, dneed = demand(tau)
            F = need - B
            feasible = F <= 0
            seen = seen | feasible
            hi = where(feasible, minimum(hi, tau), hi)
            lo = where(feasible, lo, maximum(lo, tau))
            newton = tau - F * need / (B * dneed)
            done = done | (abs(F) <= rtol * B) | (hi - lo <= rtol * abs(tau)) | (abs(newton - tau) <= 1e-15 * abs(tau))
            if every(done):
                return tau, lo, True
            inside = (newton > lo) & (newton < hi)  # (false for NaN)
            # Past a given hi not yet evaluated, try hi itself (it may be the answer: N = 1, equal shares).
            fallback = where(~seen & (newton >= hi), hi, where(hi < np.inf, 0.5 * (lo + hi), 2 * tau - lo))
            tau = where(done, tau, where(inside, newton, fallback))
    return tau, lo, False


def allocate(
    A: np.ndarray, U: np.ndarray, xu: np.ndarray, xd: np.ndarray, total_bandwidth: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bandwidth step with splits fixed: minimise max_n A_n + U_n phi_n(b_n) s.t. sum b <= B.

    A, U: (..., N) per device for the chosen splits (leading axes are independent problems); xu, xd: (N,).
    Returns (objective, b, lower_bound); b sums to B along the last axis, objective = max_n T_n(b_n) and
    lower_bound <= the optimum.

    Solved by Newton on a power-law model of each device (``allocate_by_model``); instances it does not
    take (a device with nothing to send, an infinite compute time) or on which it does not converge go to
    the nested search (``allocate_nested``).
    """
    A = np.asarray(A, float)
    U = np.asarray(U, float)
    B = float(total_bandwidth)
    if A.shape[-1] and np.all(U > 0) and np.all(np.isfinite(A)):
        b = allocate_by_model(A, U, xu, xd, B)
        if b is not None:
            T = latency(A, U, b, xu, xd)
            # Every device's least bandwidth for the deadline min_n T_n is at least its b_n, and they sum to B.
            return T.max(-1), b, T.min(-1)
    return allocate_nested(A, U, xu, xd, B)


def allocate_nested(
    A: np.ndarray, U: np.ndarray, xu: np.ndarray, xd: np.ndarray, total_bandwidth: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``allocate`` by nested search: ``deadline_search`` over tau, ``least_bandwidth`` for every tau.

    Takes every instance (U = 0: the device needs no bandwidth); lower_bound is the search's infeasible end.
    """
    A = np.asarray(A, float)
    U = np.asarray(U, float)
    n = A.shape[-1]
    B = float(total_bandwidth)
    phi_inf = seconds_per_bit_limit(xu, xd)
    tau_lo = np.max(A + U * phi_inf, axis=-1)
    tau_hi = np.max(latency(A, U, B / n, xu, xd), axis=-1)

    last: dict = {}

    def demand(tau: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        b, db = least_bandwidth(np.asarray(tau)[..., None] - A, U, xu, xd)
        last.update(tau=np.array(tau), b=b, db=db)
        return b.sum(-1), db.sum(-1)

    tau, lower, _ = deadline_search(demand, tau_lo, tau_hi, B)
    if np.array_equal(last["tau"], tau):
        b, db = last["b"], last["db"]
    else:
        b, db = least_bandwidth(np.asarray(tau)[..., None] - A, U, xu, xd)
    b = _spend_residue(b, db, B)
    return np.max(latency(A, U, b, xu, xd), axis=-1), b, lower


# ---- Newton on a power-law model of each device ----------------------------------------------------------
MODEL_STOP = 1e-7  # on log b, as STOP_STEP: the error left after such a step is about its square
MODEL_MAX_ITER = 30
MODEL_DEADLINE_ITER = 100


def _excess_and_elasticity(b: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """psi = phi(b) - phi(inf) (seconds per bit above the floor, up + down) and k = d ln psi / d ln b.

    x: (2, ..., N) uplink and downlink, b: (..., N). Per direction, with y = x/b and l = ln(1+y):
    1/(b l) - 1/x = e / (x l), e = y - l >= 0, and d(b l)/d ln b = b d, d = l - y/(1+y). Both differences
    lose all digits for small y (b far above x), where their series are used. k lies in [-1, 0): -1 at low
    SNR and about -1 + 1/ln(y) at high SNR.
    """
    y = x / b
    log1py = np.log1p(y)
    e = y - log1py
    d = log1py - y / (1.0 + y)
    small = y < 1e-4
    if small.any():
        e = np.where(small, y * y * (0.5 - y * (1.0 / 3.0 - 0.25 * y)), e)
        d = np.where(small, y * y * (0.5 - y * (2.0 / 3.0 - 0.75 * y)), d)
    psi = LN2 * (e / (x * log1py)).sum(0)
    dpsi = -LN2 * (d / (b * log1py * log1py)).sum(0)
    return psi, dpsi / psi


def _model_demand(
    b: np.ndarray, psi: np.ndarray, p: np.ndarray, A: np.ndarray, iU: np.ndarray, pinf: np.ndarray
) -> Callable[[float | np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The model's demand for ``deadline_search``: tau -> (sum_n b_n (s_n(tau) / psi_n)^p_n, its derivative),
    s_n(tau) = (tau - A_n)/U_n - phi_n(inf). Convex and decreasing in tau (p <= -1), infinite at the pole."""
    ipsi = 1.0 / psi
    piU = p * iU

    def demand(tau: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = (np.asarray(tau)[..., None] - A) * iU - pinf
        bm = b * (s * ipsi) ** p
        return bm.sum(-1), (bm * piU / s).sum(-1)

    return demand


def allocate_by_model(A: np.ndarray, U: np.ndarray, xu: np.ndarray, xd: np.ndarray, B: float) -> np.ndarray | None:
    """Optimal bandwidths (..., N), summing to B, for compute times A and bits U > 0 (all finite); None
    when the iteration does not converge (the caller then uses ``allocate_nested``).

    At the optimum every device finishes at the same tau: psi_n(b_n) = s_n(tau) := (tau - A_n)/U_n - phi_n(inf)
    and sum b_n = B. At the iterate b each psi_n is modelled by the power law psi_n (b / b_n)^k_n through it
    (k_n its elasticity); the model's least bandwidths b_n (s_n(tau) / psi_n)^(1/k_n) sum to B at a tau found
    by ``deadline_search`` on the model's demand, and b moves to them. This is Newton's method on
    ln psi_n(e^u) = ln s_n(tau) with tau eliminated exactly; ln psi is nearly linear in ln b (slope between
    -1 and -1 + 1/ln SNR), so three or four iterations from equal shares reach 1e-14.
    """
    n = A.shape[-1]
    batch = A.shape[:-1]
    x = np.stack(np.broadcast_arrays(np.asarray(xu, float), np.asarray(xd, float)))
    x = x.reshape((2,) + (1,) * len(batch) + (n,))  # direction first, then the batch axes
    pinf = seconds_per_bit_limit(xu, xd)
    iU = 1.0 / U
    tau_lo = np.max(A + U * pinf, axis=-1)
    u = np.full(A.shape, np.log(B / n))  # equal shares (a warm start from the last AO iterate saved nothing)
    tau = None
    with np.errstate(all="ignore"):
        for _ in range(MODEL_MAX_ITER):
            b = np.exp(u)
            psi, k = _excess_and_elasticity(b, x)
            p = 1.0 / k
            if tau is None:
                # In the model every device has at most B/n at tau_hi: a feasible end of the bracket.
                tau_hi = np.max(A + U * (pinf + psi * (B / (n * b)) ** k), axis=-1)
            else:  # start from the last deadline; the model changed, so no feasible end is known
                tau_hi = np.full(batch, np.inf)
            tau, _, converged = deadline_search(_model_demand(b, psi, p, A, iU, pinf), tau_lo, tau_hi, B, tau,
                                                rtol=1e-15, max_iter=MODEL_DEADLINE_ITER)
            if not converged:
                return None
            slack = (np.asarray(tau)[..., None] - A) * iU - pinf
            step = p * np.log(slack / psi)
            u = u + step
            if not np.any(np.abs(step) > MODEL_STOP):  # (false on NaN: checked below)
                b = np.exp(u)
                b = _spend_residue(b, b * p * iU / slack, B)
                return b if np.all(np.isfinite(b) & (b > 0)) else None
    return None


def _spend_residue(b: np.ndarray, db_dtau: np.ndarray, B: float) -> np.ndarray:
    """Make bandwidths found for a deadline tau sum to B.

    Near a pole (a device almost compute bound) one step of tau in the last digit moves the sum by up to
    ~1e-8 B, so the sum at the computed tau misses B. The rest goes to the devices along db_n/dtau, as a
    sub-ulp change of tau would hand it out: mostly to the device at the pole, whose finishing time hardly
    moves. Scaling pro rata instead would change the finishing times of the others by that relative amount.
    """
    residue = B - b.sum(-1, keepdims=True)
    total = db_dtau.sum(-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        moved = b + residue * db_dtau / total
    usable = np.isfinite(total) & (total < 0) & np.all(np.isfinite(moved) & (moved >= 0), axis=-1, keepdims=True)
    return _fill_band(np.where(usable, moved, b), B)


def _fill_band(b: np.ndarray, B: float) -> np.ndarray:
    """Scale the least bandwidths so that they use the whole band (every device then finishes no later);
    when nobody needs any bandwidth, share it equally."""
    total = b.sum(-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, b * (B / total), B / b.shape[-1])
