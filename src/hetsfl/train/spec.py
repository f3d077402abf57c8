"""What to train: :class:`TrainSpec` (one method, one model, per-device lists) and its validation."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from hetsfl.train.methods import METHODS

__all__ = ["TrainSpec", "check_splits", "validate_spec"]

# Fields added after the first runs were written. While unset (None) they are left out of to_dict(), so the
# summary.json and checkpoints of runs that do not use them are the same as before.
_OPTIONAL_FIELDS = ("round_latencies_s", "bits_per_activation", "bits_per_param")


@dataclass
class TrainSpec:
    """What to train. Lists have one entry per device; see validate_spec for the rules.

    Bits sent per round: ``bits_up``/``bits_down`` per device (the pipeline passes the solution's), or, when
    they are not given, computed from the model with ``bits_per_activation`` and ``bits_per_param`` (§4).
    Simulated time: round r takes ``round_latencies_s[r]`` when given (e.g. a latency per round under
    fading; at least ``rounds`` entries), else ``round_latency_s``.
    """

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
    round_latencies_s: list[float] | None = None  # per round; None: round_latency_s every round
    bits_per_activation: int | None = None  # only used when bits_up or bits_down is None
    bits_per_param: int | None = None

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
        for name in ("bits_per_activation", "bits_per_param"):
            if getattr(self, name) is not None:
                setattr(self, name, _as_int(getattr(self, name), name))
        for name in ("lr", "momentum", "weight_decay", "round_latency_s"):
            setattr(self, name, float(getattr(self, name)))
        for name in ("bits_up", "bits_down", "round_latencies_s"):
            if getattr(self, name) is not None:
                setattr(self, name, _float_list(getattr(self, name), name))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for name in _OPTIONAL_FIELDS:
            if d[name] is None:
                del d[name]
        return d

    def latency_of_round(self, round_idx: int) -> float:
        """Simulated duration (s) of round ``round_idx`` (0-based)."""
        if self.round_latencies_s is None:
            return self.round_latency_s
        return self.round_latencies_s[round_idx]


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or int(value) != value:
        raise ValueError(f"TrainSpec.{name} must be an integer, got {value!r}")
    return int(value)


def _int_list(values: Iterable[Any], name: str) -> list[int]:
    try:
        return [_as_int(v, name) for v in values]
    except TypeError:
        raise ValueError(f"TrainSpec.{name} must be a list of integers, got {values!r}") from None


def _float_list(values: Iterable[Any], name: str) -> list[float]:
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"TrainSpec.{name} must be a list of numbers, got {values!r}") from None


def validate_spec(spec: TrainSpec, num_devices: int, num_units: int | None = None) -> None:
    """Raise ValueError with a clear message if the spec is unusable for `num_devices` devices and L units."""
    if spec.method not in METHODS:
        raise ValueError(f"unknown training method {spec.method!r}; choose one of {', '.join(METHODS)}")
    if num_devices < 1:
        raise ValueError("training needs at least one device (one data partition)")
    _check_lengths(spec, num_devices)
    _check_numbers(spec)
    _check_bits(spec)
    if spec.device != "auto" and not (spec.device == "cpu" or spec.device.startswith("cuda")):
        raise ValueError(f"TrainSpec.device must be 'cpu', 'cuda', 'cuda:<i>' or 'auto', got {spec.device!r}")
    if num_units is not None:
        check_splits(spec, num_units)


def _check_lengths(spec: TrainSpec, num_devices: int) -> None:
    for name in ("splits", "local_iters", "batch_sizes", "bits_up", "bits_down"):
        values = getattr(spec, name)
        if values is not None and len(values) != num_devices:
            raise ValueError(
                f"TrainSpec.{name} has {len(values)} entries but there are {num_devices} partitions"
            )


def _check_numbers(spec: TrainSpec) -> None:
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
    latencies = spec.round_latencies_s
    if latencies is not None:
        if len(latencies) < spec.rounds:
            raise ValueError(
                f"TrainSpec.round_latencies_s has {len(latencies)} entries but {spec.rounds} rounds are asked "
                f"for: give one latency per round (or round_latency_s for all rounds)"
            )
        if any(not (math.isfinite(t) and t >= 0) for t in latencies):
            raise ValueError(f"TrainSpec.round_latencies_s must be finite numbers >= 0, got {latencies}")


def _check_bits(spec: TrainSpec) -> None:
    for name in ("bits_up", "bits_down"):
        values = getattr(spec, name)
        if values is not None and any(not (math.isfinite(b) and b >= 0) for b in values):
            raise ValueError(f"TrainSpec.{name} must be finite numbers >= 0, got {values}")
    for name in ("bits_per_activation", "bits_per_param"):
        value = getattr(spec, name)
        if value is not None and value < 1:
            raise ValueError(f"TrainSpec.{name} must be >= 1, got {value}")
    if (spec.bits_up is None or spec.bits_down is None) and (
        spec.bits_per_activation is None or spec.bits_per_param is None
    ):
        raise ValueError(
            "TrainSpec needs the bits sent per round: bits_up and bits_down per device (the pipeline passes "
            "the solution's), or bits_per_activation and bits_per_param to compute them from the model"
        )


def check_splits(spec: TrainSpec, num_units: int) -> None:
    """The split rules for L = num_units units: FL all L, split methods 1..L-1, SL one common split."""
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
