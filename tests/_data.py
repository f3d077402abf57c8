"""Shared test data: a seeded subset of the real Fashion-MNIST (the Debian package is installed by setup)."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from hetsfl.errors import DataError


@functools.lru_cache(maxsize=4)
def fashion_subset(n_train: int = 2000, n_test: int = 500, seed: int = 0):
    from hetsfl.data.datasets import load_dataset

    try:
        train, test = load_dataset("fashion_mnist", "data", allow_download=False)
    except DataError as exc:  # pragma: no cover - the machine has the Debian package
        pytest.skip(f"Fashion-MNIST not available: {exc}")
    rng = np.random.default_rng(seed)
    return train.subset(rng.permutation(len(train))[:n_train]), test.subset(rng.permutation(len(test))[:n_test])


def random_images(n_train: int = 16, n_test: int = 8, shape: tuple[int, ...] = (3, 32, 32), seed: int = 0,
                  name: str = "random"):
    """A tiny seeded (train, test) pair of random images with labels in 0..9 (train first, then test)."""
    import torch

    from hetsfl.data.datasets import ImageDataset

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_test, *shape, generator=gen)
    y = torch.randint(0, 10, (n_train + n_test,), generator=gen)
    return (ImageDataset(x=x[:n_train], y=y[:n_train], num_classes=10, name=name),
            ImageDataset(x=x[n_train:], y=y[n_train:], num_classes=10, name=name))


def write_problem_inputs(directory, profiles: dict[str, dict]):
    """The problem stage's inputs in ``directory``: ``scenario.json`` (the default config's default scenario) and,
    per ``{file name: meta}``, a hand-written 4-unit profile with that meta. Returns ``directory``."""
    from hetsfl.config import scenario_spec, validate_config
    from hetsfl.io import write_json
    from hetsfl.system.scenario import generate_scenario

    cfg = validate_config({})
    write_json(directory / "scenario.json", generate_scenario(scenario_spec(cfg, "default"), cfg["seed"], "default"))
    units = [{"name": f"u{j}", "fwd_flops": 1e6 * (j + 1), "bwd_flops": 2e6 * (j + 1), "out_bits": 1e5 / (j + 1),
              "param_bits": 1e4 * (j + 1)} for j in range(4)]
    for name, meta in profiles.items():
        write_json(directory / name, {"units": units, "meta": meta})
    return directory
