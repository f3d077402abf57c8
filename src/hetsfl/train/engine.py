"""Run loop: run_training builds the model and method, resumes from a checkpoint, trains the rounds and
writes the outputs (listed in :mod:`hetsfl.train.outputs`; checkpoints in :mod:`hetsfl.train.checkpoint`)."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from hetsfl.data.formats import ImageDataset
from hetsfl.errors import HetsflError
from hetsfl.models import SplittableModel, build_model
from hetsfl.train.bits import default_bits
from hetsfl.train.checkpoint import (
    CHECKPOINT_NAME,
    cpu_state,
    data_fingerprint,
    load_checkpoint,
    save_checkpoint,
)
from hetsfl.train.methods import TrainMethod, evaluate, make_method
from hetsfl.train.outputs import METRICS_COLUMNS, metrics_row, remove_outputs, summary, write_outputs
from hetsfl.train.schedule import BatchSchedule, round_torch_seed
from hetsfl.train.spec import TrainSpec, validate_spec

__all__ = [
    "CHECKPOINT_NAME",
    "METRICS_COLUMNS",
    "TrainSpec",
    "default_bits",
    "resolve_device",
    "run_training",
    "validate_spec",
]

logger = logging.getLogger("hetsfl.train")


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda if available else cpu; 'cuda' without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise HetsflError(
            f"training device {name!r} requested but CUDA is not available; use 'cpu' or 'auto'"
        )
    return device


def run_training(
    spec: TrainSpec,
    train: ImageDataset,
    test: ImageDataset,
    parts: Sequence[np.ndarray],
    out_dir: str | os.PathLike,
    progress: bool = True,
    stop_after_round: int | None = None,
) -> pd.DataFrame:
    """Train per `spec` on `train` split into `parts` (one index array per device); evaluate on `test`.

    Resumes from ``out_dir/checkpoint.pt`` when it matches the spec (``rounds`` and ``checkpoint_every``
    may differ). ``stop_after_round`` ends the run after that round's checkpoint (simulates a kill).
    Returns the metrics of all rounds done so far (the content of metrics.csv).
    """
    if not isinstance(spec, TrainSpec):
        raise TypeError(f"spec must be a TrainSpec, got {type(spec).__name__}")
    spec = dataclasses.replace(spec)  # re-normalise, and never mutate the caller's object
    parts = [np.asarray(p) for p in parts]
    validate_spec(spec, len(parts))
    for n, p in enumerate(parts):
        if p.size and (p.min() < 0 or p.max() >= len(train)):
            raise ValueError(f"partition of device {n} has indices outside 0..{len(train) - 1}")
    if stop_after_round is not None and stop_after_round < 1:
        raise ValueError(f"stop_after_round must be >= 1, got {stop_after_round}")
    device = resolve_device(spec.device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fork_devices = (
        [device.index if device.index is not None else torch.cuda.current_device()]
        if (device.type == "cuda")
        else []
    )
    with torch.random.fork_rng(devices=fork_devices):
        run = _build(spec, train, test, parts, out, device)
        _resume(run)
        return _train(run, progress, stop_after_round)


# ------------------------------------------------------------------------------------------- the run's state
@dataclass
class _Run:
    """One training run between rounds: what it trains and the rows written so far."""

    spec: TrainSpec
    out: Path
    device: torch.device
    model: SplittableModel
    method: TrainMethod
    x_test: torch.Tensor
    y_test: torch.Tensor
    bits_up: list[float]
    bits_down: list[float]
    fingerprint: dict[str, Any]
    metrics: list[dict] = field(default_factory=list)
    timing: list[dict] = field(default_factory=list)
    bits_rows: list[dict] = field(default_factory=list)
    start: int = 0  # rounds already done (from a checkpoint)

    @property
    def ckpt_path(self) -> Path:
        return self.out / CHECKPOINT_NAME

    def save_checkpoint(self, done: int) -> None:
        save_checkpoint(self.ckpt_path, self.spec, self.fingerprint, done, self.model,
                        self.method.extra_state(), self.metrics, self.timing, self.bits_rows)


def _build(
    spec: TrainSpec, train: ImageDataset, test: ImageDataset, parts: list[np.ndarray], out: Path,
    device: torch.device,
) -> _Run:
    """Seed, build the model (weights from the seed) and the method, put the data on ``device``."""
    torch.manual_seed(spec.seed)
    channels, height, width = (int(d) for d in train.x.shape[1:])
    model = build_model(spec.model, num_classes=int(train.num_classes), input_shape=(channels, height, width))
    validate_spec(spec, len(parts), model.num_units)
    model.to(device)
    schedule = BatchSchedule(parts, spec.local_iters, spec.batch_sizes, spec.seed)
    x_train, y_train = train.x.to(device), train.y.to(device)
    method = make_method(spec.method, model, schedule, x_train, y_train, spec.splits, spec.lr, spec.momentum,
                         spec.weight_decay, spec.seed)
    bits_up, bits_down = _bits_per_round(spec, model)
    return _Run(spec=spec, out=out, device=device, model=model, method=method, x_test=test.x.to(device),
                y_test=test.y.to(device), bits_up=bits_up, bits_down=bits_down,
                fingerprint=data_fingerprint(train, test, parts))


def _bits_per_round(spec: TrainSpec, model: SplittableModel) -> tuple[list[float], list[float]]:
    """Bits each device sends up and down per round: the spec's, or computed from the model (§4)."""
    if spec.bits_up is not None and spec.bits_down is not None:
        return spec.bits_up, spec.bits_down
    assert spec.bits_per_activation is not None and spec.bits_per_param is not None  # validate_spec
    computed = default_bits(model, spec.splits, spec.local_iters, spec.batch_sizes,
                            bits_per_activation=spec.bits_per_activation, bits_per_param=spec.bits_per_param)
    return (spec.bits_up if spec.bits_up is not None else computed,
            spec.bits_down if spec.bits_down is not None else computed)


