"""What both sides derive from the run alone: model structure, message layouts, modelled bits.

Server and devices build the same :class:`Plan` from run.json, so every message's size is known on both
sides before it is sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from hetsfl.blocks import has_trainable
from hetsfl.models import SplittableModel, build_model
from hetsfl.runtime.errors import RunConfigError
from hetsfl.runtime.packing import Layout, activation_shapes, batch_layout, momentum_layout, unit_layout
from hetsfl.train import TrainSpec
from hetsfl.train.bits import default_bits
from hetsfl.train.spec import check_splits as train_check_splits

__all__ = ["MOMENTUM_PREFIX", "REPORT_FIELDS", "REPORT_LAYOUT", "Plan", "check_splits", "client_trains"]

MOMENTUM_PREFIX = "momentum."
#: A device's own measurements of one round, sent to the server at the round's end (float64 each).
REPORT_FIELDS = (
    "device_compute_s", "device_cpu_s", "down_bytes", "down_s", "down_msgs", "down_latency_s", "wait_s", "send_s",
    "idle_s",
)
REPORT_LAYOUT = Layout(tuple((f, (), torch.float64) for f in REPORT_FIELDS))


def check_splits(spec: TrainSpec, num_units: int) -> None:
    """The engine's rules for split points (hetsfl.train.spec.check_splits), as a RunConfigError."""
    try:
        train_check_splits(spec, num_units)
    except ValueError as exc:
        raise RunConfigError(str(exc)) from None


def client_trains(model: SplittableModel, split: int) -> bool:
    """Whether units 1..split have trainable parameters (if not, no gradient goes back to the device)."""
    return has_trainable(model.unit_range(0, split))


@dataclass
class Plan:
    """Model structure and per-device message layouts of a run."""

    spec: TrainSpec
    model: SplittableModel
    act_shapes: list[tuple[int, ...]]
    _needs_grad: dict[int, bool] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, spec: TrainSpec, num_classes: int, input_shape: tuple[int, ...]) -> Plan:
        """The global model as the engine initialises it (torch.manual_seed(spec.seed), then build_model)."""
        torch.manual_seed(spec.seed)
        c, h, w = input_shape
        model = build_model(spec.model, num_classes=int(num_classes), input_shape=(c, h, w))
        check_splits(spec, model.num_units)
        return cls(spec, model, activation_shapes(model))

    @property
    def num_units(self) -> int:
        return self.model.num_units

    def split(self, n: int) -> int:
        return self.spec.splits[n]

    # ------------------------------------------------------------------------------------------ layouts
    def model_layout(self, n: int) -> Layout:
        """State sent down at the round's start and up at its end: units 1..s_n (FL: the whole model)."""
        return unit_layout(self.model, 0, self.split(n))

    def momentum_layout(self, n: int) -> Layout:
        """SL hands the client-side momentum buffers on with the model (empty without momentum)."""
        if self.spec.momentum == 0.0:
            return Layout(())
        lay = momentum_layout(self.model, 0, self.split(n))
        return Layout(tuple((MOMENTUM_PREFIX + k, shape, dt) for k, shape, dt in lay.entries))

    def down_layout(self, n: int) -> Layout:
        if self.spec.method == "sl":
            return self.model_layout(n) + self.momentum_layout(n)
        return self.model_layout(n)

    def up_layout(self, n: int) -> Layout:
        lay = self.down_layout(n)
        if self.spec.method == "fl":  # FL devices compute the losses themselves
            lay = lay + Layout((("loss", (self.spec.local_iters[n],), torch.float32),))
        return lay

    def smashed_layout(self, n: int) -> Layout:
        return batch_layout(self.act_shapes[self.split(n) - 1], self.spec.batch_sizes[n], labels=True)

    def grad_layout(self, n: int) -> Layout:
        return batch_layout(self.act_shapes[self.split(n) - 1], self.spec.batch_sizes[n], labels=False)

    def needs_grad(self, n: int) -> bool:
        """Whether device n's client-side units train (else no gradient is sent back)."""
        s = self.split(n)
        if s not in self._needs_grad:
            self._needs_grad[s] = client_trains(self.model, s)
        return self._needs_grad[s]

    # ----------------------------------------------------------------------------------- modelled bits
    def model_bits(self) -> list[float]:
        """The engine's bits per device per round (each direction) when the spec does not give them: K D a(s)
        b_act + W(s) b_par with the spec's bits per value (hetsfl.train.bits.default_bits; a(L) = 0)."""
        spec = self.spec
        if spec.bits_per_activation is None or spec.bits_per_param is None:  # then bits_up and bits_down are given
            return [float(b) for b in (spec.bits_up or spec.bits_down or [])]
        return default_bits(self.model, spec.splits, spec.local_iters, spec.batch_sizes,
                            bits_per_activation=spec.bits_per_activation, bits_per_param=spec.bits_per_param)
