"""The server's side of one device's round, and what it measures: the wire protocol of a round as seen from
rank 0, independent of the method's maths (hetsfl.runtime.server).

A split round (SFL-V1, SFL-V2, SL) posts the receives of the round before anything is sent (so uploads of
all devices flow at once, each on its own connection), sends the model, answers each smashed batch with its
gradient (computed by ``step``) and receives the trained model and the device's report. An FL round sends
the model and receives the trained model with its losses. SFL-V2 computes all devices' batches in the main
thread, in the engine's device order (serve_in_device_order).
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from hetsfl.blocks import server_step  # the step the profile stage times
from hetsfl.runtime.comm import Kind, Link, Pending, Received
from hetsfl.runtime.errors import CommError
from hetsfl.runtime.packing import Layout, pack, unpack
from hetsfl.runtime.plan import REPORT_FIELDS, REPORT_LAYOUT, Plan
from hetsfl.train.schedule import device_order

__all__ = [
    "DeviceRecord",
    "StepFn",
    "load_units",
    "results",
    "run_parallel",
    "serve_in_device_order",
    "serve_split",
    "serve_whole",
    "server_step",
]


def load_units(dst: nn.Module, global_state: dict[str, torch.Tensor]) -> None:
    """Copy the global state into a Sequential of units (keys ``<unit>.<rest>``) in place."""
    with torch.no_grad():
        for key, tensor in dst.state_dict().items():
            tensor.copy_(global_state["units." + key])


@dataclass
class DeviceRecord:
    """What the server measured and received for one device in one round."""

    device: int
    t_start: float = math.nan
    t_end: float = math.nan
    server_compute_s: float = 0.0
    server_cpu_s: float = 0.0
    up_bytes: float = 0.0
    up_s: float = 0.0
    up_msgs: int = 0
    up_latency_s: float = 0.0
    losses: list[torch.Tensor] = field(default_factory=list)
    upload: dict[str, torch.Tensor] = field(default_factory=dict)
    report: dict[str, float] = field(default_factory=dict)

    def computed(self, t0: float, cpu0: float) -> None:
        """Add a server compute block for this device begun at wall time t0 (perf_counter) and thread CPU
        time cpu0 (thread_time), both read in the computing thread."""
        self.server_compute_s += time.perf_counter() - t0
        self.server_cpu_s += time.thread_time() - cpu0

    def uplink(self, got: Received) -> None:
        self.up_bytes += got.nbytes
        self.up_s += got.transfer_s
        self.up_msgs += 1
        self.up_latency_s += got.latency_s


StepFn = Callable[[int, torch.Tensor, torch.Tensor, DeviceRecord], tuple[torch.Tensor, torch.Tensor | None]]


def serve_split(
    link: Link, plan: Plan, n: int, r: int, local_iters: int, payload: torch.Tensor, step: StepFn
) -> DeviceRecord:
    """One device's round of SFL / SFL-V2 / SL, from the server's side (``local_iters`` batches)."""
    rec = DeviceRecord(n)
    smashed_layout, grad_layout, up_layout = plan.smashed_layout(n), plan.grad_layout(n), plan.up_layout(n)
    needs_grad = plan.needs_grad(n)
    up_pending = link.post(Kind.MODEL_UP, up_layout.nbytes, r)
    report_pending = link.post(Kind.REPORT_UP, REPORT_LAYOUT.nbytes, r)
    smashed = link.post(Kind.SMASHED_UP, smashed_layout.nbytes, r, 0)
    rec.t_start = time.perf_counter()
    link.send(Kind.MODEL_DOWN, payload, r)
    K = local_iters
    for k in range(K):
        got = smashed.wait()
        rec.uplink(got)
        if k + 1 < K:
            smashed = link.post(Kind.SMASHED_UP, smashed_layout.nbytes, r, k + 1)
        batch = unpack(smashed_layout, got.payload)
        loss, grad = step(n, batch["x"], batch["y"], rec)
        rec.losses.append(loss)
        if needs_grad:
            assert grad is not None
            link.send(Kind.GRAD_DOWN, pack(grad_layout, {"x": grad}), r, k)
    _finish(rec, up_pending, report_pending, up_layout)
    return rec


def serve_whole(link: Link, plan: Plan, n: int, r: int, payload: torch.Tensor) -> DeviceRecord:
    """One device's round of FL: model down, trained model and losses up."""
    rec = DeviceRecord(n)
    up_layout = plan.up_layout(n)
    up_pending = link.post(Kind.MODEL_UP, up_layout.nbytes, r)
    report_pending = link.post(Kind.REPORT_UP, REPORT_LAYOUT.nbytes, r)
    rec.t_start = time.perf_counter()
    link.send(Kind.MODEL_DOWN, payload, r)
    _finish(rec, up_pending, report_pending, up_layout, timeout_s=None)
    rec.losses = list(rec.upload.pop("loss"))
    return rec


