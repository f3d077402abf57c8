"""The server rank (main server and fed server): serves every device, aggregates, evaluates, checkpoints.

Each device is served by its own thread (FL, SFL, SFL-V2): the thread posts the receives of the device's
round before anything is sent (so uploads of all devices flow at once, each on its own connection), sends
the model, answers the device's smashed data with gradients and receives the trained model and the
device's report. SFL-V1 computes each device's server-side units in that thread, on the server's own copy
for that device; SFL-V2 hands the smashed data to the main thread, which runs the one shared server-side
model in the engine's seeded device order; SL serves the devices one after another in the main thread.
Aggregation is the engine's (hetsfl.train.aggregate) and adds the copies in device order, so the numbers
equal the in-process engine's. This module holds the per-method round logic, checkpoints and the loop; the
wire protocol of one device's round is in runtime/serving.py, the rows it records in runtime/rows.py.
"""

from __future__ import annotations

import concurrent.futures as cf
import copy
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from hetsfl.runtime import rows
from hetsfl.runtime.comm import Link, PeerInfo
from hetsfl.runtime.errors import RunConfigError
from hetsfl.runtime.faults import fault_point
from hetsfl.runtime.pacing import server_pace
from hetsfl.runtime.packing import pack
from hetsfl.runtime.plan import MOMENTUM_PREFIX, Plan
from hetsfl.runtime.records import (
    CHECKPOINT_NAME,
    OUTPUT_NAMES,
    check_resumable,
    checkpoint_content,
    read_checkpoint,
    write_json,
    write_outputs,
    write_torch,
)
from hetsfl.runtime.runfile import Run
from hetsfl.runtime.serving import (
    DeviceRecord,
    StepFn,
    load_units,
    run_parallel,
    serve_in_device_order,
    serve_split,
    serve_whole,
    server_step,
)
from hetsfl.train import evaluate
from hetsfl.train.aggregate import UnitAverager, fedavg_unit_weights, sfl_v1_unit_weights, sfl_v2_unit_weights
from hetsfl.train.methods import make_sgd
from hetsfl.train.schedule import round_torch_seed

StepOut = tuple[torch.Tensor, torch.Tensor | None]  # a server step's loss and cut gradient (None: no backward)

__all__ = ["ServerRunner", "server_step"]

logger = logging.getLogger("hetsfl.runtime")


