"""The fixed CPU cost per batch that the per-unit profile does not time (docs/model.md, "Optional fixed costs").

The per-unit profile times each unit's forward and backward pass on its own. A training batch costs more:
the optimiser's step and zero_grad, the loss, indexing the batch, and the Python/autograd overhead of running
the units as one Sequential. This module times, on this host at one torch thread and in this thread's CPU
time (``time.thread_time``, the clock the emulation paces by and H is measured in), the compute blocks of one
batch exactly as the runtime runs them, for every split s = 1..L-1 (and FL's whole step):

- device: hetsfl.blocks.device_forward (zero_grad, units 1..s on ``x[rows]``) and, if units 1..s train,
  device_backward (backward of the cut gradient, step, zero_grad), the two blocks hetsfl.runtime.device paces;
- server: hetsfl.blocks.server_step on units s+1..L (zero_grad, forward, loss, backward, step), the step
  hetsfl.runtime.server runs for each batch;
- FL: hetsfl.blocks.whole_step on the whole model (the runtime's FL device and the engine);

each with fresh ``torch.optim.SGD`` optimisers (hetsfl.blocks.make_sgd), as every round makes them.
Repeats are interleaved across the cases in a seeded order after untimed warm-up rounds (as
hetsfl.profiling.measure.time_units does). The residue per batch is a block's median CPU time minus D times
the per-unit profile's times of the same units (``batch_costs``, a pure function).
"""

from __future__ import annotations

import copy
import random
import statistics
import time
from collections.abc import Sequence

import torch

from hetsfl.blocks import device_backward, device_forward, make_sgd, server_step, whole_step
from hetsfl.models.base import SplittableModel
from hetsfl.profiling.measure import _quantile

__all__ = ["BATCH_COSTS_METHOD", "batch_costs", "measure_batch_costs", "time_batch_blocks"]

BATCH_COSTS_METHOD = (
    "per batch: median thread CPU time (1 torch thread, fresh SGD) of the runtime's blocks (device: "
    "blocks.device_forward + device_backward; server: blocks.server_step; FL: blocks.whole_step) minus "
    "D x the profile's time_fwd_s + time_bwd_s of the same units; device_s, server_s: median over splits "
    "1..L-1, clipped at 0"
)

_LR = 1e-3  # the step's cost does not depend on the learning rate


