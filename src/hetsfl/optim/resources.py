"""Server compute as a decision variable (`sharing: optimized`, issue 10, docs/model.md). Pure numpy.

Device n at cut s finishes a round at

    T_n = a_n + w_n / f_n + U_n phi_n(b_n),   a_n = K D F_dev(s) / c_n (s),  w_n = K D F_srv(s) (FLOP)

with sum_n f_n <= C (the server's FLOP/s) and sum_n b_n <= B. For fixed splits the problem
min tau s.t. T_n <= tau is convex (w/f and U phi(b) are convex), and is solved exactly by ``joint_allocate``:

* for a deadline tau, device n's frontier is f_n(b) = w_n / (S_n - U_n phi_n(b)), S_n = tau - a_n, convex and
  decreasing in b on b > beta_n(tau) (the least bandwidth with an infinite server);
* H(tau) = least total compute with sum b <= B: the devices' frontiers have a common slope at the optimum,
  -f_n'(b_n) = 1/kappa, i.e. g_n(ln b_n) := ln(w_n U_n (-phi_n'(b_n))) - 2 ln(S_n - U_n phi_n(b_n)) = ln kappa
  with g_n strictly decreasing, and sum b_n = B. Solved by Newton's method with the coupling eliminated
  exactly (``_least_compute``): linearise every g_n in ln b, find the kappa at which the linearised
  bandwidths sum to B (a convex scalar equation), move, repeat;
* H is decreasing in tau with dH/dtau = -sum_n f_n^2 / w_n (envelope theorem; the device multipliers are
  f_n^2 / w_n), and the optimum is the least tau with H(tau) <= C (``bandwidth.deadline_search``).

Split step (resources fixed): T_n(s) = a_ns + w_ns / f_n + U_ns phi_n(b_n), argmin by enumeration.
The lower bound of the global method (Lagrangian dual) is in optim/resources_dual.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from hetsfl.optim.bandwidth import allocate, deadline_search, least_bandwidth
from hetsfl.optim.split_search import exhaustive_search, stable_argmin, too_many_splits
from hetsfl.system.channel import LN2
from hetsfl.system.latency import seconds_per_bit

NEWTON_STOP = 1e-11  # on ln b
MAX_NEWTON = 60


# ---- the per-device frontier ------------------------------------------------------------------------
def _slope_terms(u: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """phi(b), P = -dphi/dln b = b (-phi'(b)) and dP/dln b, for b = e^u; x: (2, ...) up and down."""
    b = np.exp(u)
    y = x / b
    lg = np.log1p(y)
    dd = lg - y / (1.0 + y)
    small = y < 1e-4
    if np.any(small):
        dd = np.where(small, y * y * (0.5 - y * (2.0 / 3.0 - 0.75 * y)), dd)
    rho = b * lg  # b ln(1 + x/b)
    rho1 = b * dd  # d rho / d ln b
    drho1 = rho1 - b * (y / (1.0 + y)) ** 2  # d rho1 / d ln b
    phi = LN2 * np.sum(1.0 / rho, axis=0)
    P = LN2 * np.sum(rho1 / rho**2, axis=0)
    dP = LN2 * np.sum(drho1 / rho**2 - 2.0 * rho1**2 / rho**3, axis=0)
    return phi, P, dP


def frontier(u: np.ndarray, S: np.ndarray, U: np.ndarray, w: np.ndarray, x: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """At b = e^u: g = ln(w U (-phi'(b))) - 2 ln(S - U phi(b)) (+inf where S <= U phi(b)), dg/du (< 0) and
    the server time slack S - U phi(b) (= w / f on the frontier)."""
    phi, P, dP = _slope_terms(u, x)
    slack = S - U * phi
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.log(w * U * P) - u - 2.0 * np.log(slack)
        dg = dP / P - 1.0 - 2.0 * U * P / slack
    bad = ~(slack > 0)
    g = np.where(bad, np.inf, g)
    dg = np.where(bad, -np.inf, dg)
    return g, dg, slack


def _xstack(xu: ArrayLike, xd: ArrayLike, shape: tuple[int, ...]) -> np.ndarray:
    """Uplink and downlink x as one array (2, *shape); xu, xd: per device (N,), the last axis of shape."""
    x = np.stack(np.broadcast_arrays(np.asarray(xu, float), np.asarray(xd, float)))
    x = x.reshape((2,) + (1,) * (len(shape) - x.ndim + 1) + x.shape[1:])
    return np.broadcast_to(x, (2,) + tuple(shape))


# ---- least total compute for a deadline -----------------------------------------------------------------
def _logsumexp(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m = np.max(z, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(z - m)
    s = e.sum(-1, keepdims=True)
    return (np.log(s) + m)[..., 0], e / s


def _least_compute(
    S: np.ndarray, U: np.ndarray, w: np.ndarray, x: np.ndarray, B: float, u0: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """min sum_n f_n s.t. w_n / f_n + U_n phi_n(b_n) <= S_n, sum b_n <= B, batched over leading axes.

    Returns (H, dH/dS-sum-weights f^2/w, b, f, u) with H = inf where no allocation exists (some S_n <= U_n
    phi_n(inf), or the least bandwidths with an infinite server already use up B). Devices with w_n = 0 need
    no compute and take their least bandwidth beta_n.
    """
    beta, _ = least_bandwidth(S, U, x[0], x[1])
    free = (w > 0) & np.ones(S.shape, dtype=bool)
    batch = S.shape[:-1]
    B_rem = B - np.sum(np.where(free, 0.0, beta), axis=-1)
    feasible = np.all(np.isfinite(beta), axis=-1) & (np.sum(beta, axis=-1) < B) & np.any(free, axis=-1)
    feasible |= np.all(~free, axis=-1) & (np.sum(beta, axis=-1) <= B)
    H = np.full(batch, np.inf)
    wsq = np.zeros(S.shape)
    b = np.where(free, np.nan, beta)
    f = np.zeros(S.shape)
    u_out = np.full(S.shape, np.nan)
    ok = feasible & np.any(free, axis=-1)
    H = np.where(feasible & ~np.any(free, axis=-1), 0.0, H)
    if not np.any(ok):
        return H, wsq, b, f, u_out
    # Work on the feasible problems only; non-free devices are masked out of the sum (u = -inf).
    Sa, Ua, wa, fr = S[ok], U[ok], np.broadcast_to(w, S.shape)[ok], free[ok]
    xa = np.stack([np.broadcast_to(x[0], S.shape)[ok], np.broadcast_to(x[1], S.shape)[ok]])
    Br = B_rem[ok][:, None]
    bt = beta[ok]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        start = np.log(bt * (B / np.sum(np.where(np.isfinite(bt), bt, 0.0), axis=-1, keepdims=True)))
        u = start
        if u0 is not None:
            uw = u0[ok]
            good = np.isfinite(uw) & (Sa - Ua * seconds_per_bit(np.exp(uw), xa[0], xa[1]) > 0)
            u = np.where(good, uw, start)
        u = np.where(fr, u, 0.0)
        L = None
        for _ in range(MAX_NEWTON):
            g, dg, _ = frontier(u, Sa, Ua, wa, xa)
            m = 1.0 / dg  # d u / d ln kappa (< 0)
            c = u - g * m
            m = np.where(fr, m, 0.0)
            c = np.where(fr, c, -np.inf)
            # ln kappa with sum_free exp(c + m L) = B_rem: log-sum-exp of lines, convex and decreasing in L.
            if L is None:
                L = np.median(np.where(fr, g, np.nan), axis=-1, keepdims=True)
                L = np.where(np.isfinite(L), L, 0.0)
            for _ in range(100):
                lse, wt = _logsumexp(c + m * L)
                F = lse[:, None] - np.log(Br)
                dF = np.sum(wt * m, axis=-1, keepdims=True)
                step = F / dF
                L = L - step
                if np.all(np.abs(step) <= 1e-13 * np.maximum(1.0, np.abs(L))):
                    break
            new = np.where(fr, c + m * L, 0.0)
            # stay inside the domain S > U phi(b): halve steps that leave it
            for _ in range(60):
                out = fr & ~(Sa - Ua * seconds_per_bit(np.exp(new), xa[0], xa[1]) > 0)
                if not np.any(out):
                    break
                new = np.where(out, 0.5 * (u + new), new)
            step = np.abs(new - u)
            u = new
            if np.all(step[fr] <= NEWTON_STOP):
                break
        bb = np.exp(u)
        phi = seconds_per_bit(bb, xa[0], xa[1])
        ff = np.where(fr, wa / (Sa - Ua * phi), 0.0)
    b_ok = np.where(fr, bb, bt)
    b[ok] = b_ok
    f[ok] = ff
    u_out[ok] = np.where(fr, u, np.nan)
    H[ok] = ff.sum(-1)
    wsq[ok] = np.where(fr, ff * ff / np.where(fr, wa, 1.0), 0.0)
    return H, wsq, b, f, u_out


def joint_allocate(
    a: ArrayLike, w: ArrayLike, U: ArrayLike, xu: np.ndarray, xd: np.ndarray, B: float, C: float
) -> tuple[Any, np.ndarray, np.ndarray, Any]:
    """Exact joint bandwidth and server-compute step for fixed cuts: minimise max_n a_n + w_n/f_n + U_n phi_n(b_n)
    s.t. sum b <= B, sum f <= C. a, w, U: (..., N) (leading axes are independent problems).

    Returns (objective, b, f, lower): objective = max_n T_n at the returned b and f (which use at most B and
    C), lower a lower bound on the optimum (the search's infeasible end).
    """
    a, w, U = (np.asarray(v, float) for v in (a, w, U))
    a, w, U = np.broadcast_arrays(a, w, U)
    n = a.shape[-1]
    B, C = float(B), float(C)
    x = _xstack(xu, xd, a.shape)
    # With an infinite server the problem is the bandwidth step: its optimum is infeasible here (every
    # device would need f = inf). Equal compute shares with optimal bandwidth is feasible.
    tau_lo, _, _ = allocate(a, U, xu, xd, B)
    tau_hi, _, _ = allocate(a + w * (n / C), U, xu, xd, B)
    tau_lo = np.asarray(tau_lo, float)
    tau_hi = np.asarray(tau_hi, float)
    if not np.any(w > 0):
        obj, b, low = allocate(a, U, xu, xd, B)
        return obj, b, np.zeros(a.shape), low
    last: dict = {"u": None}

    def demand(tau: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = np.asarray(tau, float)
        S = t[..., None] - a
        H, wsq, b, f, u = _least_compute(S, U, w, x, B, last["u"])
        if np.any(np.isfinite(u)):
            last["u"] = np.where(np.isfinite(u), u, last["u"] if last["u"] is not None else np.nan)
        last.update(tau=t.copy(), b=b, f=f)
        return H, -wsq.sum(-1)

    scalar = a.ndim == 1
    lo = float(tau_lo) if scalar else tau_lo
    hi = float(tau_hi) if scalar else tau_hi
    tau, lower, _ = deadline_search(demand, lo, hi, C, rtol=1e-13)
    t = np.asarray(tau, float)
    if "tau" not in last or not np.array_equal(last["tau"], t):
        demand(t)
    b, f = last["b"], last["f"]
    # Use at most the budgets (the search leaves ~1e-13 relative).
    f = f * np.minimum(1.0, C / np.sum(f, axis=-1, keepdims=True))
    b = b * np.minimum(1.0, B / np.sum(b, axis=-1, keepdims=True))
    T = round_latency(a, w, U, b, f, xu, xd)
    obj = T.max(-1)
    # Infeasible deadline search fallbacks (cannot happen for valid input) keep the feasible equal-compute point.
    return obj, b, f, lower


def round_latency(
    a: np.ndarray, w: np.ndarray, U: np.ndarray, b: np.ndarray, f: np.ndarray, xu: ArrayLike, xd: ArrayLike
) -> np.ndarray:
    """T_n = a_n + w_n / f_n + U_n phi_n(b_n) (w = 0 takes no server time at any f)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        srv = np.where(w > 0, w / f, 0.0)
        com = np.where(U > 0, U * seconds_per_bit(b, xu, xd), 0.0)
    return a + srv + com


# ---- split step, AO ----------------------------------------------------------------------------------
def best_splits_compute(
    a: np.ndarray, w: np.ndarray, U: np.ndarray, b: np.ndarray, f: np.ndarray, xu: ArrayLike, xd: ArrayLike,
    current: np.ndarray | None = None,
) -> np.ndarray:
    """Split step with b and f fixed: argmin_s a_ns + w_ns / f_n + U_ns phi_n(b_n) (a = inf: forbidden)."""
    T = round_latency(a, w, U, b[:, None], f[:, None], np.asarray(xu)[:, None], np.asarray(xd)[:, None])
    return stable_argmin(T, current)


def alternating_resources(
    a: np.ndarray, w: np.ndarray, U: np.ndarray, xu: np.ndarray, xd: np.ndarray, B: float, C: float,
    cols: np.ndarray, max_iters: int = 100,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]:
    """AO for the optimized-sharing model from the cuts ``cols``: {joint resource step; split step} until no
    cut changes. The objective never increases. Returns (cols, b, f, trace)."""
    n = len(a)
    rows = np.arange(n)
    trace = []
    for it in range(1, max_iters + 1):
        obj, b, f, _ = joint_allocate(a[rows, cols], w[rows, cols], U[rows, cols], xu, xd, B, C)
        new = best_splits_compute(a, w, U, b, f, xu, xd, current=cols)
        changed = int(np.count_nonzero(new != cols))
        trace.append({"iteration": it, "tau_s": float(obj), "step": "bandwidth and compute, then splits",
                      "changed": changed})
        if changed == 0:
            break
        cols = new
    return cols, b, f, trace


def exhaustive_resources(
    a: np.ndarray, w: np.ndarray, U: np.ndarray, allowed: np.ndarray, xu: np.ndarray, xd: np.ndarray,
    B: float, C: float, limit: int,
) -> tuple[np.ndarray, int]:
    """Every combination of allowed cuts with the joint resource step (batched). Returns (cols, count)."""
    rows = np.arange(len(a))

    def objective(S: np.ndarray) -> np.ndarray:
        return joint_allocate(a[rows, S], w[rows, S], U[rows, S], xu, xd, B, C)[0]

    _, cols, count = exhaustive_search(allowed, objective, limit, too_many_splits("'global' or 'ao'"), chunk=2048)
    return cols, count


def compute_for_bandwidth(
    a: np.ndarray, w: np.ndarray, U: np.ndarray, b: np.ndarray, xu: np.ndarray, xd: np.ndarray, C: float
) -> tuple[float, np.ndarray, np.ndarray]:
    """Best cuts and optimal compute for fixed bandwidths b (the equal_bandwidth baseline): the least tau with
    sum_n min_s w_ns / (tau - a_ns - U_ns phi_n(b_n)) <= C. Exact. Returns (tau, cols, f)."""
    c = a + U * seconds_per_bit(b, xu, xd)[:, None]  # time without the server
    with np.errstate(divide="ignore", invalid="ignore"):
        def need(tau: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            slack = tau - c
            fl = np.where(w > 0, np.where(slack > 0, w / slack, np.inf), np.where(slack >= 0, 0.0, np.inf))
            j = np.argmin(fl, axis=1)
            rows = np.arange(len(c))
            fj, sj, wj = fl[rows, j], slack[rows, j], w[rows, j]
            return fj, j, np.where(wj > 0, -wj / sj**2, 0.0)

        def demand(tau: float) -> tuple[float, float]:
            fj, _, d = need(tau)
            return fj.sum(), d.sum()

        n = len(c)
        lo = float(np.max(np.min(c, axis=1)))
        hi = float(np.max(np.min(c + w * (n / C), axis=1)))
        tau, _, _ = deadline_search(demand, lo, hi, C, rtol=1e-13)
        fj, j, _ = need(tau)
    f = fj * min(1.0, C / fj.sum())
    return float(tau), j, f
