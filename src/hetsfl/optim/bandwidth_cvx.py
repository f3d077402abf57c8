"""Reference bandwidth step as a convex program (cvxpy), used to cross-check ``bandwidth.allocate``.

r(b) = b log2(1 + x/b) = -rel_entr(b, b + x) / ln 2 is concave, and inv_pos of a concave expression is
convex, so  min tau  s.t.  A_n + U_n (1/r_u(b_n) + 1/r_d(b_n)) <= tau,  sum b <= B,  b >= 0  is DCP.
Bandwidth is scaled by B so that the solver sees numbers near one.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np

from hetsfl.system.channel import LN2

SOLVER_OPTIONS = {
    "CLARABEL": {"tol_gap_abs": 1e-9, "tol_gap_rel": 1e-9, "tol_feas": 1e-9, "max_iter": 400},
}


HIGH_SNR = 1e6


def _scaled_rate(frac: cp.Expression, q: np.ndarray) -> cp.Expression:
    """f ln(1 + q/f) for f = b/B, q = x/B, concave in f.

    For q >= 1e6 (a device whose SNR at the whole band exceeds 60 dB) the exponential cone of
    -rel_entr(f, f + q) holds numbers near q that stop interior-point solvers; there we use
    f ln q + entr(f) = f ln(q/f), which is below the exact value by f ln(1 + f/q) <= f^2/q, a relative
    1e-7 at most since f <= 1.
    """
    if q.min() >= HIGH_SNR:
        return cp.multiply(np.log(q), frac) + cp.entr(frac)
    return -cp.rel_entr(frac, frac + q)


def allocate_cvxpy(
    A: np.ndarray, U: np.ndarray, xu: np.ndarray, xd: np.ndarray, total_bandwidth: float, solver: str = "CLARABEL"
) -> tuple[float, np.ndarray, float]:
    """Same contract as ``bandwidth.allocate`` for one problem (1-D A and U); objective = the solver's tau."""
    A, U = np.asarray(A, float), np.asarray(U, float)
    B = float(total_bandwidth)
    n = len(A)
    frac = cp.Variable(n, nonneg=True)
    tau = cp.Variable()
    qu, qd = np.asarray(xu, float) / B, np.asarray(xd, float) / B
    coef = U * LN2 / B
    cons = [cp.sum(frac) <= 1]
    # Each device's constraint uses the formulation that suits its SNR (see _scaled_rate); devices are
    # grouped so that no badly scaled cone is built at all.
    groups = {(bool(u), bool(d)) for u, d in zip(qu >= HIGH_SNR, qd >= HIGH_SNR, strict=True)}
    for hi_u, hi_d in groups:
        idx = np.flatnonzero(((qu >= HIGH_SNR) == hi_u) & ((qd >= HIGH_SNR) == hi_d))
        f = frac[idx]
        rate_u = _scaled_rate(f, qu[idx])  # = r_u(b) ln2 / B
        rate_d = _scaled_rate(f, qd[idx])
        cons.append(A[idx] + cp.multiply(coef[idx], cp.inv_pos(rate_u) + cp.inv_pos(rate_d)) <= tau)
    prob = cp.Problem(cp.Minimize(tau), cons)
    prob.solve(solver=solver, **SOLVER_OPTIONS.get(solver, {}))
    if prob.status not in ("optimal", "optimal_inaccurate") or frac.value is None:
        raise cp.error.SolverError(f"cvxpy bandwidth step failed with {solver}: status {prob.status}")
    b = np.maximum(frac.value, 0.0) * B
    # The solver's optimal value is accurate; re-evaluating T at its b is not (a bandwidth-starved device
    # turns a 1e-9 B error in b_n into a large error in T_n), so the objective is tau itself.
    objective = float(tau.value)  # type: ignore[arg-type]  # solved: cvxpy's value is set
    return objective, b, objective
