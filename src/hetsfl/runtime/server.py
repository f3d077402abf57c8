"""The server rank (main server and fed server): serves every device, aggregates, evaluates, checkpoints.

Each device is served by its own thread (FL, SFL, SFL-V2): the thread posts the receives of the device's
round before anything is sent (so uploads of all devices flow at once, each on its own connection), sends
the model, answers the device's smashed data with gradients and receives the trained model and the
device's report. SFL-V1 computes each device's server-side units in that thread, on the server's own copy
for that device; SFL-V2 hands the smashed data to the main thread, which runs the one shared server-side
model in the engine's seeded device order; SL serves the devices one after another in the main thread.
Aggregation is the engine's (hetsfl.train.aggregate) and adds the copies in device order, so the numbers
equal the in-process engine's.
"""

from __future__ import annotations

import concurrent.futures as cf
import copy
import logging
import math
import queue
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from hetsfl.runtime.comm import Kind, Link, PeerInfo, Received
from hetsfl.runtime.errors import CommError, RunConfigError
from hetsfl.runtime.faults import fault_point
from hetsfl.runtime.pacing import server_pace
from hetsfl.runtime.packing import pack, unpack
from hetsfl.runtime.plan import MOMENTUM_PREFIX, REPORT_FIELDS, REPORT_LAYOUT, Plan
from hetsfl.runtime.records import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    DEVICE_COLUMNS,
    METRICS_COLUMNS,
    OUTPUT_NAMES,
    ROUND_COLUMNS,
    read_checkpoint,
    write_csv,
    write_json,
    write_torch,
)
from hetsfl.runtime.runfile import Run
from hetsfl.train import evaluate
from hetsfl.train.aggregate import UnitAverager, fedavg_unit_weights, sfl_v1_unit_weights, sfl_v2_unit_weights
from hetsfl.train.methods import make_sgd
from hetsfl.train.schedule import device_order, round_torch_seed

__all__ = ["ServerRunner", "server_step"]

logger = logging.getLogger("hetsfl.runtime")

# spec fields that may differ between a checkpoint and the run that resumes it
_RESUME_FREE_FIELDS = ("rounds", "checkpoint_every")


