"""One training round of FL (FedAvg), SFL (SplitFed-V1, individual splits), SFL-V2 and SL.

All methods work on the global :class:`~hetsfl.models.SplittableModel` they are given and leave the round's
resulting global model in it. Optimiser policy: plain ``torch.optim.SGD(lr, momentum, weight_decay)``;
for FL, SFL and SFL-V2 the optimisers are created afresh for every device at the start of every round
(the averaged model replaces the local models, so momentum does not carry over); SL keeps one optimiser per
side (client, server) for the whole run, handed on with the model, and its state is checkpointed.

One split iteration (``split_step``): the client runs units 1..s, the smashed data ``out.detach()`` goes to
the server, which runs units s+1..L, computes the loss, back-propagates and steps; the gradient of the
smashed data goes back to the client, which back-propagates and steps. Within a round FL and SFL devices are
independent, so they are simulated one after another on one working copy of the model (memory: two model
copies whatever N is) and accumulated into a weighted average as they finish.
"""

from __future__ import annotations

import copy
import functools
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from hetsfl.models import SplittableModel
from hetsfl.train.aggregate import UnitAverager, fedavg_unit_weights, sfl_v1_unit_weights, sfl_v2_unit_weights
from hetsfl.train.schedule import BatchSchedule, device_order
from hetsfl.train.steps import RoundResult, copy_state, evaluate, make_sgd, split_step, whole_step

__all__ = [
    "METHODS",
    "METHOD_CLASSES",
    "RoundResult",
    "TrainMethod",
    "copy_state",
    "evaluate",
    "make_method",
    "make_sgd",
    "split_step",
    "whole_step",
]