def _resume(run: _Run) -> None:
    """Continue from the run's checkpoint if there is one; without one start at round 0."""
    ckpt = load_checkpoint(run.ckpt_path, run.spec, run.fingerprint, run.device)
    if ckpt is None:
        return
    with torch.no_grad():
        for key, tensor in run.model.state_dict().items():
            tensor.copy_(ckpt["model"][key])
    run.method.load_extra_state(ckpt["method_state"])
    run.metrics, run.timing, run.bits_rows = list(ckpt["metrics"]), list(ckpt["timing"]), list(ckpt["bits"])
    run.start = int(ckpt["round"])
    logger.info("resuming %s from %s at round %d of %d", run.spec.method, run.ckpt_path, run.start,
                run.spec.rounds)


# ----------------------------------------------------------------------------------------------- the rounds
def _train(run: _Run, progress: bool, stop_after_round: int | None) -> pd.DataFrame:
    """Rounds ``run.start`` .. ``spec.rounds`` - 1 with checkpoints; then the outputs (unless stopped early)."""
    spec = run.spec
    if run.start < spec.rounds:
        remove_outputs(run.out)  # stale results of an earlier run must not pass for this one's
    bar = tqdm(range(run.start, spec.rounds), total=spec.rounds, initial=run.start, disable=not progress,
               desc=spec.method, unit="round")
    for r in bar:
        row = _one_round(run, r)
        bar.set_postfix(acc=f"{row['test_acc']:.4f}", loss=f"{row['train_loss']:.3f}")
        done = r + 1
        stopping = stop_after_round is not None and done >= stop_after_round and done < spec.rounds
        if done % spec.checkpoint_every == 0 or done == spec.rounds or stopping:
            run.save_checkpoint(done)
        if stopping:
            bar.close()
            logger.info("stopping after round %d as asked (checkpoint in %s)", done, run.ckpt_path)
            return pd.DataFrame(run.metrics, columns=METRICS_COLUMNS)
    bar.close()
    final = summary(run.spec, run.device, run.metrics, run.timing, len(run.bits_up), run.model.num_units)
    return write_outputs(run.out, run.metrics, run.timing, run.bits_rows, cpu_state(run.model), final)


def _one_round(run: _Run, r: int) -> dict[str, Any]:
    """Train round ``r`` (0-based), evaluate, append its metrics, timing and bits rows; return the metrics row."""
    spec = run.spec
    torch.manual_seed(round_torch_seed(spec.seed, r))
    t0 = time.perf_counter()
    result = run.method.run_round(r)
    train_loss = result.mean_loss  # one sync per round
    t1 = time.perf_counter()
    test_acc, test_loss = evaluate(run.model, run.x_test, run.y_test, spec.eval_batch_size)
    t2 = time.perf_counter()
    row = metrics_row(r, test_acc, test_loss, train_loss, spec.latency_of_round(r), sum(run.bits_up),
                      sum(run.bits_down), run.metrics[-1] if run.metrics else None)
    run.metrics.append(row)
    train_time = t1 - t0
    run.timing.append({
        "round": r + 1,
        "wall_time_s": t2 - t0,
        "train_time_s": train_time,
        "eval_time_s": t2 - t1,
        "samples_per_s": result.num_samples / train_time if train_time > 0 else float("nan"),
    })
    run.bits_rows.extend(
        {"round": r + 1, "device": n, "bits_up": up, "bits_down": down}
        for n, (up, down) in enumerate(zip(run.bits_up, run.bits_down, strict=True))
    )
    if not math.isfinite(train_loss):
        logger.warning("round %d: training loss is %s (learning rate %g too high?)", r + 1, train_loss, spec.lr)
    logger.info(
        "%s round %d/%d: test_acc=%.4f test_loss=%.4f train_loss=%.4f sim_time=%.3fs wall=%.2fs",
        spec.method, r + 1, spec.rounds, test_acc, test_loss, train_loss, row["sim_time_s"], t2 - t0,
    )
    return row
