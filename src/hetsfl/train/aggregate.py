"""Per-unit weighted averaging of model copies (FedAvg, SFL-V1, SFL-V2).

Units are numbered 1..L in the docs and 0..L-1 here. Weight matrices have one row per unit and sum to 1 per
unit over all copies of that unit.

- FedAvg: every device holds every unit; unit j of device n has weight |P_n| / Σ|P|.
- SFL-V1: unit j of device n is held by the device if s_n >= j, else by the server's copy for device n;
  either way that copy has weight |P_n| / Σ|P| (so the average equals FedAvg's).
- SFL-V2: unit j is averaged over the devices that hold it (s_n >= j, weight |P_n|) and the server's single
  copy, weighted by the data of the devices that trained unit j through the server (s_n < j). Units no
  device holds are the server's copy; units every device holds (j <= min s_n) get no server share.

Floating-point tensors are accumulated in their own dtype; integer buffers (BatchNorm's
``num_batches_tracked``) are averaged in float64 and rounded back to an integer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

__all__ = [
    "UnitAverager",
    "data_weights",
    "fedavg_unit_weights",
    "sfl_v1_unit_weights",
    "sfl_v2_unit_weights",
]

_WEIGHT_TOL = 1e-9


def data_weights(sizes: Sequence[int]) -> np.ndarray:
    """|P_n| / Σ|P| as float64."""
    arr = np.asarray(sizes, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError("sizes must be a non-empty 1-D sequence")
    if np.any(arr < 0) or arr.sum() <= 0:
        raise ValueError(f"data sizes must be non-negative with a positive total, got {list(sizes)}")
    return arr / arr.sum()


def _check_splits(splits: Sequence[int], num_units: int, allow_full: bool) -> np.ndarray:
    s = np.asarray(splits, dtype=np.int64)
    top = num_units if allow_full else num_units - 1
    if s.ndim != 1 or np.any(s < 1) or np.any(s > top):
        raise ValueError(f"splits must be in 1..{top} for a model of {num_units} units, got {list(splits)}")
    return s


def fedavg_unit_weights(sizes: Sequence[int], num_units: int) -> np.ndarray:
    """(L, N): every unit of device n weighted |P_n| / Σ|P|."""
    return np.tile(data_weights(sizes), (int(num_units), 1))


def _device_held(
    splits: Sequence[int], sizes: Sequence[int], num_units: int
) -> tuple[np.ndarray, np.ndarray]:
    """Data weights (N,) and held[j, n] = (s_n >= j + 1): device n holds unit j + 1 itself."""
    s = _check_splits(splits, num_units, allow_full=True)
    w = data_weights(sizes)
    if w.size != s.size:
        raise ValueError(f"{s.size} splits but {w.size} data sizes")
    return w, s[None, :] >= np.arange(1, int(num_units) + 1)[:, None]


def sfl_v1_unit_weights(
    splits: Sequence[int], sizes: Sequence[int], num_units: int
) -> tuple[np.ndarray, np.ndarray]:
    """(weights (L, N), device_held (L, N) bool) for SplitFed-V1 with individual split points.

    Copy (j, n) is held by device n if ``device_held[j, n]`` (s_n >= j+1), else by the server's copy for n.
    Its weight is |P_n| / Σ|P| either way.
    """
    w, held = _device_held(splits, sizes, num_units)
    return np.tile(w, (int(num_units), 1)), held


def sfl_v2_unit_weights(
    splits: Sequence[int], sizes: Sequence[int], num_units: int
) -> tuple[np.ndarray, np.ndarray]:
    """(device weights (L, N), server weights (L,)) for SFL-V2 (one shared server-side copy).

    device[j, n] = |P_n| / Σ|P| if s_n >= j+1 else 0; server[j] = Σ_{n: s_n < j+1} |P_n| / Σ|P|.
    """
    w, held = _device_held(splits, sizes, num_units)
    dev = np.where(held, w[None, :], 0.0)
    srv = np.where(held, 0.0, w[None, :]).sum(axis=1)
    return dev, srv


class UnitAverager:
    """Accumulates weighted copies of units into the global model's state.

    ``reference`` is the global model's state_dict (keys ``units.<name>.<rest>``). ``add(state, weights,
    prefix)`` adds a copy: a state_dict whose keys are ``prefix + <name>.<rest>`` (``"units."`` for a whole
    SplittableModel, ``""`` for an ``nn.Sequential`` from ``unit_range``), each tensor weighted by
    ``weights[unit index]``; zero weights are skipped. ``result()`` checks that every key's weights sum
    to 1 and returns the averaged state.
    """

    def __init__(self, reference: Mapping[str, torch.Tensor], unit_names: Sequence[str]):
        index = {name: j for j, name in enumerate(unit_names)}
        self._unit_of: dict[str, int] = {}
        for key in reference:
            if not key.startswith("units."):
                raise ValueError(f"state key {key!r} is not inside a unit (expected 'units.<name>.…')")
            name = key[len("units.") :].split(".", 1)[0]
            if name not in index:
                raise ValueError(f"state key {key!r} names no unit of the model")
            self._unit_of[key] = index[name]
        self._reference = reference
        self._acc: dict[str, torch.Tensor] = {}
        self._wsum: dict[str, float] = dict.fromkeys(reference, 0.0)

    def add(
        self, state: Mapping[str, torch.Tensor], unit_weights: Sequence[float] | np.ndarray, prefix: str = "units."
    ) -> None:
        """Add one copy with per-unit weights."""
        for key, tensor in state.items():
            if not key.startswith(prefix):
                raise ValueError(f"state key {key!r} does not start with prefix {prefix!r}")
            gkey = "units." + key[len(prefix) :]
            j = self._unit_of.get(gkey)
            if j is None:
                raise ValueError(f"state key {key!r} (global {gkey!r}) is not in the global model")
            w = float(unit_weights[j])
            if w == 0.0:
                continue
            tensor = tensor.detach()
            acc = self._acc.get(gkey)
            if tensor.is_floating_point():
                if acc is None:
                    self._acc[gkey] = tensor * w
                else:
                    acc.add_(tensor, alpha=w)
            else:
                if acc is None:
                    self._acc[gkey] = tensor.to(torch.float64) * w
                else:
                    acc.add_(tensor.to(torch.float64), alpha=w)
            self._wsum[gkey] += w

    def result(self) -> dict[str, torch.Tensor]:
        """The averaged state, with the reference's dtypes; raises if a key's weights do not sum to 1."""
        out = {}
        for key, ref in self._reference.items():
            total = self._wsum[key]
            if abs(total - 1.0) > _WEIGHT_TOL:
                raise ValueError(
                    f"weights of {key!r} sum to {total!r}, not 1: every unit needs a full set of copies"
                )
            acc = self._acc[key]
            if not ref.is_floating_point():
                acc = torch.round(acc)
            out[key] = acc.to(ref.dtype)
        return out

    def load_into(self, model: nn.Module) -> None:
        """Copy the averaged state into `model` (a SplittableModel) in place."""
        result = self.result()
        with torch.no_grad():
            for key, tensor in model.state_dict().items():
                tensor.copy_(result[key])
