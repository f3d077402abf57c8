"""Solution documents (schemas/solution.schema.json): evaluating an assignment of splits and bandwidth with
the latency model, the document of an infeasible method, and the checks on a result (finite, deadline met,
feasible before training)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from numpy.typing import ArrayLike

from hetsfl.errors import ConfigError, InfeasibleError
from hetsfl.optim.problem import Problem
from hetsfl.system.latency import latency, latency_terms


def infeasible_solution(problem: Problem, method: str, reason: str, devices: Iterable[str] = (),
                        solve_time: float = 0.0) -> dict:
    """The solution document of a method that cannot run on ``problem`` (schemas/solution.schema.json)."""
    return {
        "method": method,
        "status": "infeasible",
        "reason": reason,
        "infeasible_devices": list(devices),
        "objective_s": None,
        "splits": [],
        "bandwidth_hz": [],
        "per_device": [],
        "iterations": [],
        "solve_time_s": float(solve_time),
        "sequential": method == "sl",
        "meta": dict(problem.meta),
    }


def is_feasible(solution: dict) -> bool:
    """True unless the solution says it is infeasible (files written before the status field are feasible)."""
    return solution.get("status", "feasible") != "infeasible"


def require_feasible(solution: dict, source: str = "solution") -> dict:
    """Return ``solution`` if it is feasible; else raise InfeasibleError with its reason (for callers such as
    the training stage, which cannot run a method that has no assignment)."""
    if not is_feasible(solution):
        raise InfeasibleError(
            f"{source}: method {solution.get('method')!r} is infeasible in this problem, so it cannot run: "
            f"{solution.get('reason', 'no reason recorded')}",
            solution.get("infeasible_devices", ()),
        )
    return solution


def check_finite(problem: Problem, method: str, columns: dict[str, np.ndarray]) -> None:
    """Raise ConfigError naming the device if a per-device result is not a finite number (a numerical failure
    that Problem.check_derived did not foresee), instead of failing later in the JSON writer."""
    for name, values in columns.items():
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            i = int(bad[0])
            more = f" (and {bad.size - 1} more device(s))" if bad.size > 1 else ""
            raise ConfigError(
                f"numerical failure: {method} gave {name} = {values[i]} for device {problem.device_ids[i]}{more}; "
                "check that device's numbers in the problem file (channel gain, FLOPs, sizes)"
            )


def build_solution(problem: Problem, method: str, splits: ArrayLike, bandwidth: ArrayLike,
                   iterations: list[dict], solve_time: float, sequential: bool = False) -> dict:
    """Evaluate a split/bandwidth assignment with the latency model and package it as a solution.

    Per device: compute_s (device and server work, per-batch costs included), uplink_s, downlink_s and, when the
    problem has a per-message latency, message_s (m(s) l); latency_s is their sum."""
    p = problem
    rows = np.arange(p.num_devices)
    splits = np.asarray(splits, dtype=int)
    A, U = p.terms(sequential=sequential, messages=False)
    a, u = A[rows, splits - 1], U[rows, splits - 1]
    # the per-message term apart from compute (none without one: the solution has the fields it always had)
    messages = p.fixed_costs().message_s[rows, splits - 1] if p.per_message_s else None
    terms = latency_terms(a, u, np.asarray(bandwidth, float), p.xu, p.xd, messages)
    lat = terms["latency_s"]
    bandwidth = np.asarray(bandwidth, dtype=float)
    check_finite(p, method, {"bandwidth_hz": bandwidth, "bits_up": u, **terms})
    # Columns as Python lists (tolist converts once, in C), then one record per device.
    columns = {
        "id": list(p.device_ids),
        "split": splits.tolist(),
        "bandwidth_hz": bandwidth.tolist(),
        "latency_s": np.asarray(lat, dtype=float).tolist(),
        "compute_s": np.asarray(terms["compute_s"], dtype=float).tolist(),
        "uplink_s": np.asarray(terms["uplink_s"], dtype=float).tolist(),
        "downlink_s": np.asarray(terms["downlink_s"], dtype=float).tolist(),
        "bits_up": np.asarray(u, dtype=float).tolist(),
    }
    if "message_s" in terms:
        columns["message_s"] = np.asarray(terms["message_s"], dtype=float).tolist()
    columns["bits_down"] = columns["bits_up"]
    keys = list(columns)
    per_device = [dict(zip(keys, values, strict=True)) for values in zip(*columns.values(), strict=True)]
    return {
        "method": method,
        "status": "feasible",
        "objective_s": float(lat.sum() if sequential else lat.max()),
        "splits": list(columns["split"]),
        "bandwidth_hz": list(columns["bandwidth_hz"]),
        "per_device": per_device,
        "iterations": iterations,
        "solve_time_s": float(solve_time),
        "sequential": bool(sequential),
        "meta": dict(p.meta),
    }


def check_deadline(problem: Problem, solution: dict) -> None:
    """Raise InfeasibleError, naming devices, when the problem's deadline is missed."""
    p = problem
    if p.deadline is None or solution["objective_s"] <= p.deadline:
        return
    A, U = p.terms(sequential=solution.get("sequential", False))
    L = p.num_layers
    if solution["method"] == "fl":
        allowed = np.zeros(A.shape, dtype=bool)
        allowed[:, L - 1] = True
    else:
        allowed = np.concatenate([p.allowed(), np.zeros((p.num_devices, 1), dtype=bool)], axis=1)
    whole_band = latency(A, U, p.total_bandwidth, p.xu[:, None], p.xd[:, None])
    alone = np.min(np.where(allowed, whole_band, np.inf), axis=1)
    hopeless = [p.device_ids[i] for i in np.flatnonzero(alone > p.deadline)]
    if hopeless:
        why = (f"device(s) {', '.join(map(str, hopeless[:20]))} cannot finish a round within {p.deadline:g} s even "
               "with the whole band and their best split")
    else:
        slow = np.argsort([-d["latency_s"] for d in solution["per_device"]])[:5]
        why = (f"the devices cannot all finish within {p.deadline:g} s with a total band of {p.total_bandwidth:g} Hz; "
               f"the slowest under {solution['method']} are " + ", ".join(
                   f"{solution['per_device'][i]['id']} ({solution['per_device'][i]['latency_s']:.4g} s)" for i in slow))
    raise InfeasibleError(f"infeasible: best round latency {solution['objective_s']:.6g} s > deadline_s; {why}",
                          hopeless)
