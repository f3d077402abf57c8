"""Partition a training set over devices: IID, Dirichlet label skew, and label-sorted shards.

Every scheme is a pure function of (labels, arguments, seed): it draws from its own
``numpy.random.default_rng(seed)`` and returns one int64 index array per device, sorted, disjoint, each
with at least ``min_size`` samples. Impossible requests raise ``ValueError`` saying what is wrong.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["SCHEMES", "dirichlet", "iid", "make_partition", "partition_summary", "shards"]

SCHEMES = ("iid", "dirichlet", "shards")


# ---------------------------------------------------------------------------------------------- validation
def _as_labels(labels: Any) -> np.ndarray:
    if hasattr(labels, "detach") and hasattr(labels, "cpu"):  # a torch tensor, without importing torch
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"labels must be a 1-D array, got shape {arr.shape}")
    if arr.size == 0:
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers, got dtype {arr.dtype}")
    if arr.size and int(arr.min()) < 0:
        raise ValueError(f"labels must be non-negative, found {int(arr.min())}")
    return arr


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_common(
    labels: Any, num_devices: int, seed: int, min_size: int
) -> tuple[np.ndarray, int, int, int]:
    labels = _as_labels(labels)
    num_devices = _check_int("num_devices", num_devices, 1)
    seed = _check_int("seed", seed, 0)
    min_size = _check_int("min_size", min_size, 1)
    n = labels.shape[0]
    if num_devices * min_size > n:
        raise ValueError(
            f"cannot give {num_devices} devices at least {min_size} samples each from {n} samples "
            f"(needs {num_devices * min_size}); use fewer devices, a smaller min_size or more data"
        )
    return labels, num_devices, seed, min_size


def _finish(parts: Iterable[npt.ArrayLike]) -> list[np.ndarray]:
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


# ------------------------------------------------------------------------------------------------- schemes
def iid(labels: np.ndarray, num_devices: int, seed: int, min_size: int = 1) -> list[np.ndarray]:
    """Shuffle and cut into ``num_devices`` parts whose sizes differ by at most one; uses every sample."""
    labels, num_devices, seed, min_size = _check_common(labels, num_devices, seed, min_size)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(labels.shape[0])
    return _finish(np.array_split(perm, num_devices))


def _dirichlet_draw(rng: np.random.Generator, by_class: list[np.ndarray], conc: np.ndarray) -> list[np.ndarray]:
    """One draw: each class's shuffled members cut over the devices in proportions from Dir(conc)."""
    num_devices = conc.size
    buckets: list[list[np.ndarray]] = [[] for _ in range(num_devices)]
    for members in by_class:
        members = rng.permutation(members)
        p = rng.dirichlet(conc)
        if not np.all(np.isfinite(p)) or p.sum() <= 0:  # defensive: degenerate draw for tiny alpha
            p = np.zeros(num_devices)
            p[rng.integers(num_devices)] = 1.0
        cuts = np.clip(np.floor(np.cumsum(p)[:-1] * members.size), 0, members.size).astype(np.int64)
        for d, chunk in enumerate(np.split(members, cuts)):
            buckets[d].append(chunk)
    return [np.concatenate(b) if b else np.empty(0, dtype=np.int64) for b in buckets]


def dirichlet(
    labels: np.ndarray,
    num_devices: int,
    alpha: float,
    seed: int,
    min_size: int = 1,
    max_tries: int = 100,
) -> list[np.ndarray]:
    """Label skew: each class is split over the devices in proportions drawn from Dir(alpha, ..., alpha).

    Small ``alpha`` gives each device few classes; large ``alpha`` approaches IID label proportions. The
    whole draw is repeated (with fresh randomness from the same seeded generator) until every device has at
    least ``min_size`` samples; after ``max_tries`` failed draws a ``ValueError`` is raised.
    """
    labels, num_devices, seed, min_size = _check_common(labels, num_devices, seed, min_size)
    if (
        isinstance(alpha, bool)
        or not isinstance(alpha, numbers.Real)
        or not math.isfinite(alpha)
        or alpha <= 0
    ):
        raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
    max_tries = _check_int("max_tries", max_tries, 1)
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    conc = np.full(num_devices, float(alpha))
    sizes = np.zeros(num_devices, dtype=np.int64)
    for _ in range(max_tries):
        parts = _dirichlet_draw(rng, by_class, conc)
        sizes = np.array([p.size for p in parts])
        if sizes.min() >= min_size:
            return _finish(parts)
    raise ValueError(
        f"dirichlet partition (alpha={alpha}, {num_devices} devices, {labels.shape[0]} samples) left a device "
        f"with fewer than min_size={min_size} samples in all {max_tries} tries (last draw's smallest device: "
        f"{int(sizes.min())}); lower min_size or raise alpha (or use fewer devices)"
    )


