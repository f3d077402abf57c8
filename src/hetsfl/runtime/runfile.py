"""A run directory: what every rank reads (run.json, data.pt) and where the outputs and logs go.

``run.json``: ``{"format", "spec" (TrainSpec.to_dict()), "options" (RunOptions), "num_devices",
"data_sha256"}``. ``data.pt``: the training and test tensors and the partitions (torch.save; ranks load it
memory-mapped and devices keep only their own partition). Both are written by :func:`write_run`; on a
cluster the run directory must be on a file system all ranks see.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from hetsfl.io import write_bytes, write_json
from hetsfl.runtime.errors import RunConfigError
from hetsfl.train import METHODS, TrainSpec
from hetsfl.train.checkpoint import partitions_sha256

if TYPE_CHECKING:
    from hetsfl.data.formats import ImageDataset

__all__ = [
    "DATA_NAME",
    "RUN_FORMAT",
    "RUN_NAME",
    "Run",
    "RunOptions",
    "data_fingerprint",
    "load_device_data",
    "load_test_data",
    "log_dir",
    "read_run",
    "write_run",
]

RUN_NAME = "run.json"
DATA_NAME = "data.pt"
RUN_FORMAT = 1


@dataclass
class RunOptions:
    """How the runtime runs (not what it computes).

    timeout_s: bound on every single wait (rendezvous, each receive and send); a rank that waits longer
      fails with an error naming the peer. A device of SL waits for its turn up to timeout_s x N.
    threads: torch threads per device rank (intra-op); server_threads: the server's (default: threads).
    stop_after_round: end cleanly after this round, with a checkpoint (None: run all rounds).
    """

    timeout_s: float = 300.0
    threads: int = 1
    stop_after_round: int | None = None
    server_threads: int | None = None

    def __post_init__(self) -> None:
        self.timeout_s = float(self.timeout_s)
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise RunConfigError(f"RunOptions.timeout_s must be a positive number of seconds, got {self.timeout_s}")
        if isinstance(self.threads, bool) or int(self.threads) != self.threads or self.threads < 1:
            raise RunConfigError(f"RunOptions.threads must be an integer >= 1, got {self.threads!r}")
        self.threads = int(self.threads)
        if self.server_threads is not None:
            if isinstance(self.server_threads, bool) or int(self.server_threads) != self.server_threads or (
                self.server_threads < 1
            ):
                raise RunConfigError(f"RunOptions.server_threads must be an integer >= 1, got {self.server_threads!r}")
            self.server_threads = int(self.server_threads)
        if self.stop_after_round is not None:
            if int(self.stop_after_round) != self.stop_after_round or self.stop_after_round < 1:
                raise RunConfigError(f"RunOptions.stop_after_round must be >= 1, got {self.stop_after_round!r}")
            self.stop_after_round = int(self.stop_after_round)


@dataclass
class Run:
    """A run as read from its directory."""

    run_dir: Path
    spec: TrainSpec
    options: RunOptions
    num_devices: int
    data_sha256: str

    @property
    def world_size(self) -> int:
        return self.num_devices + 1

    @property
    def data_path(self) -> Path:
        return self.run_dir / DATA_NAME


def log_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "logs"


def data_fingerprint(train: ImageDataset, test: ImageDataset, parts: Sequence[np.ndarray]) -> str:
    """sha256 over the partitions, the labels and the shapes (what a resumed run must not change)."""
    h = partitions_sha256(parts)
    for ds in (train, test):
        h.update(repr((getattr(ds, "name", ""), tuple(ds.x.shape), int(ds.num_classes))).encode())
        h.update(np.ascontiguousarray(ds.y.cpu().numpy(), dtype=np.int64).tobytes())
    return h.hexdigest()


def check_spec(spec: TrainSpec, num_devices: int) -> None:
    """What the runtime needs of a spec before any model exists (the model checks the splits later)."""
    if spec.method not in METHODS:
        raise RunConfigError(f"unknown training method {spec.method!r}; choose one of {', '.join(METHODS)}")
    if num_devices < 1:
        raise RunConfigError("the runtime needs at least one device (one data partition)")
    for name in ("splits", "local_iters", "batch_sizes"):
        if len(getattr(spec, name)) != num_devices:
            raise RunConfigError(
                f"TrainSpec.{name} has {len(getattr(spec, name))} entries but there are {num_devices} partitions"
            )
    if any(k < 1 for k in spec.local_iters) or any(d < 1 for d in spec.batch_sizes):
        raise RunConfigError("local_iters and batch_sizes must be >= 1 for every device")
    if spec.rounds < 1 or spec.checkpoint_every < 1 or spec.eval_batch_size < 1:
        raise RunConfigError("TrainSpec.rounds, checkpoint_every and eval_batch_size must be >= 1")
    if spec.seed < 0:
        raise RunConfigError(f"TrainSpec.seed must be >= 0, got {spec.seed}")
    if not (math.isfinite(spec.lr) and spec.lr > 0):
        raise RunConfigError(f"TrainSpec.lr must be a positive number, got {spec.lr}")
    for name in ("momentum", "weight_decay"):
        if not (math.isfinite(getattr(spec, name)) and getattr(spec, name) >= 0):
            raise RunConfigError(f"TrainSpec.{name} must be a finite number >= 0, got {getattr(spec, name)}")
    if spec.device not in ("cpu", "auto"):
        raise RunConfigError(
            f"the distributed runtime computes on the CPU (gloo); TrainSpec.device is {spec.device!r}, "
            f"use 'cpu' or 'auto'"
        )


def write_run(
    run_dir: str | os.PathLike,
    spec: TrainSpec,
    train: ImageDataset,
    test: ImageDataset,
    parts: Sequence[np.ndarray],
    options: RunOptions | None = None,
) -> Run:
    """Write run.json and data.pt into ``run_dir`` (created) for ``python -m hetsfl.runtime rank``."""
    if not isinstance(spec, TrainSpec):
        raise TypeError(f"spec must be a TrainSpec, got {type(spec).__name__}")
    spec = dataclasses.replace(spec)
    options = RunOptions() if options is None else dataclasses.replace(options)
    parts = [np.asarray(p, dtype=np.int64) for p in parts]
    check_spec(spec, len(parts))
    for n, p in enumerate(parts):
        if p.ndim != 1 or p.size == 0:
            raise RunConfigError(f"partition of device {n} must be a non-empty 1-D index array")
        if p.min() < 0 or p.max() >= len(train):
            raise RunConfigError(f"partition of device {n} has indices outside 0..{len(train) - 1}")
    out = Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_dir(out).mkdir(exist_ok=True)
    bundle = {
        "train_x": train.x.cpu().contiguous(),
        "train_y": train.y.cpu().contiguous(),
        "test_x": test.x.cpu().contiguous(),
        "test_y": test.y.cpu().contiguous(),
        "num_classes": int(train.num_classes),
        "name": str(getattr(train, "name", "")),
        "parts": [torch.from_numpy(p) for p in parts],
    }
    buf = io.BytesIO()
    torch.save(bundle, buf)
    write_bytes(out / DATA_NAME, buf.getvalue())
    sha = data_fingerprint(train, test, parts)
    doc = {
        "format": RUN_FORMAT,
        "spec": spec.to_dict(),
        "options": dataclasses.asdict(options),
        "num_devices": len(parts),
        "data_sha256": sha,
    }
    write_json(out / RUN_NAME, doc, indent=1, sort_keys=True)
    return Run(out, spec, options, len(parts), sha)


def read_run(run_dir: str | os.PathLike) -> Run:
    """Read and check run.json (the data file is read by the ranks)."""
    out = Path(run_dir)
    path = out / RUN_NAME
    if not path.exists():
        raise RunConfigError(f"{path} does not exist; write the run first (hetsfl.runtime.write_run)")
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RunConfigError(f"cannot read {path}: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != RUN_FORMAT:
        raise RunConfigError(f"{path} has an unknown format (expected format {RUN_FORMAT})")
    try:
        spec = TrainSpec(**doc["spec"])
        options = RunOptions(**doc["options"])
        num_devices = int(doc["num_devices"])
        sha = str(doc["data_sha256"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RunConfigError(f"{path} is incomplete or invalid: {exc}") from exc
    check_spec(spec, num_devices)
    if not (out / DATA_NAME).exists():
        raise RunConfigError(f"{out / DATA_NAME} does not exist; write the run again (write_run)")
    return Run(out, spec, options, num_devices, sha)


def _load_bundle(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        raise RunConfigError(f"cannot read the run's data {path} ({type(exc).__name__}: {exc})") from exc


def load_test_data(run: Run) -> tuple[torch.Tensor, torch.Tensor, int, tuple[int, ...], list[int]]:
    """(test x, test y, number of classes, input shape, partition sizes) for the server."""
    b = _load_bundle(run.data_path)
    sizes = [int(p.numel()) for p in b["parts"]]
    if len(sizes) != run.num_devices:
        raise RunConfigError(f"{run.data_path} holds {len(sizes)} partitions, run.json says {run.num_devices}")
    shape = tuple(int(d) for d in b["train_x"].shape[1:])
    return b["test_x"].clone(), b["test_y"].clone(), int(b["num_classes"]), shape, sizes


def load_device_data(run: Run, device: int) -> tuple[torch.Tensor, torch.Tensor, list[np.ndarray], int]:
    """(x, y of the device's own partition in partition order, all partitions, number of classes)."""
    b = _load_bundle(run.data_path)
    parts = [p.numpy().astype(np.int64, copy=True) for p in b["parts"]]
    if len(parts) != run.num_devices:
        raise RunConfigError(f"{run.data_path} holds {len(parts)} partitions, run.json says {run.num_devices}")
    idx = torch.from_numpy(parts[device])
    return b["train_x"][idx].clone(), b["train_y"][idx].clone(), parts, int(b["num_classes"])
