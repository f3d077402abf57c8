"""Wireless channel: path loss, channel gains and Shannon rates (system model section 3). Pure functions."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

LN2 = float(np.log(2.0))


def dbm_to_watt(dbm: float | np.ndarray) -> float | np.ndarray:
    """Convert dBm (or dBm/Hz) to W (or W/Hz)."""
    return 10.0 ** ((np.asarray(dbm, dtype=float) - 30.0) / 10.0)


def path_loss_db(distance_m: np.ndarray) -> np.ndarray:
    """PL(d) = 128.1 + 37.6 log10(d / km) dB."""
    d = np.asarray(distance_m, dtype=float)
    if np.any(d <= 0):
        raise ValueError("distances must be positive (metres)")
    return 128.1 + 37.6 * np.log10(d / 1000.0)


def channel_gain(
    distance_m: np.ndarray, shadowing_db: float, fading: str, rng: np.random.Generator
) -> np.ndarray:
    """h = 10^(-PL/10) * log-normal shadowing (sigma dB) * optional Rayleigh fading (unit-mean exponential power)."""
    d = np.asarray(distance_m, dtype=float)
    shadow_db = rng.normal(0.0, shadowing_db, size=d.shape) if shadowing_db > 0 else np.zeros(d.shape)
    gain = 10.0 ** (-(path_loss_db(d) + shadow_db) / 10.0)
    if fading == "rayleigh":
        gain = gain * rng.exponential(1.0, size=d.shape)
    elif fading != "none":
        raise ValueError(f"unknown fading {fading!r}; use 'none' or 'rayleigh'")
    return gain


def snr_bandwidth(power_w: ArrayLike, gain: ArrayLike, noise_psd_w_per_hz: float) -> np.ndarray:
    """x = p h / N0 in Hz: the rate is r(b) = b log2(1 + x / b)."""
    return np.asarray(power_w, dtype=float) * np.asarray(gain, dtype=float) / noise_psd_w_per_hz


def rate(bandwidth_hz: ArrayLike, x: ArrayLike) -> np.ndarray:
    """Shannon rate b log2(1 + x/b) in bit/s; 0 at b = 0 and x/ln2 as b -> inf."""
    b = np.asarray(bandwidth_hz, dtype=float)
    x = np.asarray(x, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = b * np.log1p(x / b) / LN2
    return np.where(b > 0, r, 0.0)


def rate_limit(x: np.ndarray) -> np.ndarray:
    """lim_{b->inf} r(b) = x / ln 2: no bandwidth makes a device faster than this."""
    return np.asarray(x, dtype=float) / LN2
