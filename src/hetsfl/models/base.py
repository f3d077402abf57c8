"""A model as an ordered list of named units, cuttable at any unit boundary."""

from __future__ import annotations

import operator
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn


def _validate_units(units: Sequence[tuple[str, nn.Module]]) -> None:
    """Raise ValueError for an empty unit list, bad names or duplicate names."""
    if not units:
        raise ValueError("a SplittableModel needs at least one unit")
    names = [name for name, _ in units]
    for name in names:
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"unit name {name!r} must be a non-empty string without '.'")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate unit names: {duplicates}")
    for name, module in units:
        if not isinstance(module, nn.Module):
            raise ValueError(f"unit {name!r} is a {type(module).__name__}, not a torch.nn.Module")


class SplittableModel(nn.Module):
    """An ordered list of L named units. Cut c in 0..L means units 1..c run on the device."""

    def __init__(self, units: Sequence[tuple[str, nn.Module]], input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        _validate_units(units)
        self.units = nn.ModuleDict(OrderedDict(units))
        self.input_shape = tuple(int(d) for d in input_shape)
        self.num_classes = int(num_classes)

    @property
    def unit_names(self) -> list[str]:
        """Unit names in order."""
        return list(self.units.keys())

    @property
    def num_units(self) -> int:
        """L, the number of units."""
        return len(self.units)

    def _check_cut(self, cut: int) -> int:
        """Return `cut` as an int, or raise ValueError naming the allowed range 0..L."""
        try:
            if isinstance(cut, bool):
                raise TypeError
            value = operator.index(cut)
        except TypeError:
            raise ValueError(f"cut must be an integer in 0..{self.num_units}, got {cut!r}") from None
        if not 0 <= value <= self.num_units:
            raise ValueError(f"cut must be in 0..{self.num_units} for this model, got {value}")
        return value

    def _run(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Apply the units with 0-based index in [start, stop) to x."""
        for module in list(self.units.values())[start:stop]:
            x = module(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Whole model: logits."""
        return self._run(x, 0, self.num_units)

    def forward_to(self, x: torch.Tensor, cut: int) -> torch.Tensor:
        """Output of unit `cut` (units 1..cut); cut=0 returns x."""
        return self._run(x, 0, self._check_cut(cut))

    def forward_from(self, h: torch.Tensor, cut: int) -> torch.Tensor:
        """Run units cut+1..L on h."""
        return self._run(h, self._check_cut(cut), self.num_units)

    def unit_range(self, start: int, stop: int) -> nn.Sequential:
        """Units with 0-based index in [start, stop), as a Sequential sharing modules with self."""
        start, stop = self._check_cut(start), self._check_cut(stop)
        if start > stop:
            raise ValueError(f"unit_range needs start <= stop, got start={start}, stop={stop}")
        items = list(self.units.items())[start:stop]
        return nn.Sequential(OrderedDict(items))

    def split(self, cut: int) -> tuple[nn.Sequential, nn.Sequential]:
        """(client = units 1..cut, server = units cut+1..L), sharing parameters with self."""
        cut = self._check_cut(cut)
        return self.unit_range(0, cut), self.unit_range(cut, self.num_units)
