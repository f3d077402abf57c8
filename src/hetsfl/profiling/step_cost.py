"""The fixed CPU cost per batch that the per-unit profile does not time (docs/model.md, "Optional fixed costs").

The per-unit profile times each unit's forward and backward pass on its own. A training batch costs more:
the optimiser's step and zero_grad, allocating fresh gradients, the loss, indexing the batch, and the
Python/autograd overhead of running the units as one Sequential. This module times, on this host at one
torch thread and in this thread's CPU time (``time.thread_time``, the clock the emulation paces by and H is
measured in), the compute blocks of one batch exactly as the runtime runs them, for every split s = 1..L-1
(and FL's whole step):

- device: hetsfl.blocks.device_forward (zero_grad, units 1..s on ``x[rows]``) and, if units 1..s train,
  device_backward (backward of the cut gradient, step, zero_grad), the two blocks hetsfl.runtime.device paces;
- server: hetsfl.blocks.server_step on units s+1..L (zero_grad, forward, loss, backward, step), the step
  hetsfl.runtime.server runs for each batch;
- FL: hetsfl.blocks.whole_step on the whole model (the runtime's FL device and the engine);

each with fresh ``torch.optim.SGD`` optimisers (hetsfl.blocks.make_sgd), as every round makes them; and, in
the same rounds and clock, every unit's forward and backward pass alone as the per-unit profile times it
(hetsfl.profiling.measure._timed_pass). Each round runs every case once in a fresh seeded order, after
untimed warm-up rounds (as hetsfl.profiling.measure.time_units does), so load on a busy host hits blocks and
units alike. With ``idle_s`` > 0 every timed block starts after sleeping that long, as the emulation's paced
processes start every block after waiting (for their pace, a message or the model): on this host a block
started after idling costs 1-6 ms more CPU than back to back (cold caches and CPU after the wait;
docs/emulation.md); the units are still timed back to back, as the per-unit profile times them. The residue
per batch is a block's median CPU time minus the units' median CPU times (``batch_costs``, a pure function). Timing the units here, rather than taking the profile's ``time_fwd_s`` and
``time_bwd_s``, keeps both sides in the same rounds and clock (the profile's times are wall times at more
than one torch thread, and come from other rounds).
"""

from __future__ import annotations

import copy
import math
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from hetsfl.blocks import device_backward, device_forward, has_trainable, make_sgd, server_step, whole_step
from hetsfl.models.base import SplittableModel
from hetsfl.profiling.measure import _quantile, _timed_pass

__all__ = ["BATCH_COSTS_METHOD", "BlockTimes", "batch_costs", "measure_batch_costs", "time_batch_blocks"]

BATCH_COSTS_METHOD = (
    "per batch, thread CPU time at 1 torch thread: median of the runtime's blocks with fresh SGD (device: "
    "blocks.device_forward + device_backward; server: blocks.server_step; FL: blocks.whole_step) minus the "
    "medians of the same units' forward + backward passes timed alone (as the per-unit profile does), in the "
    "same interleaved rounds; device_s, server_s: median over splits 1..L-1, clipped at 0; with idle_s > 0 each "
    "block starts after sleeping idle_s (device: before its forward and before its backward block)"
)

_LR = 1e-3  # the step's cost does not depend on the learning rate
_WHOLE = 0  # case key of FL's whole step (splits are 1..L-1)
_UNITS = -1  # case key of the units' passes


@dataclass
class BlockTimes:
    """Thread CPU seconds per timed round: ``splits[s]`` = {"device": [...], "server": [...]} for s = 1..L-1
    (one split iteration's two device blocks and its server step), ``whole`` FL's whole step, ``units[j]``
    unit j+1's forward + backward pass alone."""

    splits: dict[int, dict[str, list[float]]]
    whole: list[float]
    units: list[list[float]]