def _finish(
    rec: DeviceRecord, up_pending: Pending, report_pending: Pending, up_layout: Layout, timeout_s: float | None = None
) -> None:
    """Receive the trained model (the end of the device's round) and the device's report into ``rec``."""
    got = up_pending.wait(timeout_s)
    rec.uplink(got)
    rec.t_end = got.t_done
    rec.upload = unpack(up_layout, got.payload)
    report = unpack(REPORT_LAYOUT, report_pending.wait().payload)
    rec.report = {k: float(report[k]) for k in REPORT_FIELDS}


def results(futures: list[cf.Future]) -> list:
    """The futures' results in order; the first failure (in completion order) is raised as soon as it occurs."""
    done, _ = cf.wait(futures, return_when=cf.FIRST_EXCEPTION)
    for f in futures:
        if f in done and (exc := f.exception()) is not None:
            raise exc
    return [f.result() for f in futures]


def run_parallel(pool: cf.ThreadPoolExecutor, serve: Callable[[int], DeviceRecord], num_devices: int) -> list[DeviceRecord]:
    """``serve(n)`` for every device, each in a thread of ``pool``; the records in device order."""
    return results([pool.submit(serve, n) for n in range(num_devices)])


def serve_in_device_order(
    pool: cf.ThreadPoolExecutor,
    serve: Callable[[int, StepFn], DeviceRecord],
    local_iters: list[int],
    seed: int,
    r: int,
    compute: StepFn,
    wait_s: float,
    who: object,
) -> list[DeviceRecord]:
    """SFL-V2: ``serve(n, step)`` for every device in a thread of ``pool``, where ``step`` hands the batch to
    this (the calling) thread, which runs ``compute`` on the batches in the engine's seeded device order of
    each local iteration (train.schedule.device_order). The records in device order."""
    inbox: list[queue.Queue] = [queue.Queue() for _ in local_iters]

    def step(n: int, x: torch.Tensor, y: torch.Tensor, rec: DeviceRecord) -> tuple[torch.Tensor, torch.Tensor | None]:  # device thread: hand the batch to the main thread, wait for its result
        reply: queue.Queue = queue.Queue(maxsize=1)
        inbox[n].put((x, y, rec, reply))
        try:
            return reply.get(timeout=wait_s)
        except queue.Empty:
            raise CommError(f"{who}: the server's main thread did not process device {n}'s batch "
                            f"within {wait_s:g} s") from None

    futures = [pool.submit(serve, n, step) for n in range(len(local_iters))]
    K = local_iters
    for k in range(max(K)):
        active = [n for n in range(len(K)) if K[n] > k]
        for n in device_order(seed, r, k, active):
            x, y, rec, reply = _next_batch(inbox[n], futures)
            reply.put(compute(n, x, y, rec))
    return results(futures)


def _next_batch(box: queue.Queue, futures: list[cf.Future]) -> tuple:
    """The next item of ``box``; re-raises a device thread's failure instead of waiting for ever."""
    while True:
        try:
            return box.get(timeout=0.2)
        except queue.Empty:
            for f in futures:
                if f.done() and (exc := f.exception()) is not None:
                    raise exc from None