class TrainMethod:
    """Base: holds the global model, the data on the device and the batch schedule."""

    name = ""

    def __init__(
        self,
        model: SplittableModel,
        schedule: BatchSchedule,
        x: torch.Tensor,
        y: torch.Tensor,
        splits: Sequence[int],
        lr: float,
        momentum: float,
        weight_decay: float,
        seed: int,
    ) -> None:
        self.model = model
        self.schedule = schedule
        self.x = x
        self.y = y
        self.splits = [int(s) for s in splits]
        self.opt_args = {"lr": float(lr), "momentum": float(momentum), "weight_decay": float(weight_decay)}
        self.seed = int(seed)
        self.device = next(iter(model.parameters())).device
        self.sizes = [int(p.size) for p in schedule.partitions]
        self.num_devices = schedule.num_devices

    def _sgd(self, module: nn.Module) -> torch.optim.SGD | None:
        return make_sgd(module, **self.opt_args)

    def _batch_indices(self, n: int, round_idx: int) -> torch.Tensor:
        return torch.from_numpy(self.schedule.batches(n, round_idx)).to(self.device)

    def _zero(self) -> torch.Tensor:
        return torch.zeros((), dtype=torch.float32, device=self.device)

    def run_round(self, round_idx: int) -> RoundResult:
        raise NotImplementedError

    def extra_state(self) -> dict:
        """State beyond the global model that must survive a checkpoint."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        """Restore what ``extra_state`` returned."""


class FedAvgOrSFL(TrainMethod):
    """FL (every split = L, one optimiser) and SFL-V1 (client and server optimisers per device)."""

    def __init__(self, *args: Any, split: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.name = "sfl" if split else "fl"
        self.split = split
        self.work = copy.deepcopy(self.model)
        self._parts: dict[int, tuple[nn.Sequential, nn.Sequential]] = {}
        L = self.model.num_units
        if split:
            self.weights, _ = sfl_v1_unit_weights(self.splits, self.sizes, L)
        else:
            self.weights = fedavg_unit_weights(self.sizes, L)

    def _split(self, s: int) -> tuple[nn.Sequential, nn.Sequential]:
        if s not in self._parts:
            self._parts[s] = self.work.split(s)
        return self._parts[s]

    def run_round(self, round_idx: int) -> RoundResult:
        global_state = self.model.state_dict()
        averager = UnitAverager(global_state, self.model.unit_names)
        loss_sum = self._zero()
        batches = samples = 0
        work = self.work
        work.train()
        x, y = self.x, self.y
        for n in range(self.num_devices):
            copy_state(work, global_state)
            idx = self._batch_indices(n, round_idx)
            if self.split:
                client, server = self._split(self.splits[n])
                opt_c, opt_s = self._sgd(client), self._sgd(server)
                for row in idx:
                    loss_sum += split_step(client, server, opt_c, opt_s, x[row], y[row])
            else:
                opt = self._sgd(work)
                for row in idx:
                    loss_sum += whole_step(work, opt, x[row], y[row])
            batches += idx.shape[0]
            samples += idx.numel()
            averager.add(work.state_dict(), self.weights[:, n])
        averager.load_into(self.model)
        return RoundResult(loss_sum, batches, samples)


class SFLV2(TrainMethod):
    """SFL-V2: one server-side copy of units min(s)+1..L shared by all devices, seeded device order."""

    name = "sfl_v2"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        L = self.model.num_units
        self.min_split = min(self.splits)
        # The server's copy holds units min(s)+1..L only; device n's smashed data enters at unit s_n+1.
        self.server_model = copy.deepcopy(self.model.unit_range(self.min_split, L))
        items = list(self.server_model.named_children())
        self.server_parts = {
            s: nn.Sequential(OrderedDict(items[s - self.min_split :])) for s in sorted(set(self.splits))
        }
        self.clients = [copy.deepcopy(self.model.unit_range(0, s)) for s in self.splits]
        self.dev_w, self.srv_w = sfl_v2_unit_weights(self.splits, self.sizes, L)

    def run_round(self, round_idx: int) -> RoundResult:
        global_state = self.model.state_dict()
        copy_state(self.server_model, global_state, prefix="")
        self.server_model.train()
        opt_s = self._sgd(self.server_model)
        opt_c = []
        for client in self.clients:
            copy_state(client, global_state, prefix="")
            client.train()
            opt_c.append(self._sgd(client))
        idx = [self._batch_indices(n, round_idx) for n in range(self.num_devices)]
        iters = [int(t.shape[0]) for t in idx]
        loss_sum = self._zero()
        batches = samples = 0
        x, y = self.x, self.y
        for k in range(max(iters)):
            active = [n for n in range(self.num_devices) if iters[n] > k]
            for n in device_order(self.seed, round_idx, k, active):
                row = idx[n][k]
                server = self.server_parts[self.splits[n]]
                loss_sum += split_step(self.clients[n], server, opt_c[n], opt_s, x[row], y[row])
                batches += 1
                samples += int(row.shape[0])
        averager = UnitAverager(global_state, self.model.unit_names)
        for n, client in enumerate(self.clients):
            averager.add(client.state_dict(), self.dev_w[:, n], prefix="")
        averager.add(self.server_model.state_dict(), self.srv_w, prefix="")
        averager.load_into(self.model)
        return RoundResult(loss_sum, batches, samples)


class SL(TrainMethod):
    """Sequential split learning: one common split, devices 0..N-1 in turn, no averaging."""

    name = "sl"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if len(set(self.splits)) != 1:
            raise ValueError(f"SL needs one common split point, got {self.splits}")
        self.client, self.server = self.model.split(self.splits[0])
        self.opt_c = self._sgd(self.client)
        self.opt_s = self._sgd(self.server)

    def run_round(self, round_idx: int) -> RoundResult:
        self.model.train()
        loss_sum = self._zero()
        batches = samples = 0
        x, y = self.x, self.y
        for n in range(self.num_devices):
            idx = self._batch_indices(n, round_idx)
            for row in idx:
                loss_sum += split_step(self.client, self.server, self.opt_c, self.opt_s, x[row], y[row])
            batches += idx.shape[0]
            samples += idx.numel()
        return RoundResult(loss_sum, batches, samples)

    def extra_state(self) -> dict:
        return {
            "opt_client": None if self.opt_c is None else self.opt_c.state_dict(),
            "opt_server": None if self.opt_s is None else self.opt_s.state_dict(),
        }

    def load_extra_state(self, state: dict) -> None:
        for opt, key in ((self.opt_c, "opt_client"), (self.opt_s, "opt_server")):
            if opt is not None and state.get(key) is not None:
                opt.load_state_dict(state[key])


# Training method name -> its round runner (the arguments of TrainMethod); METHODS lists the names.
METHOD_CLASSES: dict[str, Callable[..., TrainMethod]] = {
    "fl": functools.partial(FedAvgOrSFL, split=False),
    "sfl": functools.partial(FedAvgOrSFL, split=True),
    "sfl_v2": SFLV2,
    "sl": SL,
}
METHODS = tuple(METHOD_CLASSES)


def make_method(
    method: str,
    model: SplittableModel,
    schedule: BatchSchedule,
    x: torch.Tensor,
    y: torch.Tensor,
    splits: Sequence[int],
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> TrainMethod:
    """The round runner for `method` (one of METHODS) on the global `model`."""
    if method not in METHOD_CLASSES:
        raise ValueError(f"unknown training method {method!r}; choose one of {', '.join(METHODS)}")
    return METHOD_CLASSES[method](model, schedule, x, y, splits, lr, momentum, weight_decay, seed)