def time_batch_blocks(
    model: SplittableModel,
    *,
    batch_size: int,
    momentum: float,
    weight_decay: float,
    seed: int,
    repeats: int,
    warmup: int = 2,
    idle_s: float = 0.0,
) -> BlockTimes:
    """The CPU times of one batch's compute blocks and of the units alone, on a train-mode copy of ``model``
    at one torch thread (restored after): ``repeats`` timed rounds after ``warmup`` untimed ones, each running
    every case once in a fresh seeded order, with fresh optimisers and a fresh batch of random inputs and
    labels drawn from a pool; every block (not the units) after sleeping ``idle_s`` seconds."""
    if batch_size < 1 or repeats < 1 or warmup < 0:
        raise ValueError(f"batch_size and repeats must be >= 1 and warmup >= 0, got {batch_size}, {repeats}, {warmup}")
    if not (math.isfinite(idle_s) and idle_s >= 0):
        raise ValueError(f"idle_s must be seconds >= 0, got {idle_s!r}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # thread_time sees this thread only
    try:
        return _time_blocks(copy.deepcopy(model).train(), batch_size, momentum, weight_decay, seed, repeats, warmup,
                            idle_s)
    finally:
        torch.set_num_threads(threads)


def _unit_cases(
    work: SplittableModel, x: torch.Tensor, gen: torch.Generator
) -> list[tuple[nn.Module, torch.Tensor, torch.Tensor | None]]:
    """(unit, input, output gradient or None) per unit, built as hetsfl.profiling.measure.profile_model does."""
    cases = []
    for index, unit in enumerate(work.units.values()):
        unit_input = x if index == 0 else x.requires_grad_(True)
        out = unit(unit_input)
        grad = torch.randn(out.shape, generator=gen, dtype=out.dtype) if out.requires_grad else None
        cases.append((unit, unit_input, grad))
        x = out.detach()
    return cases


def _idle(seconds: float) -> None:
    """Wait as a paced process waits between blocks (nothing when ``seconds`` is 0)."""
    if seconds > 0:
        time.sleep(seconds)


def _time_blocks(
    work: SplittableModel,
    batch_size: int,
    momentum: float,
    weight_decay: float,
    seed: int,
    repeats: int,
    warmup: int,
    idle_s: float,
) -> BlockTimes:
    L = work.num_units
    gen = torch.Generator().manual_seed(seed)
    pool = 4 * batch_size
    x = torch.randn((pool, *work.input_shape), generator=gen)
    y = torch.randint(0, work.num_classes, (pool,), generator=gen)
    sgd = {"lr": _LR, "momentum": momentum, "weight_decay": weight_decay}
    parts = {}
    for s in range(1, L):
        client, server = work.split(s)
        # the runtime sends a cut gradient back only if units 1..s train (runtime.plan.client_trains)
        parts[s] = (client, server, has_trainable(client))
    units = _unit_cases(work, x[:batch_size].clone(), gen)
    out = BlockTimes({s: {"device": [], "server": []} for s in parts}, [], [[] for _ in units])
    rng = random.Random(seed)
    order = [*parts, _WHOLE, _UNITS]
    unit_order = list(range(L))
    for round_ in range(warmup + repeats):
        timed = round_ >= warmup
        rng.shuffle(order)
        for case in order:
            if case == _UNITS:
                rng.shuffle(unit_order)
                for j in unit_order:
                    fwd, bwd = _timed_pass(*units[j], clock=time.thread_time)
                    if timed:
                        out.units[j].append(fwd + bwd)
                continue
            rows = torch.randperm(pool, generator=gen)[:batch_size]
            if case == _WHOLE:
                opt = make_sgd(work, **sgd)
                _idle(idle_s)
                t0 = time.thread_time()
                whole_step(work, opt, x[rows], y[rows])
                if timed:
                    out.whole.append(time.thread_time() - t0)
            else:
                device, srv = _split_iteration(*parts[case], sgd, x, y[rows], rows, idle_s)
                if timed:
                    out.splits[case]["device"].append(device)
                    out.splits[case]["server"].append(srv)
    return out


def _split_iteration(
    client: nn.Module,
    server: nn.Module,
    needs_grad: bool,
    sgd: dict[str, float],
    x: torch.Tensor,
    y: torch.Tensor,
    rows: torch.Tensor,
    idle_s: float,
) -> tuple[float, float]:
    """CPU seconds of one split iteration's device blocks and of its server step, as hetsfl.runtime runs them
    (the messages between them, not compute, are replaced by copies; each block after idling ``idle_s``)."""
    opt_c, opt_s = make_sgd(client, **sgd), make_sgd(server, **sgd)
    _idle(idle_s)
    t0 = time.thread_time()
    out = device_forward(client, opt_c, x[rows])
    device = time.thread_time() - t0
    smashed = out.detach().clone()  # the server's own tensor, as unpacked from the message
    _idle(idle_s)
    t0 = time.thread_time()
    _, grad = server_step(server, opt_s, smashed, y, needs_grad)
    srv = time.thread_time() - t0
    if needs_grad:
        assert grad is not None
        grad = grad.clone()  # the device's own tensor, as unpacked from the message
        _idle(idle_s)
        t0 = time.thread_time()
        device_backward(out, grad, opt_c)
        device += time.thread_time() - t0
    return device, srv


def _stats(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "q25": _quantile(list(values), 0.25),
            "q75": _quantile(list(values), 0.75)}


def batch_costs(times: BlockTimes) -> dict:
    """The per-batch residue from ``time_batch_blocks``' times (seconds per batch, host CPU time).

    With u_j the median CPU time of unit j's passes alone: per split s, device residue = median CPU of the
    device blocks - Σ_{j<=s} u_j, server residue = median CPU of the server step - Σ_{j>s} u_j; FL's
    (``fl``) = median CPU of the whole step - Σ_j u_j. ``device_s`` and ``server_s`` are the medians over the
    splits 1..L-1 clipped at 0 (a model of one unit: FL's residue and 0), ``*_range_s`` the smallest and
    largest residue over the splits, ``unit_cpu_s`` the u_j."""
    L = len(times.units)
    if sorted(times.splits) != list(range(1, L)):
        raise ValueError(f"times must have the splits 1..{L - 1} of the {L} units, got {sorted(times.splits)}")
    u = [statistics.median(t) for t in times.units]
    per_split = []
    for s in range(1, L):
        dev, srv = _stats(times.splits[s]["device"]), _stats(times.splits[s]["server"])
        dev_units, srv_units = sum(u[:s]), sum(u[s:])
        per_split.append({
            "split": s,
            "device_cpu_s": dev["median"], "device_cpu_q25_s": dev["q25"], "device_cpu_q75_s": dev["q75"],
            "device_units_s": dev_units, "device_s": dev["median"] - dev_units,
            "server_cpu_s": srv["median"], "server_cpu_q25_s": srv["q25"], "server_cpu_q75_s": srv["q75"],
            "server_units_s": srv_units, "server_s": srv["median"] - srv_units,
        })
    whole = _stats(times.whole)
    fl = {"device_cpu_s": whole["median"], "device_cpu_q25_s": whole["q25"], "device_cpu_q75_s": whole["q75"],
          "device_units_s": sum(u), "device_s": whole["median"] - sum(u)}
    out: dict = {"repeats": len(times.whole)}
    if per_split:
        for side in ("device", "server"):
            residues = [p[f"{side}_s"] for p in per_split]
            out[f"{side}_s"] = max(0.0, statistics.median(residues))
            out[f"{side}_range_s"] = [min(residues), max(residues)]
    else:
        out.update(device_s=max(0.0, fl["device_s"]), server_s=0.0, device_range_s=[fl["device_s"]] * 2,
                   server_range_s=[0.0, 0.0])
    out.update(fl_s=max(0.0, fl["device_s"]), fl=fl, per_split=per_split, unit_cpu_s=u, method=BATCH_COSTS_METHOD)
    return out


def measure_batch_costs(
    model: SplittableModel,
    *,
    batch_size: int,
    momentum: float,
    weight_decay: float,
    seed: int,
    repeats: int,
    warmup: int = 2,
    idle_s: float = 0.0,
) -> dict:
    """``batch_costs`` of ``model`` on this host at ``batch_size`` with blocks started after ``idle_s`` seconds
    of idling, with ``batch_size``, ``idle_s`` and ``wall_s`` (how long the measurement took)."""
    start = time.perf_counter()
    times = time_batch_blocks(model, batch_size=batch_size, momentum=momentum, weight_decay=weight_decay, seed=seed,
                              repeats=repeats, warmup=warmup, idle_s=idle_s)
    return {"batch_size": batch_size, "idle_s": idle_s, **batch_costs(times), "wall_s": time.perf_counter() - start}
