"""Bits a device sends per round, computed from the model (§4), for specs that do not give them."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hetsfl.models import SplittableModel

__all__ = ["default_bits"]


@torch.no_grad()
def default_bits(
    model: SplittableModel,
    splits: Sequence[int],
    local_iters: Sequence[int],
    batch_sizes: Sequence[int],
    *,
    bits_per_activation: int,
    bits_per_param: int,
) -> list[float]:
    """Bits per device per round in each direction (§4): K·D·a(s)·b_act + W(s)·b_par.

    a(s) is the number of values per sample of unit s's output (0 for s = L: FL sends no smashed data), W(s)
    the number of parameters of units 1..s, and b_act, b_par the configured bits per activation and per
    parameter (``physical.bits_per_activation``/``bits_per_param``, as in the profile). The same number
    applies to the uplink and the downlink.
    """
    L = model.num_units
    was_training = model.training
    model.eval()
    device = next(iter(model.parameters())).device
    x = torch.zeros((1, *model.input_shape), device=device)
    act, par = [], []
    for j, unit in enumerate(model.units.values()):
        x = unit(x)
        act.append(x[0].numel() if j + 1 < L else 0)
        par.append(sum(p.numel() for p in unit.parameters()))
    model.train(was_training)
    out = []
    for s, k, d in zip(splits, local_iters, batch_sizes, strict=True):
        out.append(float(bits_per_activation * k * d * act[s - 1] + bits_per_param * sum(par[:s])))
    return out
