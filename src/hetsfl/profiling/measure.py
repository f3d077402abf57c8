"""Per-unit profile of a SplittableModel, per sample: FLOPs, activation and parameter sizes, times."""

from __future__ import annotations

import copy
import csv
import io
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from hetsfl.io import write_text
from hetsfl.models.base import SplittableModel
from hetsfl.profiling.files import read_profile  # noqa: F401 - re-exported: profiling writes, this reads

T = TypeVar("T")

PROFILE_FIELDS = (
    "name",
    "fwd_flops",
    "bwd_flops",
    "out_bits",
    "param_bits",
    "params",
    "out_elems",
    "time_fwd_s",
    "time_bwd_s",
    "time_s",
)


def count_params(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def count_flops(fn: Callable[[], T]) -> tuple[int, T]:
    """(total FLOPs torch's FlopCounterMode records while running fn(), fn's result)."""
    with FlopCounterMode(display=False) as counter:
        result = fn()
    return int(counter.get_total_flops()), result


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of fn() over `repeats` runs, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _time_unit(unit: nn.Module, x: torch.Tensor, grad: torch.Tensor, repeats: int) -> tuple[float, float]:
    """Median forward and backward times of unit on x (one untimed warm-up first); backward 0 if no grad."""
    out = unit(x)
    if not out.requires_grad:
        return _median_time(lambda: unit(x), repeats), 0.0
    out.backward(grad)
    fwd, bwd = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        out = unit(x)
        mid = time.perf_counter()
        out.backward(grad)
        fwd.append(mid - start)
        bwd.append(time.perf_counter() - mid)
    return statistics.median(fwd), statistics.median(bwd)


def profile_unit(
    name: str,
    unit: nn.Module,
    x: torch.Tensor,
    gen: torch.Generator,
    repeats: int,
    bits_per_activation: int,
    bits_per_param: int,
) -> tuple[dict, torch.Tensor]:
    """Profile one unit on batch x; return (per-sample row, detached output for the next unit)."""
    batch = x.shape[0]
    fwd_flops, out = count_flops(lambda: unit(x))
    grad = torch.randn(out.shape, generator=gen, dtype=out.dtype)
    bwd_flops = count_flops(lambda: out.backward(grad))[0] if out.requires_grad else 0
    time_fwd, time_bwd = _time_unit(unit, x, grad, repeats)
    out_elems = out[0].numel()
    params = count_params(unit)
    row = {
        "name": name,
        "fwd_flops": fwd_flops / batch,
        "bwd_flops": bwd_flops / batch,
        "out_bits": out_elems * bits_per_activation,
        "param_bits": params * bits_per_param,
        "params": params,
        "out_elems": out_elems,
        "time_fwd_s": time_fwd / batch,
        "time_bwd_s": time_bwd / batch,
        "time_s": (time_fwd + time_bwd) / batch,
    }
    return row, out.detach()


def profile_model(
    model: SplittableModel,
    batch_size: int = 32,
    repeats: int = 15,
    bits_per_activation: int = 32,
    bits_per_param: int = 32,
    seed: int = 0,
) -> list[dict]:
    """One per-sample row per unit, in order (see PROFILE_FIELDS); runs on a train-mode copy of model."""
    if batch_size < 1 or repeats < 1:
        raise ValueError(f"batch_size and repeats must be >= 1, got {batch_size} and {repeats}")
    work = copy.deepcopy(model).train()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((batch_size, *model.input_shape), generator=gen)
    rows = []
    for index, (name, unit) in enumerate(work.units.items()):
        unit_input = x if index == 0 else x.requires_grad_(True)
        row, x = profile_unit(name, unit, unit_input, gen, repeats, bits_per_activation, bits_per_param)
        rows.append(row)
    return rows


def _atomic_write(path: Path, text: str) -> None:
    """Write text to path atomically (hetsfl.io.write_text)."""
    write_text(path, text)


def _csv_text(rows: list[dict]) -> str:
    """CSV with a header and one line per row; columns are PROFILE_FIELDS first, then any extra keys."""
    extra = [k for row in rows for k in row if k not in PROFILE_FIELDS]
    fields = [f for f in PROFILE_FIELDS if any(f in row for row in rows)] + list(dict.fromkeys(extra))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields or list(PROFILE_FIELDS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_profile(rows: list[dict], json_path, csv_path, meta: dict) -> None:
    """Write {"meta": meta, "units": rows} as JSON and the rows as CSV, each atomically."""
    _atomic_write(Path(json_path), json.dumps({"meta": meta, "units": rows}, indent=2) + "\n")
    _atomic_write(Path(csv_path), _csv_text(rows))


