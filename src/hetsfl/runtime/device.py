"""A device rank: trains its part of the model on its own partition, one round after another.

Per round (0-based r) the device receives its model from the server (posted in advance), then

- FL: K_n whole-model SGD steps, uploads the model and its K_n batch losses;
- SFL, SFL-V2, SL: K_n split iterations (units 1..s_n forward, smashed data and labels up, gradient down,
  backward, step), uploads units 1..s_n (SL: with their momentum buffers, handed on to the next device);

and finally sends its measurements of the round (see plan.REPORT_FIELDS). Batches come from the engine's
BatchSchedule (a pure function of seed, device and round), optimisers are the engine's SGD, created afresh
each round (SL: momentum handed on), and torch is seeded per round as the engine does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
import torch

from hetsfl.blocks import device_backward, device_forward
from hetsfl.runtime.comm import Kind, Link, Pending, Received
from hetsfl.runtime.faults import fault_point
from hetsfl.runtime.pacing import device_pace
from hetsfl.runtime.packing import pack, unpack
from hetsfl.runtime.plan import MOMENTUM_PREFIX, REPORT_FIELDS, REPORT_LAYOUT, Plan
from hetsfl.runtime.runfile import Run
from hetsfl.train.methods import make_sgd, whole_step
from hetsfl.train.schedule import BatchSchedule, round_torch_seed

__all__ = ["DeviceRunner"]

logger = logging.getLogger("hetsfl.runtime")


class _Stats:
    def __init__(self) -> None:
        self.v = dict.fromkeys(REPORT_FIELDS, 0.0)

    def down(self, got: Received) -> None:
        self.v["down_bytes"] += got.nbytes
        self.v["down_s"] += got.transfer_s
        self.v["down_msgs"] += 1
        self.v["down_latency_s"] += got.latency_s

    def compute(self, t0: float, cpu0: float) -> None:
        """Add a compute block begun at wall time t0 (perf_counter) and thread CPU time cpu0 (thread_time)."""
        self.v["device_compute_s"] += time.perf_counter() - t0
        self.v["device_cpu_s"] += time.thread_time() - cpu0

    def tensors(self) -> dict[str, torch.Tensor]:
        return {k: torch.tensor(v, dtype=torch.float64) for k, v in self.v.items()}


class DeviceRunner:
    """Device n (rank n + 1) of a run."""

    def __init__(self, run: Run, n: int, link: Link, plan: Plan, x: torch.Tensor, y: torch.Tensor,
                 parts: Sequence[np.ndarray]):
        self.run_ = run
        self.spec = run.spec
        self.n = n
        self.link = link
        self.plan = plan
        self.x, self.y = x, y
        self.schedule = BatchSchedule(parts, self.spec.local_iters, self.spec.batch_sizes, self.spec.seed)
        self.model = plan.model  # its own copy of the structure; weights come from the server
        self.opt_args = {"lr": self.spec.lr, "momentum": self.spec.momentum, "weight_decay": self.spec.weight_decay}
        fl = self.spec.method == "fl"
        self.client = self.model if fl else self.model.unit_range(0, plan.split(n))
        prefix = "" if fl else "units."  # global keys for the client's state
        self.client_state = {prefix + k: v for k, v in self.client.state_dict().items()}
        self.client_params = {prefix + k: p for k, p in self.client.named_parameters() if p.requires_grad}
        self.hands_on_momentum = self.spec.method == "sl" and self.spec.momentum != 0.0
        self.down_layout = plan.down_layout(n)
        self.up_layout = plan.up_layout(n)
        # SL waits for its turn behind up to N - 1 other devices
        waits = run.num_devices if self.spec.method == "sl" else 1
        self.round_timeout_s = run.options.timeout_s * waits

    def run(self, start: int, stop: int) -> None:
        if start >= stop:
            return
        pending: Pending | None = self.link.post(Kind.MODEL_DOWN, self.down_layout.nbytes, start)
        for r in range(start, stop):
            torch.manual_seed(round_torch_seed(self.spec.seed, r))
            t0 = time.perf_counter()
            assert pending is not None  # _round posts the next model receive while rounds remain
            pending = self._round(r, pending, r + 1 < stop)
            logger.info("device %d round %d/%d done in %.3f s", self.n, r + 1, stop, time.perf_counter() - t0)

    def _positions(self, r: int) -> np.ndarray:
        return self.schedule.positions(self.n, r)

    def _round(self, r: int, pending: Pending, more: bool) -> Pending | None:
        stats = _Stats()
        got = pending.wait(self.round_timeout_s)
        stats.v["idle_s"] = got.wait_s
        stats.down(got)
        fault_point(r + 1)
        received = unpack(self.down_layout, got.payload)
        with torch.no_grad():
            for key, tensor in self.client_state.items():
                tensor.copy_(received[key])
        self.model.train()
        opt = make_sgd(self.client, **self.opt_args)
        if self.hands_on_momentum and opt is not None:
            # zeros before the first step give the same update as torch's "no buffer yet"
            for key, p in self.client_params.items():
                opt.state[p]["momentum_buffer"] = received[MOMENTUM_PREFIX + key]
        idx = torch.from_numpy(self._positions(r))
        up = dict(self.client_state)
        if self.spec.method == "fl":
            losses = []
            for k in range(idx.shape[0]):
                t, cpu = time.perf_counter(), time.thread_time()
                with device_pace():
                    losses.append(whole_step(self.model, opt, self.x[idx[k]], self.y[idx[k]]))
                stats.compute(t, cpu)
            up["loss"] = torch.stack(losses)
        else:
            self._split_iterations(r, idx, opt, stats)
        if self.hands_on_momentum:
            for key, p in self.client_params.items():
                buf = opt.state.get(p, {}).get("momentum_buffer") if opt is not None else None
                up[MOMENTUM_PREFIX + key] = buf if buf is not None else torch.zeros_like(p)
        nxt = self.link.post(Kind.MODEL_DOWN, self.down_layout.nbytes, r + 1) if more else None
        stats.v["send_s"] += self.link.send(Kind.MODEL_UP, pack(self.up_layout, up), r)
        self.link.send(Kind.REPORT_UP, pack(REPORT_LAYOUT, stats.tensors()), r)
        return nxt

    def _split_iterations(
        self, r: int, idx: torch.Tensor, opt: torch.optim.SGD | None, stats: _Stats
    ) -> None:
        n, link, plan = self.n, self.link, self.plan
        smashed_layout, grad_layout = plan.smashed_layout(n), plan.grad_layout(n)
        needs_grad = plan.needs_grad(n)
        for k in range(idx.shape[0]):
            grad_pending = link.post(Kind.GRAD_DOWN, grad_layout.nbytes, r, k) if needs_grad else None
            rows = idx[k]
            t, cpu = time.perf_counter(), time.thread_time()
            with device_pace():
                out = device_forward(self.client, opt, self.x[rows])
            stats.compute(t, cpu)
            payload = pack(smashed_layout, {"x": out.detach(), "y": self.y[rows]})
            stats.v["send_s"] += link.send(Kind.SMASHED_UP, payload, r, k)
            if grad_pending is None:
                continue
            got = grad_pending.wait()
            stats.v["wait_s"] += got.wait_s
            stats.down(got)
            grad = unpack(grad_layout, got.payload)["x"]
            t, cpu = time.perf_counter(), time.thread_time()
            with device_pace():
                device_backward(out, grad, opt)
            stats.compute(t, cpu)