def shards(
    labels: np.ndarray, num_devices: int, shards_per_device: int, seed: int, min_size: int = 1
) -> list[np.ndarray]:
    """Pathological non-IID split (McMahan et al.): sort by label, cut into equal shards, deal them out.

    The samples are shuffled before a stable sort by label, so the seed picks which samples of a class fall
    in which shard; the shards are then dealt to the devices in a seeded random order,
    ``shards_per_device`` each. Every sample is used. A device sees at most ``shards_per_device`` labels
    when shard boundaries coincide with class boundaries, and at most ``2 * shards_per_device`` when no
    class is smaller than a shard.
    """
    labels, num_devices, seed, min_size = _check_common(labels, num_devices, seed, min_size)
    shards_per_device = _check_int("shards_per_device", shards_per_device, 1)
    n = labels.shape[0]
    num_shards = num_devices * shards_per_device
    if num_shards > n:
        raise ValueError(
            f"cannot cut {n} samples into {num_shards} shards ({num_devices} devices x {shards_per_device} "
            f"shards each); use fewer devices or fewer shards_per_device"
        )
    smallest = shards_per_device * (n // num_shards)
    if smallest < min_size:
        raise ValueError(
            f"shards of {n // num_shards} samples give a device as few as {smallest} samples, below "
            f"min_size={min_size}; lower min_size, use fewer devices or use more data"
        )
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    order = perm[np.argsort(labels[perm], kind="stable")]
    pieces = np.array_split(order, num_shards)
    deal = rng.permutation(num_shards).reshape(num_devices, shards_per_device)
    return _finish(np.concatenate([pieces[s] for s in row]) for row in deal)


# ------------------------------------------------------------------------------------------------ dispatch
def make_partition(
    labels: np.ndarray,
    num_devices: int,
    scheme: str,
    seed: int,
    *,
    alpha: float = 0.5,
    shards_per_device: int = 2,
    min_size: int = 1,
) -> list[np.ndarray]:
    """Partition by ``scheme`` (one of :data:`SCHEMES`); the other keyword arguments go where they apply."""
    if scheme == "iid":
        return iid(labels, num_devices, seed, min_size=min_size)
    if scheme == "dirichlet":
        return dirichlet(labels, num_devices, alpha, seed, min_size=min_size)
    if scheme == "shards":
        return shards(labels, num_devices, shards_per_device, seed, min_size=min_size)
    raise ValueError(f"unknown partition scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")


def partition_summary(parts: list[np.ndarray], labels: np.ndarray, num_classes: int) -> dict:
    """``{"sizes": [n_d per device], "label_histograms": [[count per class] per device]}`` as plain ints."""
    labels = _as_labels(labels)
    num_classes = _check_int("num_classes", num_classes, 1)
    if labels.size and int(labels.max()) >= num_classes:
        raise ValueError(f"labels go up to {int(labels.max())} but num_classes={num_classes}")
    sizes, hists = [], []
    for d, part in enumerate(parts):
        idx = np.asarray(part)
        if idx.size == 0:
            idx = idx.astype(np.int64)
        if idx.ndim != 1 or idx.dtype.kind not in "iu":
            raise ValueError(f"part {d} must be a 1-D integer index array, got {idx.dtype} {idx.shape}")
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= labels.size):
            raise ValueError(f"part {d} has indices outside 0..{labels.size - 1}")
        sizes.append(int(idx.size))
        hists.append([int(c) for c in np.bincount(labels[idx], minlength=num_classes)])
    return {"sizes": sizes, "label_histograms": hists}
