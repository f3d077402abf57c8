"""The lower bound of the global method under `sharing: optimized` (issue 10, docs/model.md): the Lagrangian
dual with a price nu on server compute (and 1 on bandwidth), a per-device best cut inside. With discrete cuts
a duality gap may remain. The frontier it uses is optim/resources.py's.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from hetsfl.optim.bandwidth import least_bandwidth
from hetsfl.optim.resources import NEWTON_STOP, frontier
from hetsfl.system.latency import seconds_per_bit

__all__ = ["dual_lower_bound", "dual_value"]


def _device_costs(
    S: np.ndarray, U: np.ndarray, w: np.ndarray, x: np.ndarray, kappa: float, u0: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """min_{b,f} b + f / kappa s.t. w/f + U phi(b) <= S, elementwise (no coupling): the root of g(ln b) = ln kappa
    by safeguarded Newton. Returns (cost, b, f, u); cost = inf where S <= U phi(inf)."""
    beta, _ = least_bandwidth(S, U, x[0], x[1])
    lnk = np.log(kappa)
    ok = np.isfinite(beta) & (w > 0)
    cost = np.where(np.isfinite(beta), beta, np.inf)  # w = 0: the least bandwidth, no compute
    b_out = np.where(np.isfinite(beta), beta, np.inf)
    f_out = np.zeros(S.shape)
    u_out = np.full(S.shape, np.nan)
    if not np.any(ok):
        return cost, b_out, f_out, u_out
    Sa, Ua, wa = S[ok], np.broadcast_to(U, S.shape)[ok], np.broadcast_to(w, S.shape)[ok]
    xa = np.stack([np.broadcast_to(x[0], S.shape)[ok], np.broadcast_to(x[1], S.shape)[ok]])
    lk = np.broadcast_to(lnk, S.shape)[ok]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        lo = np.log(beta[ok])
        hi = np.full(lo.shape, np.inf)
        u = lo + np.log(2.0)
        if u0 is not None:
            w0 = u0[ok]
            u = np.where(np.isfinite(w0) & (w0 > lo), w0, u)
        for _ in range(200):
            g, dg, _ = frontier(u, Sa, Ua, wa, xa)
            F = g - lk
            lo = np.where(F > 0, np.maximum(lo, u), lo)
            hi = np.where(F < 0, np.minimum(hi, u), hi)
            new = u - F / dg
            bad = ~((new > lo) & (new < hi))
            new = np.where(bad, np.where(np.isfinite(hi), 0.5 * (lo + hi), u + 1.0), new)
            new = np.where(F == 0, u, new)
            step = np.abs(new - u)
            u = new
            if np.all(step <= NEWTON_STOP * np.maximum(1.0, np.abs(u))):
                break
        b = np.exp(u)
        slack = Sa - Ua * seconds_per_bit(b, xa[0], xa[1])
        f = wa / slack
    cost[ok] = b + f / np.exp(lk)
    b_out[ok] = b
    f_out[ok] = f
    u_out[ok] = u
    return cost, b_out, f_out, u_out


def dual_value(
    tau: float, nu: float, a: np.ndarray, w: np.ndarray, U: np.ndarray, xu: ArrayLike, xd: ArrayLike,
    B: float, C: float, u0: np.ndarray | None = None,
) -> tuple[float, np.ndarray, float, np.ndarray]:
    """D(tau, nu) = sum_n min_s c_ns - B - nu C with c_ns = min b + nu f over cut s's deadline set; D > 0
    proves tau infeasible. Returns (D, cols, sum of the chosen f, u)."""
    S = tau - a
    x = np.stack([np.broadcast_to(np.asarray(xu, float)[:, None], a.shape),
                  np.broadcast_to(np.asarray(xd, float)[:, None], a.shape)])
    cost, b, f, u = _device_costs(S, U, w, x, 1.0 / nu, u0)
    cost = np.where(np.isfinite(a), cost, np.inf)
    j = np.argmin(cost, axis=1)
    rows = np.arange(len(a))
    cj = cost[rows, j]
    D = float(np.sum(cj) - B - nu * C)
    return D, j, float(np.sum(f[rows, j])), u


def dual_lower_bound(
    a: np.ndarray, w: np.ndarray, U: np.ndarray, xu: np.ndarray, xd: np.ndarray, B: float, C: float,
    tau_hi: float, tol: float = 1e-9,
) -> tuple[float, list[np.ndarray], float]:
    """Largest tau certified infeasible by the Lagrangian dual: bisection on tau in [tau_lo, tau_hi] (tau_lo the
    optimum with an infinite server, infeasible) and, for each tau, maximisation of the concave D(tau, .) over
    ln nu by bisection on its supergradient sum_n f_n - C. Returns (lower, the last distinct cut choices seen at
    the smallest deadline not certified (candidates for a primal solution), the price there)."""
    from hetsfl.optim.joint import global_optimum

    tau_lo, _, _, _ = global_optimum(a, U, xu, xd, B)
    lo, hi = float(tau_lo), float(tau_hi)
    nu0 = B / C
    cands, nu_best = [], nu0
    u = None
    while hi - lo > tol * hi:
        tau = 0.5 * (lo + hi)
        l_lo, l_hi = np.log(nu0) - 40.0, np.log(nu0) + 40.0
        certified = False
        seen: list = []
        for _ in range(80):
            lnu = 0.5 * (l_lo + l_hi)
            nu = float(np.exp(lnu))
            D, cols, fsum, u = dual_value(tau, nu, a, w, U, xu, xd, B, C, u)
            if D > 1e-9 * (B + nu * C):
                certified = True
                break
            if not any(np.array_equal(cols, c) for c in seen):
                seen.append(cols)
            if fsum > C:
                l_lo = lnu
            else:
                l_hi = lnu
            if l_hi - l_lo < 1e-10:
                break
        if certified:
            lo = tau
        else:
            hi = tau
            cands, nu_best = seen[-4:], nu
    return lo, cands, nu_best
