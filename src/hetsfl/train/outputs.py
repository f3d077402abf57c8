"""The outputs of a training run in its ``out_dir``, and the per-round metrics row:

- ``metrics.csv``: round (1-based), test_acc, test_loss, train_loss, round_latency_s, sim_time_s,
  bits_up_total, bits_down_total, cum_bits_up, cum_bits_down. Deterministic: byte-identical for the same
  spec, data and seed (also across a resume) on the same machine and torch build.
- ``timing.csv``: round, wall_time_s, train_time_s, eval_time_s, samples_per_s (training samples per
  second of training time). Wall-clock, so not reproducible.
- ``bits.csv``: round, device, bits_up, bits_down.
- ``final_model.pt``: state_dict of the final global model (tensors on the CPU).
- ``summary.json``: the spec, final accuracy and loss, total simulated time and wall time; written last.
- ``checkpoint.pt``: written every ``checkpoint_every`` rounds and at the end (and at ``stop_after_round``);
  see :mod:`hetsfl.train.checkpoint`.

Every file is written to a temporary name in ``out_dir`` and renamed into place (``os.replace``), so a
killed job leaves either the old file or the new one, never a partial one. metrics/timing/bits,
final_model and summary are written only when the run completes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch

from hetsfl.io import write_json, write_table
from hetsfl.train.checkpoint import torch_save
from hetsfl.train.spec import TrainSpec

__all__ = [
    "BITS_COLUMNS",
    "METRICS_COLUMNS",
    "OUTPUT_NAMES",
    "TIMING_COLUMNS",
    "metrics_row",
    "remove_outputs",
    "summary",
    "write_outputs",
]

METRICS_COLUMNS = [
    "round",
    "test_acc",
    "test_loss",
    "train_loss",
    "round_latency_s",
    "sim_time_s",
    "bits_up_total",
    "bits_down_total",
    "cum_bits_up",
    "cum_bits_down",
]
TIMING_COLUMNS = ["round", "wall_time_s", "train_time_s", "eval_time_s", "samples_per_s"]
BITS_COLUMNS = ["round", "device", "bits_up", "bits_down"]
OUTPUT_NAMES = ("summary.json", "metrics.csv", "timing.csv", "bits.csv", "final_model.pt")  # summary first


def metrics_row(
    r: int, test_acc: float, test_loss: float, train_loss: float, latency_s: float, bits_up_total: float,
    bits_down_total: float, prev: dict[str, Any] | None,
) -> dict[str, Any]:
    """The metrics.csv row of round ``r`` (0-based) after the row ``prev`` of the round before (None: first)."""
    if prev is None:
        prev = {"sim_time_s": 0.0, "cum_bits_up": 0.0, "cum_bits_down": 0.0}
    up, down = float(bits_up_total), float(bits_down_total)
    return {
        "round": r + 1,
        "test_acc": test_acc,
        "test_loss": test_loss,
        "train_loss": train_loss,
        "round_latency_s": latency_s,
        "sim_time_s": prev["sim_time_s"] + latency_s,
        "bits_up_total": up,
        "bits_down_total": down,
        "cum_bits_up": prev["cum_bits_up"] + up,
        "cum_bits_down": prev["cum_bits_down"] + down,
    }


def remove_outputs(out: Path) -> None:
    """Delete the outputs of an earlier run in ``out`` (a run that starts must not leave them standing)."""
    for name in OUTPUT_NAMES:
        (out / name).unlink(missing_ok=True)


def write_outputs(
    out: Path, metrics: list[dict], timing: list[dict], bits: list[dict], final_state: dict[str, torch.Tensor],
    summary: dict[str, Any],
) -> pd.DataFrame:
    """metrics, timing, bits, the final model and (last) summary.json; returns the metrics."""
    df = pd.DataFrame(metrics, columns=METRICS_COLUMNS)
    write_table(out / "metrics.csv", df)
    write_table(out / "timing.csv", pd.DataFrame(timing, columns=TIMING_COLUMNS))
    write_table(out / "bits.csv", pd.DataFrame(bits, columns=BITS_COLUMNS))
    torch_save(final_state, out / "final_model.pt")
    write_json(out / "summary.json", summary, indent=2, sort_keys=True, allow_nan=True)
    return df


def summary(
    spec: TrainSpec, device: torch.device, metrics: list[dict], timing: list[dict], num_devices: int,
    num_units: int,
) -> dict[str, Any]:
    """The content of summary.json after the rounds ``metrics`` (with their ``timing``)."""
    last = metrics[-1]
    return {
        "spec": spec.to_dict(),
        "device": str(device),
        "rounds_completed": len(metrics),
        "final_test_acc": last["test_acc"],
        "final_test_loss": last["test_loss"],
        "final_train_loss": last["train_loss"],
        "best_test_acc": max(m["test_acc"] for m in metrics),
        "total_sim_time_s": last["sim_time_s"],
        "total_bits_up": last["cum_bits_up"],
        "total_bits_down": last["cum_bits_down"],
        "wall_time_s": float(sum(t["wall_time_s"] for t in timing)),
        "train_time_s": float(sum(t["train_time_s"] for t in timing)),
        "num_devices": num_devices,
        "num_units": num_units,
        "torch_version": torch.__version__,
    }
