"""Tidy tables of solutions: one row per scenario x method."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pandas as pd


def solution_row(solution: dict, scenario: str, extra: dict | None = None) -> dict:
    """Objective, per-term breakdown (mean over devices and for the slowest device), split histogram."""
    per = pd.DataFrame(solution["per_device"])
    slowest = per.loc[per["latency_s"].idxmax()]
    hist = Counter(int(s) for s in solution["splits"])
    row = {
        "scenario": scenario,
        "method": solution["method"],
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
    }
    row.update(extra or {})
    return row


def solutions_table(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    first = [c for c in ("sweep", "value", "scenario", "method") if c in frame.columns]
    return frame[first + [c for c in frame.columns if c not in first]]
