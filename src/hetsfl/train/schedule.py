"""Seeded mini-batch schedule: a pure function of (seed, device, round, iteration).

Device n sees an endless stream of its partition's samples: epoch e of the stream is the permutation of the
partition drawn from ``numpy.random.default_rng(SeedSequence([seed, 0, n, e]))``, and the epochs follow each
other. Round r (0-based) takes the stream positions ``[r*K*D, (r+1)*K*D)`` and cuts them into K batches of D
samples (a batch may straddle two epochs). Nothing depends on mutable RNG state, so a resumed run sees the
same batches, and every method (FL, SFL, SFL-V2, SL) trains on the same batches.

The device order of SFL-V2 within a local iteration and the torch seed of a round are drawn the same way,
from ``SeedSequence([seed, 1, r, k])`` and ``SeedSequence([seed, 2, r])``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["BatchSchedule", "device_order", "epoch_permutation", "round_torch_seed"]

_TAG_EPOCH = 0
_TAG_ORDER = 1
_TAG_TORCH = 2


def _check_seed(seed: int) -> int:
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    return seed


def epoch_permutation(seed: int, device: int, epoch: int, size: int) -> np.ndarray:
    """Permutation of range(size) used by `device` in `epoch` (positions into its partition)."""
    rng = np.random.default_rng(
        np.random.SeedSequence([_check_seed(seed), _TAG_EPOCH, int(device), int(epoch)])
    )
    return rng.permutation(int(size))


def device_order(seed: int, round_idx: int, iteration: int, devices: Sequence[int]) -> list[int]:
    """Seeded random order of `devices` for SFL-V2 local iteration `iteration` of round `round_idx` (0-based)."""
    devices = list(devices)
    rng = np.random.default_rng(
        np.random.SeedSequence([_check_seed(seed), _TAG_ORDER, int(round_idx), int(iteration)])
    )
    return [devices[i] for i in rng.permutation(len(devices))]


def round_torch_seed(seed: int, round_idx: int) -> int:
    """Seed for torch's RNG during round `round_idx` (0-based): random layers stay reproducible on resume."""
    state = np.random.SeedSequence([_check_seed(seed), _TAG_TORCH, int(round_idx)]).generate_state(
        2, np.uint32
    )
    return (int(state[0]) << 32 | int(state[1])) & ((1 << 63) - 1)


class BatchSchedule:
    """Mini-batches of every device: ``batches(n, r)`` is an int64 array (K_n, D_n) of dataset indices."""

    def __init__(
        self,
        partitions: Sequence[np.ndarray],
        local_iters: Sequence[int],
        batch_sizes: Sequence[int],
        seed: int,
    ):
        if not (len(partitions) == len(local_iters) == len(batch_sizes)):
            raise ValueError(
                f"partitions ({len(partitions)}), local_iters ({len(local_iters)}) and batch_sizes "
                f"({len(batch_sizes)}) must have one entry per device"
            )
        self.seed = _check_seed(seed)
        self.partitions = []
        for n, part in enumerate(partitions):
            arr = np.asarray(part)
            if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
                raise ValueError(f"partition of device {n} must be a 1-D integer index array")
            if arr.size == 0:
                raise ValueError(f"device {n} has an empty partition; every device needs data to train")
            self.partitions.append(arr.astype(np.int64, copy=False))
        self.local_iters = [int(k) for k in local_iters]
        self.batch_sizes = [int(d) for d in batch_sizes]
        for n, (k, d) in enumerate(zip(self.local_iters, self.batch_sizes, strict=True)):
            if k < 1 or d < 1:
                raise ValueError(f"device {n}: local_iters and batch_sizes must be >= 1, got K={k}, D={d}")
        self._cache: dict[int, tuple[int, np.ndarray]] = {}  # device -> (epoch, permutation), last used

    @property
    def num_devices(self) -> int:
        return len(self.partitions)

    def _perm(self, n: int, epoch: int) -> np.ndarray:
        cached = self._cache.get(n)
        if cached is not None and cached[0] == epoch:
            return cached[1]
        perm = epoch_permutation(self.seed, n, epoch, self.partitions[n].size)
        self._cache[n] = (epoch, perm)
        return perm

    def positions(self, n: int, round_idx: int) -> np.ndarray:
        """Positions (into partition n) of round `round_idx`'s samples, shape (K_n, D_n)."""
        if round_idx < 0:
            raise ValueError(f"round index must be >= 0, got {round_idx}")
        size = self.partitions[n].size
        k, d = self.local_iters[n], self.batch_sizes[n]
        start = round_idx * k * d
        stop = start + k * d
        out = np.empty(k * d, dtype=np.int64)
        filled = 0
        pos = start
        while pos < stop:
            epoch, offset = divmod(pos, size)
            take = min(size - offset, stop - pos)
            out[filled : filled + take] = self._perm(n, epoch)[offset : offset + take]
            filled += take
            pos += take
        return out.reshape(k, d)

    def batches(self, n: int, round_idx: int) -> np.ndarray:
        """Dataset indices of device n's K_n batches in round `round_idx` (0-based), shape (K_n, D_n)."""
        return self.partitions[n][self.positions(n, round_idx)]
