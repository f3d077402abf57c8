"""Run loop: TrainSpec, run_training, per-round metrics, atomic outputs, checkpoint and resume.

Outputs in ``out_dir``:

- ``metrics.csv``: round (1-based), test_acc, test_loss, train_loss, round_latency_s, sim_time_s,
  bits_up_total, bits_down_total, cum_bits_up, cum_bits_down. Deterministic: byte-identical for the same
  spec, data and seed (also across a resume) on the same machine and torch build.
- ``timing.csv``: round, wall_time_s, train_time_s, eval_time_s, samples_per_s (training samples per
  second of training time). Wall-clock, so not reproducible.
- ``bits.csv``: round, device, bits_up, bits_down.
- ``final_model.pt``: state_dict of the final global model (tensors on the CPU).
- ``summary.json``: the spec, final accuracy and loss, total simulated time and wall time; written last.
- ``checkpoint.pt``: written every ``checkpoint_every`` rounds and at the end (and at ``stop_after_round``).

Every file is written to a temporary name in ``out_dir`` and renamed into place (``os.replace``), so a
killed job leaves either the old file or the new one, never a partial one. metrics/timing/bits,
final_model and summary are written only when the run completes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from hetsfl.errors import HetsflError
from hetsfl.io import write_bytes
from hetsfl.models import SplittableModel, build_model
from hetsfl.train.methods import METHODS, evaluate, make_method
from hetsfl.train.schedule import BatchSchedule, round_torch_seed

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

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = 1
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
BITS_PER_VALUE = 32
# Fields that may differ between a checkpoint and the spec that resumes it (they do not change the numbers).
_RESUME_FREE_FIELDS = ("rounds", "checkpoint_every")


@dataclass
class TrainSpec:
    """What to train. Lists have one entry per device; see validate_spec for the rules."""

    method: str  # "fl" | "sfl" | "sfl_v2" | "sl"
    model: str  # "cnn" | "vgg16" | "resnet18"
    splits: list[int]
    rounds: int
    local_iters: list[int]
    batch_sizes: list[int]
    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "cpu"  # "cpu" | "cuda" | "cuda:<i>" | "auto"
    round_latency_s: float = 0.0
    bits_up: list[float] | None = None  # per device per round; None: computed from the model (§4)
    bits_down: list[float] | None = None
    checkpoint_every: int = 5
    eval_batch_size: int = 1000

    def __post_init__(self) -> None:
        # Plain Python types (numpy scalars from the pipeline), so the spec compares and serialises cleanly.
        self.method = str(self.method)
        self.model = str(self.model)
        self.device = str(self.device)
        self.splits = _int_list(self.splits, "splits")
        self.local_iters = _int_list(self.local_iters, "local_iters")
        self.batch_sizes = _int_list(self.batch_sizes, "batch_sizes")
        for name in ("rounds", "seed", "checkpoint_every", "eval_batch_size"):
            setattr(self, name, _as_int(getattr(self, name), name))
        for name in ("lr", "momentum", "weight_decay", "round_latency_s"):
            setattr(self, name, float(getattr(self, name)))
        if self.bits_up is not None:
            self.bits_up = [float(b) for b in self.bits_up]
        if self.bits_down is not None:
            self.bits_down = [float(b) for b in self.bits_down]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _as_int(value, name: str) -> int:
    if isinstance(value, bool) or int(value) != value:
        raise ValueError(f"TrainSpec.{name} must be an integer, got {value!r}")
    return int(value)


def _int_list(values, name: str) -> list[int]:
    try:
        return [_as_int(v, name) for v in values]
    except TypeError:
        raise ValueError(f"TrainSpec.{name} must be a list of integers, got {values!r}") from None


def validate_spec(spec: TrainSpec, num_devices: int, num_units: int | None = None) -> None:
    """Raise ValueError with a clear message if the spec is unusable for `num_devices` devices and L units."""
    if spec.method not in METHODS:
        raise ValueError(f"unknown training method {spec.method!r}; choose one of {', '.join(METHODS)}")
    if num_devices < 1:
        raise ValueError("training needs at least one device (one data partition)")
    for name in ("splits", "local_iters", "batch_sizes", "bits_up", "bits_down"):
        values = getattr(spec, name)
        if values is not None and len(values) != num_devices:
            raise ValueError(
                f"TrainSpec.{name} has {len(values)} entries but there are {num_devices} partitions"
            )
    for name in ("rounds", "checkpoint_every", "eval_batch_size"):
        if getattr(spec, name) < 1:
            raise ValueError(f"TrainSpec.{name} must be >= 1, got {getattr(spec, name)}")
    if spec.seed < 0:
        raise ValueError(f"TrainSpec.seed must be >= 0, got {spec.seed}")
    for n, (k, d) in enumerate(zip(spec.local_iters, spec.batch_sizes, strict=True)):
        if k < 1 or d < 1:
            raise ValueError(f"device {n}: local_iters and batch_sizes must be >= 1, got K={k}, D={d}")
    if not (math.isfinite(spec.lr) and spec.lr > 0):
        raise ValueError(f"TrainSpec.lr must be a positive number, got {spec.lr}")
    for name in ("momentum", "weight_decay", "round_latency_s"):
        value = getattr(spec, name)
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"TrainSpec.{name} must be a finite number >= 0, got {value}")
    for name in ("bits_up", "bits_down"):
        values = getattr(spec, name)
        if values is not None and any(not (math.isfinite(b) and b >= 0) for b in values):
            raise ValueError(f"TrainSpec.{name} must be finite numbers >= 0, got {values}")
    if spec.device != "auto" and not (spec.device == "cpu" or spec.device.startswith("cuda")):
        raise ValueError(f"TrainSpec.device must be 'cpu', 'cuda', 'cuda:<i>' or 'auto', got {spec.device!r}")
    if num_units is None:
        return
    L = num_units
    s = spec.splits
    if spec.method == "fl":
        if any(v != L for v in s):
            raise ValueError(f"FL trains the whole model on every device: all splits must be L={L}, got {s}")
        return
    bad = [n for n, v in enumerate(s) if not 1 <= v <= L - 1]
    if bad:
        raise ValueError(
            f"{spec.method} needs split points in 1..{L - 1} for model {spec.model!r} (L={L}); devices {bad} "
            f"have {[s[n] for n in bad]} (use method 'fl' for the whole model on the device)"
        )
    if spec.method == "sl" and len(set(s)) != 1:
        raise ValueError(f"SL uses one common split point for all devices, got {s}")


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


@torch.no_grad()
def default_bits(
    model: SplittableModel, splits: Sequence[int], local_iters: Sequence[int], batch_sizes: Sequence[int]
) -> list[float]:
    """Bits per device per round in each direction (§4): K·D·a(s) + W(s), 32 bits per value.

    a(s) is the per-sample size of unit s's output (0 for s = L: FL sends no smashed data) and W(s) the size
    of the parameters of units 1..s. The same number applies to the uplink and the downlink.
    """
    L = model.num_units
    was_training = model.training
    model.eval()
    device = next(iter(model.parameters())).device
    x = torch.zeros((1, *model.input_shape), device=device)
    act, par = [], []
    for j, unit in enumerate(model.units.values()):
        x = unit(x)
        act.append(x[0].numel() if j + 1 < L else 0)
        par.append(sum(p.numel() for p in unit.parameters()))
    model.train(was_training)
    out = []
    for s, k, d in zip(splits, local_iters, batch_sizes, strict=True):
        out.append(float(BITS_PER_VALUE * (k * d * act[s - 1] + sum(par[:s]))))
    return out


# ------------------------------------------------------------------------------------------ atomic writes
def _atomic_write_bytes(path: Path, data: bytes) -> None:
    write_bytes(path, data)


def _atomic_torch_save(obj, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    _atomic_write_bytes(path, buf.getvalue())


def _atomic_csv(df: pd.DataFrame, path: Path) -> None:
    _atomic_write_bytes(path, df.to_csv(index=False, lineterminator="\n").encode())


def _atomic_json(obj, path: Path) -> None:
    _atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


# ----------------------------------------------------------------------------------------------- helpers
def _data_fingerprint(train, test, parts: Sequence[np.ndarray]) -> dict:
    h = hashlib.sha256()
    for p in parts:
        arr = np.ascontiguousarray(np.asarray(p, dtype=np.int64))
        h.update(len(arr).to_bytes(8, "little"))
        h.update(arr.tobytes())
    for ds in (train, test):
        h.update(np.ascontiguousarray(ds.y.cpu().numpy(), dtype=np.int64).tobytes())
    return {
        "train": [getattr(train, "name", ""), len(train), list(train.x.shape[1:])],
        "test": [getattr(test, "name", ""), len(test), list(test.x.shape[1:])],
        "partitions_labels_sha256": h.hexdigest(),
    }


def _comparable(spec_dict: dict) -> dict:
    return {k: v for k, v in spec_dict.items() if k not in _RESUME_FREE_FIELDS}


OUTPUT_NAMES = ("summary.json", "metrics.csv", "timing.csv", "bits.csv", "final_model.pt")  # summary first


def _remove_outputs(out: Path) -> None:
    for name in OUTPUT_NAMES:
        (out / name).unlink(missing_ok=True)


def _cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def _load_checkpoint(path: Path, spec: TrainSpec, fingerprint: dict, device: torch.device) -> dict | None:
    if not path.exists():
        return None
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:
        raise HetsflError(
            f"cannot read checkpoint {path} ({type(exc).__name__}: {exc}); delete it to start over"
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise HetsflError(f"checkpoint {path} has an unknown format; delete it to start over")
    old, new = _comparable(ckpt["spec"]), _comparable(spec.to_dict())
    if old != new or ckpt["data"] != fingerprint:
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        what = f"spec fields {diff}" if diff else "the data or partition"
        raise HetsflError(
            f"checkpoint {path} belongs to a different training run ({what} differ). Delete the checkpoint to "
            f"start over, or use another out_dir."
        )
    if ckpt["round"] > spec.rounds:
        raise HetsflError(
            f"checkpoint {path} is at round {ckpt['round']}, beyond the requested {spec.rounds} rounds. Delete "
            f"it or use another out_dir."
        )
    return ckpt


# ---------------------------------------------------------------------------------------------- main loop
def run_training(
    spec: TrainSpec,
    train,
    test,
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
        return _run(spec, train, test, parts, out, device, progress, stop_after_round)


def _run(spec, train, test, parts, out: Path, device, progress, stop_after_round) -> pd.DataFrame:
    torch.manual_seed(spec.seed)
    model = build_model(spec.model, num_classes=int(train.num_classes), input_shape=tuple(train.x.shape[1:]))
    validate_spec(spec, len(parts), model.num_units)
    model.to(device)
    schedule = BatchSchedule(parts, spec.local_iters, spec.batch_sizes, spec.seed)
    x_train, y_train = train.x.to(device), train.y.to(device)
    x_test, y_test = test.x.to(device), test.y.to(device)
    method = make_method(
        spec.method,
        model,
        schedule,
        x_train,
        y_train,
        spec.splits,
        spec.lr,
        spec.momentum,
        spec.weight_decay,
        spec.seed,
    )
    computed = default_bits(model, spec.splits, spec.local_iters, spec.batch_sizes)
    bits_up = spec.bits_up if spec.bits_up is not None else computed
    bits_down = spec.bits_down if spec.bits_down is not None else computed

    fingerprint = _data_fingerprint(train, test, parts)
    ckpt_path = out / CHECKPOINT_NAME
    metrics: list[dict] = []
    timing: list[dict] = []
    bits_rows: list[dict] = []
    start = 0
    ckpt = _load_checkpoint(ckpt_path, spec, fingerprint, device)
    if ckpt is not None:
        with torch.no_grad():
            for key, tensor in model.state_dict().items():
                tensor.copy_(ckpt["model"][key])
        method.load_extra_state(ckpt["method_state"])
        metrics, timing, bits_rows = list(ckpt["metrics"]), list(ckpt["timing"]), list(ckpt["bits"])
        start = int(ckpt["round"])
        logger.info("resuming %s from %s at round %d of %d", spec.method, ckpt_path, start, spec.rounds)

    def save_checkpoint(done: int) -> None:
        _atomic_torch_save(
            {
                "format": CHECKPOINT_FORMAT,
                "spec": spec.to_dict(),
                "data": fingerprint,
                "round": done,
                "model": _cpu_state(model),
                "method_state": method.extra_state(),
                "metrics": metrics,
                "timing": timing,
                "bits": bits_rows,
            },
            ckpt_path,
        )

    if start < spec.rounds:
        _remove_outputs(out)  # stale results of an earlier run must not pass for this one's
    up_total, down_total = float(sum(bits_up)), float(sum(bits_down))
    bar = tqdm(
        range(start, spec.rounds),
        total=spec.rounds,
        initial=start,
        disable=not progress,
        desc=spec.method,
        unit="round",
    )
    for r in bar:
        torch.manual_seed(round_torch_seed(spec.seed, r))
        t0 = time.perf_counter()
        result = method.run_round(r)
        train_loss = result.mean_loss  # one sync per round
        t1 = time.perf_counter()
        test_acc, test_loss = evaluate(model, x_test, y_test, spec.eval_batch_size)
        t2 = time.perf_counter()
        prev = metrics[-1] if metrics else {"sim_time_s": 0.0, "cum_bits_up": 0.0, "cum_bits_down": 0.0}
        row = {
            "round": r + 1,
            "test_acc": test_acc,
            "test_loss": test_loss,
            "train_loss": train_loss,
            "round_latency_s": spec.round_latency_s,
            "sim_time_s": prev["sim_time_s"] + spec.round_latency_s,
            "bits_up_total": up_total,
            "bits_down_total": down_total,
            "cum_bits_up": prev["cum_bits_up"] + up_total,
            "cum_bits_down": prev["cum_bits_down"] + down_total,
        }
        metrics.append(row)
        train_time = t1 - t0
        timing.append(
            {
                "round": r + 1,
                "wall_time_s": t2 - t0,
                "train_time_s": train_time,
                "eval_time_s": t2 - t1,
                "samples_per_s": result.num_samples / train_time if train_time > 0 else float("nan"),
            }
        )
        bits_rows.extend(
            {"round": r + 1, "device": n, "bits_up": bits_up[n], "bits_down": bits_down[n]}
            for n in range(len(parts))
        )
        if not math.isfinite(train_loss):
            logger.warning(
                "round %d: training loss is %s (learning rate %g too high?)", r + 1, train_loss, spec.lr
            )
        logger.info(
            "%s round %d/%d: test_acc=%.4f test_loss=%.4f train_loss=%.4f sim_time=%.3fs wall=%.2fs",
            spec.method,
            r + 1,
            spec.rounds,
            test_acc,
            test_loss,
            train_loss,
            row["sim_time_s"],
            t2 - t0,
        )
        bar.set_postfix(acc=f"{test_acc:.4f}", loss=f"{train_loss:.3f}")
        done = r + 1
        stopping = stop_after_round is not None and done >= stop_after_round and done < spec.rounds
        if done % spec.checkpoint_every == 0 or done == spec.rounds or stopping:
            save_checkpoint(done)
        if stopping:
            bar.close()
            logger.info("stopping after round %d as asked (checkpoint in %s)", done, ckpt_path)
            return pd.DataFrame(metrics, columns=METRICS_COLUMNS)
    bar.close()

    df = pd.DataFrame(metrics, columns=METRICS_COLUMNS)
    _atomic_csv(df, out / "metrics.csv")
    _atomic_csv(pd.DataFrame(timing, columns=TIMING_COLUMNS), out / "timing.csv")
    _atomic_csv(pd.DataFrame(bits_rows, columns=BITS_COLUMNS), out / "bits.csv")
    _atomic_torch_save(_cpu_state(model), out / "final_model.pt")
    last = metrics[-1]
    summary = {
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
        "num_devices": len(parts),
        "num_units": model.num_units,
        "torch_version": torch.__version__,
    }
    _atomic_json(summary, out / "summary.json")
    return df
