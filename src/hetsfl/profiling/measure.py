"""Per-unit profile of a SplittableModel, per sample: FLOPs, activation and parameter sizes, times (robust: warm-up,
repeats interleaved across units, medians and their spread)."""

from __future__ import annotations

import copy
import csv
import io
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from hetsfl.io import write_json, write_text
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
    "time_min_s",
    "time_q25_s",
    "time_q75_s",
    "time_max_s",
    "time_step_s",
)


def count_params(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def count_flops(fn: Callable[[], T]) -> tuple[int, T]:
    """(total FLOPs torch's FlopCounterMode records while running fn(), fn's result)."""
    with FlopCounterMode(display=False) as counter:
        result = fn()
    return int(counter.get_total_flops()), result


def _timed_pass(
    unit: nn.Module, x: torch.Tensor, grad: torch.Tensor | None, clock: Callable[[], float] | None = None
) -> tuple[float, float]:
    """Seconds (wall, or ``clock``'s) of one forward (and, if ``grad`` is given, one backward) pass of ``unit``
    on ``x``."""
    clock = clock or time.perf_counter
    start = clock()
    out = unit(x)
    mid = clock()
    if grad is None:
        return mid - start, 0.0
    out.backward(grad)
    return mid - start, clock() - mid


def _quantile(values: list[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default) without numpy."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _timed_step(step: Callable[[], object] | None, clock: Callable[[], float] | None = None) -> float:
    """Seconds (wall, or ``clock``'s) of one optimiser step (0 when the unit has no parameters)."""
    if step is None:
        return 0.0
    clock = clock or time.perf_counter
    start = clock()
    step()
    return clock() - start


def timing_clock(threads: int) -> tuple[str, Callable[[], float]]:
    """The clock the profile times with at ``threads`` torch threads: ("thread_cpu", time.thread_time) at one
    thread (this thread's CPU time: the clock H is measured in and the emulation paces by, and on a loaded
    host it does not count other processes' turns as the wall clock does), else ("wall", time.perf_counter)
    (a thread's CPU time would miss torch's other threads)."""
    return ("thread_cpu", time.thread_time) if threads == 1 else ("wall", time.perf_counter)


def time_units(
    cases: list[tuple[nn.Module, torch.Tensor, torch.Tensor | None]],
    repeats: int,
    warmup: int = 2,
    seed: int = 0,
    steps: list[Callable[[], object] | None] | None = None,
    clock: Callable[[], float] | None = None,
) -> list[dict[str, float]]:
    """Robust forward/backward times of several units, measured together.

    On a busy machine the load changes over seconds, so timing all repeats of one unit and then the next lets
    a burst of load land on one unit only (identical VGG-16 layers came out 4x apart). Here every round times
    each unit once, in a fresh seeded order, after ``warmup`` untimed rounds; a burst then hits all units
    alike. Per unit: the medians of the forward and backward times, and the spread of the total over the
    repeats (min, quartiles, max), all in seconds for the whole batch. With ``steps`` (one optimiser step
    per unit, or None), also ``step``: the median time of that step, timed right after the unit's backward.
    ``clock``: what is timed with (default the wall clock, time.perf_counter; see timing_clock).
    """
    rng = random.Random(seed)
    order = list(range(len(cases)))
    fwd: list[list[float]] = [[] for _ in cases]
    bwd: list[list[float]] = [[] for _ in cases]
    stp: list[list[float]] = [[] for _ in cases]
    for round_ in range(warmup + repeats):
        rng.shuffle(order)
        for i in order:
            unit, x, grad = cases[i]
            f, b = _timed_pass(unit, x, grad, clock)
            st = _timed_step(steps[i], clock) if steps is not None else 0.0
            if round_ >= warmup:
                fwd[i].append(f)
                bwd[i].append(b)
                stp[i].append(st)
    stats = []
    for fs, bs, ss in zip(fwd, bwd, stp, strict=True):
        total = [x + y for x, y in zip(fs, bs, strict=True)]
        stats.append({
            "fwd": statistics.median(fs), "bwd": statistics.median(bs), "min": min(total),
            "q25": _quantile(total, 0.25), "q75": _quantile(total, 0.75), "max": max(total),
            "step": statistics.median(ss),
        })
    return stats


def profile_unit(
    name: str,
    unit: nn.Module,
    x: torch.Tensor,
    gen: torch.Generator,
    bits_per_activation: int,
    bits_per_param: int,
) -> tuple[dict, torch.Tensor, torch.Tensor | None]:
    """Count one unit on batch x: (per-sample row without times, detached output for the next unit, the
    output gradient used to time its backward pass, or None if it has no backward)."""
    batch = x.shape[0]
    fwd_flops, out = count_flops(lambda: unit(x))
    grad = torch.randn(out.shape, generator=gen, dtype=out.dtype)
    bwd_flops = count_flops(lambda: out.backward(grad))[0] if out.requires_grad else 0
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
    }
    return row, out.detach(), grad if out.requires_grad else None


def profile_model(
    model: SplittableModel,
    batch_size: int = 32,
    repeats: int = 15,
    bits_per_activation: int = 32,
    bits_per_param: int = 32,
    seed: int = 0,
    warmup: int = 2,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
) -> list[dict]:
    """One per-sample row per unit, in order (see PROFILE_FIELDS); runs on a train-mode copy of model.

    FLOPs and sizes are counted unit by unit; the times are then measured for all units together by
    ``time_units`` (warm-up, interleaved repeats, medians, spread). ``time_s`` = ``time_fwd_s`` +
    ``time_bwd_s`` (medians); ``time_min_s``, ``time_q25_s``, ``time_q75_s``, ``time_max_s`` give the spread
    of the per-repeat total, per sample. ``time_step_s`` is per *batch*, not per sample: the median time of
    one ``torch.optim.SGD(momentum, weight_decay)`` step of the unit's parameters (the training's optimiser;
    its cost grows with the parameters, not with the batch, and FLOP counts leave it out). Times are in the
    clock ``timing_clock(torch.get_num_threads())`` names: this thread's CPU time at one torch thread, else wall.
    """
    if batch_size < 1 or repeats < 1 or warmup < 0:
        raise ValueError(f"batch_size and repeats must be >= 1 and warmup >= 0, got {batch_size}, {repeats}, {warmup}")
    work = copy.deepcopy(model).train()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((batch_size, *model.input_shape), generator=gen)
    rows, cases = [], []
    for index, (name, unit) in enumerate(work.units.items()):
        unit_input = x if index == 0 else x.requires_grad_(True)
        row, x, grad = profile_unit(name, unit, unit_input, gen, bits_per_activation, bits_per_param)
        rows.append(row)
        cases.append((unit, unit_input, grad))
    steps = [_sgd_step(unit, momentum, weight_decay) for unit, _, _ in cases]
    clock = timing_clock(torch.get_num_threads())[1]
    for row, t in zip(rows, time_units(cases, repeats, warmup, seed, steps, clock), strict=True):
        row.update({
            "time_fwd_s": t["fwd"] / batch_size,
            "time_bwd_s": t["bwd"] / batch_size,
            "time_s": (t["fwd"] + t["bwd"]) / batch_size,
            "time_min_s": t["min"] / batch_size,
            "time_q25_s": t["q25"] / batch_size,
            "time_q75_s": t["q75"] / batch_size,
            "time_max_s": t["max"] / batch_size,
            "time_step_s": t["step"],
        })
    return rows


def _sgd_step(unit: nn.Module, momentum: float, weight_decay: float) -> Callable[[], object] | None:
    """One SGD step of the unit's trainable parameters as the training takes it, or None if it has none."""
    params = [p for p in unit.parameters() if p.requires_grad]
    if not params:
        return None
    opt = torch.optim.SGD(params, lr=1e-6, momentum=momentum, weight_decay=weight_decay)
    return opt.step


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


def write_profile(rows: list[dict], json_path: str | Path, csv_path: str | Path, meta: dict) -> None:
    """Write {"meta": meta, "units": rows} as JSON and the rows as CSV, each atomically."""
    write_json(Path(json_path), {"meta": meta, "units": rows}, indent=2)
    _atomic_write(Path(csv_path), _csv_text(rows))