def server_step(
    server: nn.Module, opt: torch.optim.Optimizer | None, x: torch.Tensor, y: torch.Tensor, needs_grad: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The server's half of the engine's split_step: forward, loss, backward, step; (loss, gradient of x)."""
    if opt is not None:
        opt.zero_grad(set_to_none=True)
    if needs_grad:
        x.requires_grad_()
    loss = F.cross_entropy(server(x), y)
    loss.backward()
    if opt is not None:
        opt.step()
        opt.zero_grad(set_to_none=True)
    return loss.detach(), (x.grad if needs_grad else None)


def _load_units(dst: nn.Module, global_state: dict[str, torch.Tensor]) -> None:
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
    up_bytes: float = 0.0
    up_s: float = 0.0
    up_msgs: int = 0
    up_latency_s: float = 0.0
    losses: list[torch.Tensor] = field(default_factory=list)
    upload: dict[str, torch.Tensor] = field(default_factory=dict)
    report: dict[str, float] = field(default_factory=dict)

    def uplink(self, got: Received) -> None:
        self.up_bytes += got.nbytes
        self.up_s += got.transfer_s
        self.up_msgs += 1
        self.up_latency_s += got.latency_s


StepFn = Callable[[int, torch.Tensor, torch.Tensor, DeviceRecord], tuple[torch.Tensor, torch.Tensor | None]]


class ServerRunner:
    """Rank 0 of a run."""

    def __init__(self, run: Run, me: PeerInfo, links: list[Link], plan: Plan, x_test, y_test, sizes: list[int],
                 progress: bool = True):
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
    def _comparable(self, spec_dict: dict) -> dict:
        return {k: v for k, v in spec_dict.items() if k not in _RESUME_FREE_FIELDS}

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
        if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT or ckpt.get("kind") != "runtime":
            raise RunConfigError(f"checkpoint {path} is not a runtime checkpoint of this version; delete it")
        old, new = self._comparable(ckpt["spec"]), self._comparable(self.spec.to_dict())
        if old != new or ckpt["data_sha256"] != self.run_.data_sha256 or ckpt["num_devices"] != self.N:
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            what = f"spec fields {diff}" if diff else "the data or partition"
            raise RunConfigError(
                f"checkpoint {path} belongs to a different run ({what} differ); delete it or use another run dir"
            )
        if ckpt["round"] > self.spec.rounds:
            raise RunConfigError(
                f"checkpoint {path} is at round {ckpt['round']}, beyond the requested {self.spec.rounds} rounds"
            )
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
        write_torch(
            {
                "format": CHECKPOINT_FORMAT,
                "kind": "runtime",
                "spec": self.spec.to_dict(),
                "data_sha256": self.run_.data_sha256,
                "num_devices": self.N,
                "round": done,
                "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
                "method_state": state,
                "metrics": self.metrics,
                "devices": self.device_rows,
                "rounds": self.round_rows,
            },
            self.out / CHECKPOINT_NAME,
        )

    # ---------------------------------------------------------------------------------------- serving
    def _parallel(self, serve: Callable[[int], DeviceRecord]) -> list[DeviceRecord]:
        futures = [self.pool.submit(serve, n) for n in range(self.N)]
        done, _ = cf.wait(futures, return_when=cf.FIRST_EXCEPTION)
        for f in futures:
            if f in done and f.exception() is not None:
                raise f.exception()
        return [f.result() for f in futures]

    def _serve_split(self, n: int, r: int, payload: torch.Tensor, step: StepFn) -> DeviceRecord:
        """One device's round of SFL / SFL-V2 / SL, from the server's side."""
        link, plan = self.links[n], self.plan
        rec = DeviceRecord(n)
        smashed_layout, grad_layout, up_layout = plan.smashed_layout(n), plan.grad_layout(n), plan.up_layout(n)
        needs_grad = plan.needs_grad(n)
        up_pending = link.post(Kind.MODEL_UP, up_layout.nbytes, r)
        report_pending = link.post(Kind.REPORT_UP, REPORT_LAYOUT.nbytes, r)
        smashed = link.post(Kind.SMASHED_UP, smashed_layout.nbytes, r, 0)
        rec.t_start = time.perf_counter()
        link.send(Kind.MODEL_DOWN, payload, r)
        K = self.spec.local_iters[n]
        for k in range(K):
            got = smashed.wait()
            rec.uplink(got)
            if k + 1 < K:
                smashed = link.post(Kind.SMASHED_UP, smashed_layout.nbytes, r, k + 1)
            batch = unpack(smashed_layout, got.payload)
            loss, grad = step(n, batch["x"], batch["y"], rec)
            rec.losses.append(loss)
            if needs_grad:
                link.send(Kind.GRAD_DOWN, pack(grad_layout, {"x": grad}), r, k)
        self._finish(rec, up_pending, report_pending, up_layout)
        return rec

    def _serve_whole(self, n: int, r: int, payload: torch.Tensor) -> DeviceRecord:
        """One device's round of FL: model down, trained model and losses up."""
        link = self.links[n]
        rec = DeviceRecord(n)
        up_layout = self.plan.up_layout(n)
        up_pending = link.post(Kind.MODEL_UP, up_layout.nbytes, r)
        report_pending = link.post(Kind.REPORT_UP, REPORT_LAYOUT.nbytes, r)
        rec.t_start = time.perf_counter()
        link.send(Kind.MODEL_DOWN, payload, r)
        self._finish(rec, up_pending, report_pending, up_layout, timeout_s=None)
        rec.losses = list(rec.upload.pop("loss"))
        return rec

    def _finish(self, rec, up_pending, report_pending, up_layout, timeout_s: float | None = None) -> None:
        got = up_pending.wait(timeout_s)
        rec.uplink(got)
        rec.t_end = got.t_done
        rec.upload = unpack(up_layout, got.payload)
        report = unpack(REPORT_LAYOUT, report_pending.wait().payload)
        rec.report = {k: float(report[k]) for k in REPORT_FIELDS}

    # ---------------------------------------------------------------------------------------- methods
    def _round_fl(self, r: int) -> tuple[list[DeviceRecord], torch.Tensor]:
        global_state = self.model.state_dict()
        payload = pack(self.plan.down_layout(0), global_state)
        records = self._parallel(lambda n: self._serve_whole(n, r, payload))
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
            _load_units(server, global_state)
            server.train()
            opts.append(make_sgd(server, **self.opt_args))

        def step(n, x, y, rec):
            t = time.perf_counter()
            with server_pace(n):
                out = server_step(self.copies[n], opts[n], x, y, self.plan.needs_grad(n))
            rec.server_compute_s += time.perf_counter() - t
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
        _load_units(self.server_model, global_state)
        self.server_model.train()
        opt_s = make_sgd(self.server_model, **self.opt_args)
        inbox: list[queue.Queue] = [queue.Queue() for _ in range(self.N)]
        wait_s = self.timeout_s * self.N

        def step(n, x, y, rec):  # device thread: hand the batch to the main thread, wait for its result
            reply: queue.Queue = queue.Queue(maxsize=1)
            inbox[n].put((x, y, rec, reply))
            try:
                return reply.get(timeout=wait_s)
            except queue.Empty:
                raise CommError(f"{self.me}: the server's main thread did not process device {n}'s batch "
                                f"within {wait_s:g} s") from None

        payloads = [pack(self.plan.down_layout(n), global_state) for n in range(self.N)]
        futures = [self.pool.submit(self._serve_split, n, r, payloads[n], step) for n in range(self.N)]
        K = self.spec.local_iters
        loss_sum = torch.zeros((), dtype=torch.float32)
        for k in range(max(K)):
            active = [n for n in range(self.N) if K[n] > k]
            for n in device_order(self.spec.seed, r, k, active):
                x, y, rec, reply = self._next_batch(inbox[n], futures)
                t = time.perf_counter()
                loss, grad = server_step(self.server_parts[self.spec.splits[n]], opt_s, x, y, self.plan.needs_grad(n))
                rec.server_compute_s += time.perf_counter() - t
                loss_sum += loss
                reply.put((loss, grad))
        done, _ = cf.wait(futures, return_when=cf.FIRST_EXCEPTION)
        for f in futures:
            if f in done and f.exception() is not None:
                raise f.exception()
        records = [f.result() for f in futures]
        averager = UnitAverager(global_state, self.model.unit_names)
        for rec in records:
            averager.add(rec.upload, self.dev_w[:, rec.device])
        averager.add(self.server_model.state_dict(), self.srv_w, prefix="")
        averager.load_into(self.model)
        return records, loss_sum

    @staticmethod
    def _next_batch(box: queue.Queue, futures: list[cf.Future]):
        while True:
            try:
                return box.get(timeout=0.2)
            except queue.Empty:
                for f in futures:
                    if f.done() and f.exception() is not None:
                        raise f.exception() from None

    def _round_sl(self, r: int) -> tuple[list[DeviceRecord], torch.Tensor]:
        self.model.train()

        def step(n, x, y, rec):
            t = time.perf_counter()
            with server_pace(n):
                out = server_step(self.sl_server, self.opt_s, x, y, self.plan.needs_grad(n))
            rec.server_compute_s += time.perf_counter() - t
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
            samples = sum(k * d for k, d in zip(spec.local_iters, spec.batch_sizes, strict=True))
            train_s = t_train - t0
            self.round_rows.append({
                "round": done,
                "method": spec.method,
                "wall_s": t1 - t0,
                "train_s": train_s,
                "aggregate_s": t1 - t_train,
                "eval_s": t2 - t1,
                "samples": samples,
                "samples_per_s": samples / train_s if train_s > 0 else math.nan,
                "up_bytes": sum(rec.up_bytes for rec in records),
                "down_bytes": sum(rec.report["down_bytes"] for rec in records),
                "max_round_s": max(rec.t_end - rec.t_start for rec in records),
                "sum_round_s": sum(rec.t_end - rec.t_start for rec in records),
            })
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

    def _add_rows(self, r: int, records: list[DeviceRecord], train_loss: float, test_acc, test_loss) -> None:
        spec = self.spec
        prev = self.metrics[-1] if self.metrics else {"sim_time_s": 0.0, "cum_bits_up": 0.0, "cum_bits_down": 0.0}
        up_total = down_total = float(sum(self.bits))
        if spec.bits_up is not None:
            up_total = float(sum(spec.bits_up))
        if spec.bits_down is not None:
            down_total = float(sum(spec.bits_down))
        self.metrics.append({
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
        })
        for rec in records:
            n = rec.device
            rep = rec.report
            round_s = rec.t_end - rec.t_start
            compute = rep["device_compute_s"] + rec.server_compute_s
            self.device_rows.append({
                "round": r + 1,
                "device": n,
                "rank": n + 1,
                "host": self.links[n].peer.host,
                "method": spec.method,
                "split": spec.splits[n],
                "local_iters": spec.local_iters[n],
                "batch_size": spec.batch_sizes[n],
                "samples": spec.local_iters[n] * spec.batch_sizes[n],
                "round_s": round_s,
                "compute_s": compute,
                "device_compute_s": rep["device_compute_s"],
                "server_compute_s": rec.server_compute_s,
                "up_bytes": rec.up_bytes,
                "up_s": rec.up_s,
                "up_msgs": rec.up_msgs,
                "up_latency_s": rec.up_latency_s,
                "down_bytes": rep["down_bytes"],
                "down_s": rep["down_s"],
                "down_msgs": int(rep["down_msgs"]),
                "down_latency_s": rep["down_latency_s"],
                "other_s": round_s - compute - rec.up_s - rep["down_s"],
                "wait_s": rep["wait_s"],
                "send_s": rep["send_s"],
                "idle_s": rep["idle_s"],
            })

    def _write_outputs(self) -> None:
        out = self.out
        write_csv(self.metrics, METRICS_COLUMNS, out / "metrics.csv")
        write_csv(self.device_rows, DEVICE_COLUMNS, out / "measured_devices.csv")
        write_csv(self.round_rows, ROUND_COLUMNS, out / "measured_rounds.csv")
        write_torch({k: v.detach().clone() for k, v in self.model.state_dict().items()}, out / "final_model.pt")
        last = self.metrics[-1]
        write_json({
            "spec": self.spec.to_dict(),
            "runtime": "distributed",
            "backend": "gloo",
            "num_devices": self.N,
            "num_units": self.L,
            "hosts": [self.me.host] + [link.peer.host for link in self.links],
            "rounds_completed": len(self.metrics),
            "final_test_acc": last["test_acc"],
            "final_test_loss": last["test_loss"],
            "final_train_loss": last["train_loss"],
            "best_test_acc": max(m["test_acc"] for m in self.metrics),
            "wall_time_s": float(sum(row["wall_s"] for row in self.round_rows)),
            "train_time_s": float(sum(row["train_s"] for row in self.round_rows)),
            "torch_version": torch.__version__,
        }, out / "summary.json")
