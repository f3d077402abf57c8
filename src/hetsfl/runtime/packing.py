"""Tensors <-> one flat byte buffer, so that every message is a single gloo send of a known size.

A :class:`Layout` lists (key, shape, dtype) of the tensors of a message in a fixed order. Both sides build
the same layout from the model structure and the run's spec, so the receiver knows every message's size
before it arrives (gloo aborts the process on a receive whose size differs from the message). Packing copies
the raw bytes, so a round trip is bit-exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

from hetsfl.models import SplittableModel

__all__ = [
    "Layout",
    "activation_shapes",
    "batch_layout",
    "momentum_layout",
    "pack",
    "unit_keys",
    "unit_layout",
    "unpack",
    "unpack_into",
]


@dataclass(frozen=True)
class Layout:
    """Ordered (key, shape, dtype) entries; ``nbytes`` is the size of the packed buffer."""

    entries: tuple[tuple[str, tuple[int, ...], torch.dtype], ...]

    @property
    def keys(self) -> list[str]:
        return [k for k, _, _ in self.entries]

    @staticmethod
    def _size(shape: tuple[int, ...], dtype: torch.dtype) -> int:
        n = 1
        for d in shape:
            n *= int(d)
        return n * torch.empty((), dtype=dtype).element_size()

    @property
    def nbytes(self) -> int:
        return sum(self._size(shape, dtype) for _, shape, dtype in self.entries)

    def __add__(self, other: Layout) -> Layout:
        return Layout(self.entries + other.entries)

    @classmethod
    def of(cls, tensors: Mapping[str, torch.Tensor]) -> Layout:
        return cls(tuple((k, tuple(t.shape), t.dtype) for k, t in tensors.items()))


def _bytes_view(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


def pack(layout: Layout, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """One uint8 CPU tensor with the raw bytes of ``tensors[key]`` for every key of the layout, in order."""
    parts = []
    for key, shape, dtype in layout.entries:
        t = tensors[key]
        if tuple(t.shape) != shape or t.dtype != dtype:
            raise ValueError(f"{key}: expected {dtype} {shape}, got {t.dtype} {tuple(t.shape)}")
        parts.append(_bytes_view(t.cpu()))
    if not parts:
        return torch.empty(0, dtype=torch.uint8)
    return torch.cat(parts)


def _slices(layout: Layout, buf: torch.Tensor) -> Iterable[tuple[str, tuple[int, ...], torch.dtype, torch.Tensor]]:
    if buf.dtype != torch.uint8 or buf.dim() != 1 or buf.numel() != layout.nbytes:
        raise ValueError(f"buffer of {buf.numel()} bytes does not match a layout of {layout.nbytes} bytes")
    offset = 0
    for key, shape, dtype in layout.entries:
        n = Layout._size(shape, dtype)
        yield key, shape, dtype, buf[offset : offset + n]
        offset += n


def unpack(layout: Layout, buf: torch.Tensor) -> dict[str, torch.Tensor]:
    """New tensors (copies) from a packed buffer."""
    out = {}
    for key, shape, dtype, raw in _slices(layout, buf):
        t = torch.empty(shape, dtype=dtype)
        if t.numel():
            t.view(-1).view(torch.uint8).copy_(raw)
        out[key] = t
    return out


def unpack_into(layout: Layout, buf: torch.Tensor, targets: Mapping[str, torch.Tensor]) -> None:
    """Copy a packed buffer into existing tensors (``targets[key]``, e.g. a module's state_dict) in place."""
    with torch.no_grad():
        for key, shape, dtype, raw in _slices(layout, buf):
            t = targets[key]
            if tuple(t.shape) != shape or t.dtype != dtype or not t.is_contiguous():
                raise ValueError(f"{key}: target is {t.dtype} {tuple(t.shape)}, layout says {dtype} {shape}")
            if t.numel():
                t.view(-1).view(torch.uint8).copy_(raw)


def unit_keys(model: SplittableModel, start: int, stop: int) -> list[str]:
    """Global state keys (``units.<name>.…``) of the units with 0-based index in [start, stop)."""
    names = set(model.unit_names[start:stop])
    return [k for k in model.state_dict() if k.split(".", 2)[1] in names]


def unit_layout(model: SplittableModel, start: int, stop: int) -> Layout:
    """Layout of the state (parameters and buffers) of units [start, stop), keyed by global keys."""
    state = model.state_dict()
    return Layout.of({k: state[k] for k in unit_keys(model, start, stop)})


def momentum_layout(model: SplittableModel, start: int, stop: int) -> Layout:
    """Layout of SGD momentum buffers of the trainable parameters of units [start, stop) (global keys)."""
    params = dict(model.named_parameters())
    keys = [k for k in unit_keys(model, start, stop) if k in params and params[k].requires_grad]
    return Layout(tuple((k, tuple(params[k].shape), params[k].dtype) for k in keys))


@torch.no_grad()
def activation_shapes(model: SplittableModel) -> list[tuple[int, ...]]:
    """Per-sample output shape of every unit (a dry forward pass of one zero sample in eval mode)."""
    was_training = model.training
    model.eval()
    x = torch.zeros((1, *model.input_shape))
    shapes = []
    for unit in model.units.values():
        x = unit(x)
        shapes.append(tuple(x.shape[1:]))
    model.train(was_training)
    return shapes


def batch_layout(act_shape: Sequence[int], batch_size: int, labels: bool) -> Layout:
    """Smashed data of one batch (float32), with the batch's labels (int64) if ``labels``."""
    entries = [("x", (int(batch_size), *(int(d) for d in act_shape)), torch.float32)]
    if labels:
        entries.append(("y", (int(batch_size),), torch.int64))
    return Layout(tuple(entries))