class ServerRunner:
    """Rank 0 of a run."""

    def __init__(self, run: Run, me: PeerInfo, links: list[Link], plan: Plan, x_test: torch.Tensor,
                 y_test: torch.Tensor, sizes: list[int], progress: bool = True) -> None:
        self.run_ = run
        self.spec = run.spec
        self.me = me
        self.links = links
        self.plan = plan
        self.model = plan.model
        self.x_test, self.y_test = x_test, y_test
        self.sizes = sizes
        self.N = run.num_devices
        self.L = plan.num_units
        self.progress = progress
        self.opt_args = {"lr": self.spec.lr, "momentum": self.spec.momentum, "weight_decay": self.spec.weight_decay}
        self.out = Path(run.run_dir)
        self.timeout_s = run.options.timeout_s
        method = self.spec.method
        self.pool = cf.ThreadPoolExecutor(max_workers=self.N, thread_name_prefix="serve") if method != "sl" else None
        self.bits = plan.model_bits()
        if method == "fl":
            self.weights = fedavg_unit_weights(sizes, self.L)
        elif method == "sfl":
            self.weights, _ = sfl_v1_unit_weights(self.spec.splits, sizes, self.L)
            self.copies = [copy.deepcopy(self.model.unit_range(s, self.L)) for s in self.spec.splits]
        elif method == "sfl_v2":
            self.dev_w, self.srv_w = sfl_v2_unit_weights(self.spec.splits, sizes, self.L)
            self.min_split = min(self.spec.splits)
            self.server_model = copy.deepcopy(self.model.unit_range(self.min_split, self.L))
            items = list(self.server_model.named_children())
            self.server_parts = {
                s: nn.Sequential(OrderedDict(items[s - self.min_split :])) for s in sorted(set(self.spec.splits))
            }
        elif method == "sl":
            _, self.sl_server = self.model.split(self.spec.splits[0])
            self.opt_s = make_sgd(self.sl_server, **self.opt_args)
            mom = plan.momentum_layout(0)
            self.sl_momentum = {k[len(MOMENTUM_PREFIX) :]: torch.zeros(shape, dtype=dt) for k, shape, dt in mom.entries}
        self.metrics: list[dict] = []
        self.device_rows: list[dict] = []
        self.round_rows: list[dict] = []

    # ------------------------------------------------------------------------------------- checkpoints
    def resume(self) -> int:
        """Load the checkpoint if there is one; returns the number of rounds already done."""
        path = self.out / CHECKPOINT_NAME
        try:
            ckpt = read_checkpoint(path)
        except Exception as exc:
            raise RunConfigError(
                f"cannot read checkpoint {path} ({type(exc).__name__}: {exc}); delete it to start over"
            ) from exc
        if ckpt is None:
            return 0
        check_resumable(ckpt, path, self.spec.to_dict(), self.run_.data_sha256, self.N, self.spec.rounds)
        with torch.no_grad():
            for key, tensor in self.model.state_dict().items():
                tensor.copy_(ckpt["model"][key])
        if self.spec.method == "sl":
            if self.opt_s is not None and ckpt["method_state"]["opt_server"] is not None:
                self.opt_s.load_state_dict(ckpt["method_state"]["opt_server"])
            self.sl_momentum = dict(ckpt["method_state"]["client_momentum"])
        self.metrics = list(ckpt["metrics"])
        self.device_rows = list(ckpt["devices"])
        self.round_rows = list(ckpt["rounds"])
        logger.info("resuming from %s at round %d of %d", path, ckpt["round"], self.spec.rounds)
        return int(ckpt["round"])

    def _save_checkpoint(self, done: int) -> None:
        state = {}
        if self.spec.method == "sl":
            state = {
                "opt_server": None if self.opt_s is None else self.opt_s.state_dict(),
                "client_momentum": {k: v.clone() for k, v in self.sl_momentum.items()},
            }
        content = checkpoint_content(self.spec.to_dict(), self.run_.data_sha256, self.N, done, self.model, state,
                                     self.metrics, self.device_rows, self.round_rows)
        write_torch(content, self.out / CHECKPOINT_NAME)

    # ---------------------------------------------------------------------------------------- serving
    def _parallel(self, serve: Callable[[int], DeviceRecord]) -> list[DeviceRecord]:
        assert self.pool is not None  # every method but sl serves devices in parallel
        return run_parallel(self.pool, serve, self.N)

    def _serve_split(self, n: int, r: int, payload: torch.Tensor, step: StepFn) -> DeviceRecord:
        return serve_split(self.links[n], self.plan, n, r, self.spec.local_iters[n], payload, step)

    # ---------------------------------------------------------------------------------------- methods
    def _round_fl(self, r: int) -> tuple[list[DeviceRecord], torch.Tensor]:
        global_state = self.model.state_dict()
        payload = pack(self.plan.down_layout(0), global_state)
        records = self._parallel(lambda n: serve_whole(self.links[n], self.plan, n, r, payload))
        averager = UnitAverager(global_state, self.model.unit_names)
        loss_sum = torch.zeros((), dtype=torch.float32)
        for rec in records:
            averager.add(rec.upload, self.weights[:, rec.device])
            for loss in rec.losses:
                loss_sum += loss
        averager.load_into(self.model)
        return records, loss_sum

    def _round_sfl(self, r: int) -> tuple[list[DeviceRecord], torch.Tensor]:
        global_state = self.model.state_dict()
        opts = []
        for server in self.copies:
            load_units(server, global_state)
            server.train()
            opts.append(make_sgd(server, **self.opt_args))

        def step(n: int, x: torch.Tensor, y: torch.Tensor, rec: DeviceRecord) -> StepOut:
            t, cpu = time.perf_counter(), time.thread_time()
            with server_pace(n):
                out = server_step(self.copies[n], opts[n], x, y, self.plan.needs_grad(n))
            rec.computed(t, cpu)
            return out

        payloads = [pack(self.plan.down_layout(n), global_state) for n in range(self.N)]
        records = self._parallel(lambda n: self._serve_split(n, r, payloads[n], step))
        averager = UnitAverager(global_state, self.model.unit_names)
        loss_sum = torch.zeros((), dtype=torch.float32)
        for rec in records:
            n = rec.device
            averager.add(rec.upload, self.weights[:, n])
            averager.add(self.copies[n].state_dict(), self.weights[:, n], prefix="")
            for loss in rec.losses:
                loss_sum += loss
        averager.load_into(self.model)
        return records, loss_sum

    def _round_sfl_v2(self, r: int) -> tuple[list[DeviceRecord], torch.Tensor]:
        global_state = self.model.state_dict()
        load_units(self.server_model, global_state)
        self.server_model.train()
        opt_s = make_sgd(self.server_model, **self.opt_args)
        loss_sum = torch.zeros((), dtype=torch.float32)

        def compute(n: int, x: torch.Tensor, y: torch.Tensor, rec: DeviceRecord) -> StepOut:  # main thread, in the engine's device order
            nonlocal loss_sum
            t, cpu = time.perf_counter(), time.thread_time()
            loss, grad = server_step(self.server_parts[self.spec.splits[n]], opt_s, x, y, self.plan.needs_grad(n))
            rec.computed(t, cpu)
            loss_sum += loss
            return loss, grad

        payloads = [pack(self.plan.down_layout(n), global_state) for n in range(self.N)]
        assert self.pool is not None
        records = serve_in_device_order(
            self.pool, lambda n, step: self._serve_split(n, r, payloads[n], step), self.spec.local_iters,
            self.spec.seed, r, compute, self.timeout_s * self.N, self.me,
        )
        averager = UnitAverager(global_state, self.model.unit_names)
        for rec in records:
            averager.add(rec.upload, self.dev_w[:, rec.device])
        averager.add(self.server_model.state_dict(), self.srv_w, prefix="")
        averager.load_into(self.model)
        return records, loss_sum

    def _round_sl(self, r: int) -> tuple[list[DeviceRecord], torch.Tensor]:
        self.model.train()

        def step(n: int, x: torch.Tensor, y: torch.Tensor, rec: DeviceRecord) -> StepOut:
            t, cpu = time.perf_counter(), time.thread_time()
            with server_pace(n):
                out = server_step(self.sl_server, self.opt_s, x, y, self.plan.needs_grad(n))
            rec.computed(t, cpu)
            return out

        records = []
        loss_sum = torch.zeros((), dtype=torch.float32)
        model_keys = self.plan.model_layout(0).keys
        for n in range(self.N):
            global_state = self.model.state_dict()
            tensors = dict(global_state)
            tensors.update({MOMENTUM_PREFIX + k: v for k, v in self.sl_momentum.items()})
            rec = self._serve_split(n, r, pack(self.plan.down_layout(n), tensors), step)
            with torch.no_grad():
                for key in model_keys:
                    global_state[key].copy_(rec.upload[key])
            self.sl_momentum = {
                k[len(MOMENTUM_PREFIX) :]: v for k, v in rec.upload.items() if k.startswith(MOMENTUM_PREFIX)
            }
            for loss in rec.losses:
                loss_sum += loss
            records.append(rec)
        return records, loss_sum

    # -------------------------------------------------------------------------------------------- loop
    def run(self, start: int, stop: int) -> None:
        spec = self.spec
        if start < spec.rounds:
            for name in OUTPUT_NAMES:
                (self.out / name).unlink(missing_ok=True)
        round_fn = {"fl": self._round_fl, "sfl": self._round_sfl, "sfl_v2": self._round_sfl_v2,
                    "sl": self._round_sl}[spec.method]
        bar = tqdm(range(start, stop), total=stop, initial=start, desc=f"{spec.method} (distributed)",
                   unit="round", disable=None if self.progress else True)
        for r in bar:
            torch.manual_seed(round_torch_seed(spec.seed, r))
            fault_point(r + 1)
            t0 = time.perf_counter()
            records, loss_sum = round_fn(r)
            t_train = max(rec.t_end for rec in records)
            t1 = time.perf_counter()
            test_acc, test_loss = evaluate(self.model, self.x_test, self.y_test, spec.eval_batch_size)
            t2 = time.perf_counter()
            batches = sum(spec.local_iters)
            self._add_rows(r, records, float(loss_sum.item()) / max(batches, 1), test_acc, test_loss)
            done = r + 1
            self.round_rows.append(rows.round_row(spec, done, records, t0, t_train, t1, t2))
            if done % spec.checkpoint_every == 0 or done == spec.rounds or done == stop:
                t3 = time.perf_counter()
                self._save_checkpoint(done)
                logger.info("checkpoint after round %d written in %.3f s", done, time.perf_counter() - t3)
            write_json({"round": done, "rounds": spec.rounds, "stop": stop, "test_acc": test_acc,
                        "wall_s": t1 - t0}, self.out / "progress.json")
            logger.info("round %d/%d: test_acc=%.4f test_loss=%.4f train_loss=%.4f wall=%.3fs", done, spec.rounds,
                        test_acc, test_loss, self.metrics[-1]["train_loss"], t1 - t0)
            bar.set_postfix(acc=f"{test_acc:.4f}", loss=f"{self.metrics[-1]['train_loss']:.3f}")
        bar.close()
        if stop < spec.rounds:
            logger.info("stopping after round %d as asked (checkpoint in %s)", stop, self.out / CHECKPOINT_NAME)
            return
        self._write_outputs()

    def _add_rows(self, r: int, records: list[DeviceRecord], train_loss: float, test_acc: float,
                  test_loss: float) -> None:
        prev = self.metrics[-1] if self.metrics else None
        self.metrics.append(rows.metrics_row(self.spec, self.bits, prev, r, train_loss, test_acc, test_loss))
        hosts = [link.peer.host for link in self.links]
        self.device_rows.extend(rows.device_rows(self.spec, hosts, r, records))

    def _write_outputs(self) -> None:
        hosts = [self.me.host] + [link.peer.host for link in self.links]
        summary = rows.summary(self.spec, self.N, self.L, hosts, self.metrics, self.round_rows)
        write_outputs(self.out, self.metrics, self.device_rows, self.round_rows, self.model, summary)
