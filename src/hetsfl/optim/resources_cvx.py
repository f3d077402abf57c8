"""Reference joint bandwidth and server-compute step as a convex program (cvxpy), to cross-check
``resources.joint_allocate``.

min tau s.t. a_n + w_n inv_pos(f_n) + U_n (inv_pos(r_u(b_n)) + inv_pos(r_d(b_n))) <= tau, sum b <= B, sum f <= C
is DCP: r(b) = -rel_entr(b, b + x) / ln 2 is concave, inv_pos of a concave expression is convex. Bandwidth and
compute are scaled by B and C so that the solver sees numbers near one.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
from numpy.typing import ArrayLike

from hetsfl.optim.bandwidth_cvx import HIGH_SNR, SOLVER_OPTIONS, _scaled_rate
from hetsfl.system.channel import LN2


def joint_allocate_cvxpy(
    a: ArrayLike, w: ArrayLike, U: ArrayLike, xu: ArrayLike, xd: ArrayLike, B: float, C: float,
    solver: str = "CLARABEL",
) -> tuple[float, np.ndarray, np.ndarray, float]:
    """Same contract as ``resources.joint_allocate`` for one problem (1-D a, w, U); objective = the solver's tau."""
    a, w, U = (np.asarray(v, float) for v in (a, w, U))
    n = len(a)
    fb = cp.Variable(n, nonneg=True)
    ff = cp.Variable(n, nonneg=True)
    tau = cp.Variable()
    qu, qd = np.asarray(xu, float) / B, np.asarray(xd, float) / B
    coef = U * LN2 / B
    cons = [cp.sum(fb) <= 1, cp.sum(ff) <= 1]
    # Devices are grouped by SNR so that each uses the rate formulation that suits it (bandwidth_cvx).
    groups = {(bool(u), bool(d)) for u, d in zip(qu >= HIGH_SNR, qd >= HIGH_SNR, strict=True)}
    for hi_u, hi_d in groups:
        i = np.flatnonzero(((qu >= HIGH_SNR) == hi_u) & ((qd >= HIGH_SNR) == hi_d))
        srv = [j for j in i if w[j] > 0]
        server: cp.Expression | float = 0.0
        if len(srv) == len(i):
            server = cp.multiply(w[i] / C, cp.inv_pos(ff[i]))
        elif srv:
            raise ValueError("mixed w = 0 and w > 0 within an SNR group: not needed by the tests")
        comm = cp.multiply(coef[i], cp.inv_pos(_scaled_rate(fb[i], qu[i])) + cp.inv_pos(_scaled_rate(fb[i], qd[i])))
        cons.append(a[i] + server + comm <= tau)
    prob = cp.Problem(cp.Minimize(tau), cons)
    prob.solve(solver=solver, **SOLVER_OPTIONS.get(solver, {}))
    if prob.status not in ("optimal", "optimal_inaccurate") or fb.value is None:
        raise cp.error.SolverError(f"cvxpy joint step failed with {solver}: status {prob.status}")
    fb_value, ff_value, objective = fb.value, ff.value, float(tau.value)  # type: ignore[arg-type]
    assert fb_value is not None and ff_value is not None
    return objective, np.maximum(fb_value, 0) * B, np.maximum(ff_value, 0) * C, objective
