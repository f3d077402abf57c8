"""Shared helpers of the runtime and training tests: tiny real data, partitions, state comparison."""

from __future__ import annotations

import numpy as np
import torch
from _data import fashion_subset


def tiny_data():
    return fashion_subset(600, 200)


def three_parts(n: int, seed: int = 1) -> list[np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    return [np.sort(p) for p in np.split(perm, [150, 350])]


def load_state(path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def max_abs_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) if a[k].numel() else 0.0 for k in a)


def assert_states_close(a: dict, b: dict, atol: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if a[key].is_floating_point():
            torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0, msg=f"{key} differs")
        else:
            assert torch.equal(a[key], b[key]), key
