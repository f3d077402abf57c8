"""Tidy tables of solutions: one row per scenario x method."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pandas as pd

NUMERIC_COLUMNS = ("objective_s", "total_bandwidth_hz", "mean_compute_s", "mean_uplink_s", "mean_downlink_s",
                   "slowest_compute_s", "slowest_uplink_s", "slowest_downlink_s", "mean_split")


def solution_row(solution: dict, scenario: str, extra: dict | None = None) -> dict:
    """Objective, per-term breakdown (mean over devices and for the slowest device), split histogram.

    An infeasible solution (status "infeasible") is a row too: status and reason filled in, the numbers NaN,
    so tables keep every scenario x method and figures can skip it with a note.
    """
    status = solution.get("status", "feasible")
    if status == "infeasible":
        row = {"scenario": scenario, "method": solution["method"], "status": status,
               **{k: float("nan") for k in NUMERIC_COLUMNS}, "num_devices": None, "slowest_device": None,
               "splits_hist": None, "iterations": 0, "solve_time_s": solution["solve_time_s"],
               "reason": solution.get("reason", "")}
        row.update(extra or {})
        return row
    per = pd.DataFrame(solution["per_device"])
    slowest = per.loc[per["latency_s"].idxmax()]
    hist = Counter(int(s) for s in solution["splits"])
    row = {
        "scenario": scenario,
        "method": solution["method"],
        "status": status,
        "objective_s": solution["objective_s"],
        "num_devices": len(per),
        "total_bandwidth_hz": float(np.sum(solution["bandwidth_hz"])) if not solution.get("sequential") else float(
            solution["bandwidth_hz"][0]),
        "mean_compute_s": per["compute_s"].mean(),
        "mean_uplink_s": per["uplink_s"].mean(),
        "mean_downlink_s": per["downlink_s"].mean(),
        "slowest_device": slowest["id"],
        "slowest_compute_s": slowest["compute_s"],
        "slowest_uplink_s": slowest["uplink_s"],
        "slowest_downlink_s": slowest["downlink_s"],
        "splits_hist": json.dumps(dict(sorted(hist.items()))),
        "mean_split": float(np.mean(solution["splits"])),
        "iterations": max(len(solution.get("iterations", [])) - 1, 0),
        "solve_time_s": solution["solve_time_s"],
        "reason": "",
    }
    row.update(extra or {})
    return row


def solutions_table(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    first = [c for c in ("sweep", "value", "scenario", "method") if c in frame.columns]
    return frame[first + [c for c in frame.columns if c not in first]]
