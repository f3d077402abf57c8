"""Output tables of a distributed run, the checkpoint, and their columns.

- ``metrics.csv``: the engine's columns (:data:`METRICS_COLUMNS`), same meaning: test accuracy and loss of
  the global model after each round (evaluated on the server), mean training loss, the spec's modelled
  round latency and the modelled bits (32 (K D a(s) + W(s)) per device and direction).
- ``measured_devices.csv`` (:data:`DEVICE_COLUMNS`), one row per round and device, seconds and bytes as
  measured. They map onto the latency model T_n = A_n + U_n / r_u + V_n / r_d:

  - ``round_s``: T_n, on the server's clock, from the moment the server starts sending device n its model
    to the moment device n's upload of the trained model is complete at the server (SL: device n's turn);
  - ``device_compute_s`` + ``server_compute_s`` = ``compute_s``: A_n (device: forward, backward and SGD
    steps of its units; server: the same for the server-side units of this device, in its thread, so it
    includes contention with the other devices' server work); ``device_cpu_s`` / ``server_cpu_s``: the
    CPU time of the computing thread in those blocks (under emulation's pacing the wall time is about the CPU
    time / the pace q; more if the host could not keep up);
  - ``up_bytes`` (U_n / 8, payload bytes: smashed data with int64 labels, the model; FL: with K float32
    losses; SL: with momentum buffers) and ``up_s`` (its time on the link, timed at the server from the
    header's arrival to the payload's completion), ``up_msgs`` messages (each also carries a 32-byte header);
  - ``down_bytes`` (V_n / 8: the model, the gradients) and ``down_s`` (timed at the device), ``down_msgs``;
  - ``up_latency_s`` / ``down_latency_s``: the sum over the messages of their headers' one-way latency
    (receiver's wall clock at arrival minus sender's at sending): the per-message cost the model has no
    term for; only meaningful when sender and receiver share a clock (one host, e.g. emulation);
  - ``other_s`` = round_s - compute_s - up_s - down_s: what the model does not have (per-message latency,
    packing, scheduling, waiting for a shared server);
  - ``wait_s``: the device's time blocked before a gradient began to arrive (contains the uplink, the
    server's compute and queueing, so it overlaps the terms above); ``send_s``: time the device spent in
    send calls; ``idle_s``: the device's wait for its round's model (evaluation, checkpoint, SL turns).
- ``measured_rounds.csv`` (:data:`ROUND_COLUMNS`), one row per round, server clock: ``train_s`` from the
  first model send to the last upload, ``aggregate_s``, ``wall_s`` = train + aggregate, ``eval_s``,
  samples and samples per second of ``train_s``, bytes, and the max and sum of the
  devices' ``round_s`` (the model's round time is max_n T_n for FL/SFL and sum_n T_n for SL).
- ``final_model.pt`` (state_dict of the global model), ``summary.json``.
- ``checkpoint.pt``: at round boundaries (every ``checkpoint_every`` rounds, the last round and
  ``stop_after_round``): global model, SL optimiser state, all rows so far.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pandas as pd
import torch

from hetsfl.io import write_bytes
from hetsfl.io import write_json as io_write_json
from hetsfl.runtime.errors import RunConfigError
from hetsfl.train.outputs import METRICS_COLUMNS as ENGINE_METRICS_COLUMNS

__all__ = [
    "CHECKPOINT_NAME",
    "DEVICE_COLUMNS",
    "METRICS_COLUMNS",
    "OUTPUT_NAMES",
    "ROUND_COLUMNS",
    "check_resumable",
    "checkpoint_content",
    "read_checkpoint",
    "write_csv",
    "write_json",
    "write_outputs",
    "write_torch",
]

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = 1
METRICS_COLUMNS = ENGINE_METRICS_COLUMNS  # the engine's columns, the same meaning
DEVICE_COLUMNS = [
    "round",
    "device",
    "rank",
    "host",
    "method",
    "split",
    "local_iters",
    "batch_size",
    "samples",
    "round_s",
    "compute_s",
    "device_compute_s",
    "server_compute_s",
    "device_cpu_s",
    "server_cpu_s",
    "up_bytes",
    "up_s",
    "up_msgs",
    "up_latency_s",
    "down_bytes",
    "down_s",
    "down_msgs",
    "down_latency_s",
    "other_s",
    "wait_s",
    "send_s",
    "idle_s",
]
ROUND_COLUMNS = [
    "round",
    "method",
    "wall_s",
    "train_s",
    "aggregate_s",
    "eval_s",
    "samples",
    "samples_per_s",
    "up_bytes",
    "down_bytes",
    "max_round_s",
    "sum_round_s",
]
OUTPUT_NAMES = (
    "summary.json",
    "metrics.csv",
    "measured_devices.csv",
    "measured_rounds.csv",
    "final_model.pt",
)  # summary first: it marks a complete run


def write_torch(obj: object, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes(path, buf.getvalue())


def write_csv(rows: list[dict], columns: list[str], path: Path) -> None:
    df = pd.DataFrame(rows, columns=columns)
    write_bytes(path, df.to_csv(index=False, lineterminator="\n").encode())


def write_json(obj: object, path: Path) -> None:
    io_write_json(path, obj, indent=2, sort_keys=True, allow_nan=True)


def read_checkpoint(path: str | os.PathLike) -> dict | None:
    """The checkpoint's content, or None if there is none (errors are the caller's to phrase)."""
    path = Path(path)
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


# spec fields that may differ between a checkpoint and the run that resumes it
RESUME_FREE_FIELDS = ("rounds", "checkpoint_every")


def _comparable(spec_dict: dict) -> dict:
    return {k: v for k, v in spec_dict.items() if k not in RESUME_FREE_FIELDS}


def check_resumable(ckpt: object, path: Path, spec: dict, data_sha256: str, num_devices: int, rounds: int) -> None:
    """RunConfigError saying what differs unless ``ckpt`` is a runtime checkpoint of this run (same spec up to
    RESUME_FREE_FIELDS, data and devices) at most ``rounds`` rounds in."""
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT or ckpt.get("kind") != "runtime":
        raise RunConfigError(f"checkpoint {path} is not a runtime checkpoint of this version; delete it")
    old, new = _comparable(ckpt["spec"]), _comparable(spec)
    if old != new or ckpt["data_sha256"] != data_sha256 or ckpt["num_devices"] != num_devices:
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        what = f"spec fields {diff}" if diff else "the data or partition"
        raise RunConfigError(
            f"checkpoint {path} belongs to a different run ({what} differ); delete it or use another run dir"
        )
    if ckpt["round"] > rounds:
        raise RunConfigError(f"checkpoint {path} is at round {ckpt['round']}, beyond the requested {rounds} rounds")


def checkpoint_content(
    spec: dict, data_sha256: str, num_devices: int, done: int, model: torch.nn.Module, method_state: dict,
    metrics: list[dict], devices: list[dict], rounds: list[dict],
) -> dict:
    """What checkpoint.pt holds after round ``done``: the run's identity, the global model, the method's
    state (SL: server optimiser, client momentum) and all rows so far."""
    return {
        "format": CHECKPOINT_FORMAT,
        "kind": "runtime",
        "spec": spec,
        "data_sha256": data_sha256,
        "num_devices": num_devices,
        "round": done,
        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "method_state": method_state,
        "metrics": metrics,
        "devices": devices,
        "rounds": rounds,
    }


def write_outputs(
    out: Path, metrics: list[dict], devices: list[dict], rounds: list[dict], model: torch.nn.Module, summary: dict
) -> None:
    """The outputs of a complete run (OUTPUT_NAMES), summary.json last: it marks a complete run."""
    write_csv(metrics, METRICS_COLUMNS, out / "metrics.csv")
    write_csv(devices, DEVICE_COLUMNS, out / "measured_devices.csv")
    write_csv(rounds, ROUND_COLUMNS, out / "measured_rounds.csv")
    write_torch({k: v.detach().clone() for k, v in model.state_dict().items()}, out / "final_model.pt")
    write_json(summary, out / "summary.json")
