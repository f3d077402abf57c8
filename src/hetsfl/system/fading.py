"""Block fading redrawn every round (issue 10): small-scale power gains |g|^2 ~ Exp(1) per (seed, round, device).

Round r draws from its own stream ``SeedSequence([seed, key("fading"), r])``; device n takes the n-th draw,
so a device's fading in a round does not change when devices are added or removed (the same stability as
``scenario.stream``), and rounds are independent. Path loss and shadowing stay fixed per device: the realised
gain of device n in round r is h_n,r = h̄_n |g_n,r|^2 with h̄_n the gain without small-scale fading (the
problem file's ``channel_gain`` when the scenario uses per-round fading). E|g|^2 = 1, so h̄ is the mean gain.
"""

from __future__ import annotations

import hashlib

import numpy as np

FADING_MODELS = ("none", "rayleigh")
_KEY = int.from_bytes(hashlib.sha256(b"fading").digest()[:4], "little")


def round_stream(seed: int, round_idx: int) -> np.random.Generator:
    """The generator of round ``round_idx`` (0-based)."""
    if int(seed) < 0 or int(round_idx) < 0:
        raise ValueError(f"seed and round must be non-negative, got seed={seed}, round={round_idx}")
    return np.random.default_rng(np.random.SeedSequence([int(seed), _KEY, int(round_idx)]))


def fading_power(seed: int, round_idx: int, num_devices: int, model: str = "rayleigh") -> np.ndarray:
    """|g_n|^2 of devices 0..N-1 in one round: unit-mean exponential (Rayleigh amplitude), or ones for 'none'."""
    if model == "none":
        return np.ones(int(num_devices))
    if model != "rayleigh":
        raise ValueError(f"unknown fading model {model!r}; use one of {', '.join(FADING_MODELS)}")
    return round_stream(seed, round_idx).standard_exponential(int(num_devices))


def fading_powers(seed: int, rounds: int, num_devices: int, model: str = "rayleigh") -> np.ndarray:
    """(rounds, N) array of |g|^2: row r is ``fading_power(seed, r, N)``."""
    return np.stack([fading_power(seed, r, num_devices, model) for r in range(int(rounds))]) if rounds else \
        np.zeros((0, int(num_devices)))


def round_gains(base_gain: np.ndarray, seed: int, round_idx: int, model: str = "rayleigh") -> np.ndarray:
    """Realised channel gains of one round: the fixed part (path loss x shadowing) times the round's fading."""
    base = np.asarray(base_gain, dtype=float)
    return base * fading_power(seed, round_idx, base.shape[0], model)