def time_batch_blocks(
    model: SplittableModel,
    *,
    batch_size: int,
    momentum: float,
    weight_decay: float,
    seed: int,
    repeats: int,
    warmup: int = 2,
) -> dict[int, dict[str, list[float]]]:
    """Thread CPU seconds of one batch's compute blocks per repeat, at one torch thread, on a train-mode copy.

    Keys s = 1..L-1: {"device": [...], "server": [...]} (one split iteration: both device blocks, the server
    step); key L: {"device": [...]} (FL's whole step). Each repeat round runs every case once, in a fresh
    seeded order, with fresh optimisers and a fresh batch of random inputs and labels drawn from a pool."""
    if batch_size < 1 or repeats < 1 or warmup < 0:
        raise ValueError(f"batch_size and repeats must be >= 1 and warmup >= 0, got {batch_size}, {repeats}, {warmup}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # thread_time sees this thread only
    try:
        return _time_blocks(copy.deepcopy(model).train(), batch_size, momentum, weight_decay, seed, repeats, warmup)
    finally:
        torch.set_num_threads(threads)


def _time_blocks(
    work: SplittableModel, batch_size: int, momentum: float, weight_decay: float, seed: int, repeats: int, warmup: int
) -> dict[int, dict[str, list[float]]]:
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
        parts[s] = (client, server, any(p.requires_grad for p in client.parameters()))
    times: dict[int, dict[str, list[float]]] = {s: {"device": [], "server": []} for s in parts}
    times[L] = {"device": []}
    rng = random.Random(seed)
    order = list(times)
    for round_ in range(warmup + repeats):
        rng.shuffle(order)
        for s in order:
            rows = torch.randperm(pool, generator=gen)[:batch_size]
            if s == L:
                opt = make_sgd(work, **sgd)
                t0 = time.thread_time()
                whole_step(work, opt, x[rows], y[rows])
                measured = {"device": time.thread_time() - t0}
            else:
                client, server, needs_grad = parts[s]
                measured = _split_iteration(client, server, needs_grad, sgd, x, y[rows], rows)
            if round_ >= warmup:
                for key, value in measured.items():
                    times[s][key].append(value)
    return times


def _split_iteration(
    client: torch.nn.Module,
    server: torch.nn.Module,
    needs_grad: bool,
    sgd: dict[str, float],
    x: torch.Tensor,
    y: torch.Tensor,
    rows: torch.Tensor,
) -> dict[str, float]:
    """CPU seconds of one split iteration's device blocks and server step, as hetsfl.runtime runs them (the
    messages between them, not compute, are replaced by copies)."""
    opt_c, opt_s = make_sgd(client, **sgd), make_sgd(server, **sgd)
    t0 = time.thread_time()
    out = device_forward(client, opt_c, x[rows])
    device = time.thread_time() - t0
    smashed = out.detach().clone()  # the server's own tensor, as unpacked from the message
    t0 = time.thread_time()
    _, grad = server_step(server, opt_s, smashed, y, needs_grad)
    srv = time.thread_time() - t0
    if needs_grad:
        assert grad is not None
        grad = grad.clone()  # the device's own tensor, as unpacked from the message
        t0 = time.thread_time()
        device_backward(out, grad, opt_c)
        device += time.thread_time() - t0
    return {"device": device, "server": srv}


def _stats(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "q25": _quantile(list(values), 0.25),
            "q75": _quantile(list(values), 0.75)}


def batch_costs(times: dict[int, dict[str, list[float]]], rows: Sequence[dict], batch_size: int) -> dict:
    """The per-batch residue from ``time_batch_blocks``' times and the per-unit profile ``rows`` (per-sample
    ``time_fwd_s``, ``time_bwd_s``) measured at ``batch_size`` (seconds per batch, host CPU time).

    Per split s: device residue = median CPU of the device blocks - D Σ_{j<=s} t_j, server residue = median CPU
    of the server step - D Σ_{j>s} t_j; FL's = median CPU of the whole step - D Σ_j t_j (``fl``). ``device_s``
    and ``server_s`` are the medians over the splits 1..L-1 clipped at 0 (a model of one unit: FL's residue and
    0), ``*_range_s`` the smallest and largest residue over the splits."""
    L = len(rows)
    if set(times) != set(range(1, L + 1)):
        raise ValueError(f"times must have the splits 1..{L} of the {L} profiled units, got {sorted(times)}")
    t = [float(r["time_fwd_s"]) + float(r["time_bwd_s"]) for r in rows]
    per_split = []
    for s in range(1, L):
        dev, srv = _stats(times[s]["device"]), _stats(times[s]["server"])
        dev_units, srv_units = batch_size * sum(t[:s]), batch_size * sum(t[s:])
        per_split.append({
            "split": s,
            "device_cpu_s": dev["median"], "device_cpu_q25_s": dev["q25"], "device_cpu_q75_s": dev["q75"],
            "device_units_s": dev_units, "device_s": dev["median"] - dev_units,
            "server_cpu_s": srv["median"], "server_cpu_q25_s": srv["q25"], "server_cpu_q75_s": srv["q75"],
            "server_units_s": srv_units, "server_s": srv["median"] - srv_units,
        })
    whole = _stats(times[L]["device"])
    fl = {"device_cpu_s": whole["median"], "device_cpu_q25_s": whole["q25"], "device_cpu_q75_s": whole["q75"],
          "device_units_s": batch_size * sum(t), "device_s": whole["median"] - batch_size * sum(t)}
    out: dict = {"batch_size": batch_size, "repeats": len(times[L]["device"])}
    if per_split:
        for side in ("device", "server"):
            residues = [p[f"{side}_s"] for p in per_split]
            out[f"{side}_s"] = max(0.0, statistics.median(residues))
            out[f"{side}_range_s"] = [min(residues), max(residues)]
    else:
        out.update(device_s=max(0.0, fl["device_s"]), server_s=0.0, device_range_s=[fl["device_s"]] * 2,
                   server_range_s=[0.0, 0.0])
    out.update(fl_s=max(0.0, fl["device_s"]), fl=fl, per_split=per_split, method=BATCH_COSTS_METHOD)
    return out


def measure_batch_costs(
    model: SplittableModel,
    rows: Sequence[dict],
    *,
    batch_size: int,
    momentum: float,
    weight_decay: float,
    seed: int,
    repeats: int,
    warmup: int = 2,
) -> dict:
    """``batch_costs`` of ``model`` on this host against its per-unit profile ``rows`` (measured at
    ``batch_size``), plus ``wall_s``: how long the measurement took."""
    start = time.perf_counter()
    times = time_batch_blocks(model, batch_size=batch_size, momentum=momentum, weight_decay=weight_decay, seed=seed,
                              repeats=repeats, warmup=warmup)
    return {**batch_costs(times, rows, batch_size), "wall_s": time.perf_counter() - start}
