"""Reference bandwidth step as a convex program (cvxpy), used to cross-check ``bandwidth.allocate``.

r(b) = b log2(1 + x/b) = -rel_entr(b, b + x) / ln 2 is concave, and inv_pos of a concave expression is
convex, so  min tau  s.t.  A_n + U_n (1/r_u(b_n) + 1/r_d(b_n)) <= tau,  sum b <= B,  b >= 0  is DCP.
Bandwidth is scaled by B so that the solver sees numbers near one.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np

from hetsfl.channel import LN2


def allocate_cvxpy(
    A: np.ndarray, U: np.ndarray, xu: np.ndarray, xd: np.ndarray, total_bandwidth: float, solver: str = "CLARABEL"
) -> tuple[float, np.ndarray, float]:
    """Same contract as ``bandwidth.allocate`` for one problem (1-D A and U); objective = the solver's tau."""
    A, U = np.asarray(A, float), np.asarray(U, float)
    B = float(total_bandwidth)
    n = len(A)
    frac = cp.Variable(n, nonneg=True)
    tau = cp.Variable()
    rate_u = -cp.rel_entr(frac, frac + np.asarray(xu) / B)  # = r_u(b) ln2 / B
    rate_d = -cp.rel_entr(frac, frac + np.asarray(xd) / B)
    coef = U * LN2 / B
    cons = [A + cp.multiply(coef, cp.inv_pos(rate_u) + cp.inv_pos(rate_d)) <= tau, cp.sum(frac) <= 1]
    prob = cp.Problem(cp.Minimize(tau), cons)
    opts = {"tol_gap_abs": 1e-9, "tol_gap_rel": 1e-9, "tol_feas": 1e-9, "max_iter": 400} if solver == "CLARABEL" else {}
    prob.solve(solver=solver, **opts)
    if prob.status not in ("optimal", "optimal_inaccurate") or frac.value is None:
        raise RuntimeError(f"cvxpy bandwidth step failed: status {prob.status}")
    b = np.maximum(frac.value, 0.0) * B
    # The solver's optimal value is accurate; re-evaluating T at its b is not (a bandwidth-starved device
    # turns a 1e-9 B error in b_n into a large error in T_n), so the objective is tau itself.
    return float(tau.value), b, float(tau.value)
