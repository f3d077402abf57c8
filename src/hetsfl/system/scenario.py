"""Seeded generation of devices and channels for one scenario (system model sections 3 and 7).

Each quantity is drawn from its own random stream, so changing one parameter (say the number of devices)
keeps the draws of the others: device n has the same distance in every point of a device-count sweep.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from hetsfl.system.channel import channel_gain, dbm_to_watt

STREAMS = ("distance", "shadowing", "flops", "memory")


def stream(seed: int, name: str) -> np.random.Generator:
    """An independent generator for quantity ``name`` (stable across Python versions and runs)."""
    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")
    return np.random.default_rng(np.random.SeedSequence([seed, key]))


def _uniform(rng: np.random.Generator, bounds: Sequence[float], n: int) -> np.ndarray:
    lo, hi = float(bounds[0]), float(bounds[1])
    return lo + (hi - lo) * rng.random(n)


def generate_scenario(spec: dict, seed: int, name: str = "scenario") -> dict:
    """Draw the devices of one scenario. ``spec`` is a full `physical` section (config schema)."""
    n = int(spec["num_devices"])
    seed = int(seed) + int(spec.get("seed", 0))
    distance = _uniform(stream(seed, "distance"), spec["distance_m"], n)
    # rayleigh_per_round: the scenario keeps the gain without small-scale fading (the mean gain); each round
    # redraws the fading (hetsfl.system.fading). The shadowing draws are the same as for the other kinds.
    static_fading = "none" if spec["fading"] == "rayleigh_per_round" else spec["fading"]
    gain = channel_gain(distance, float(spec["shadowing_db"]), static_fading, stream(seed, "shadowing"))
    flops = _uniform(stream(seed, "flops"), spec["device_flops"], n)
    memory = spec.get("device_memory_bytes")
    mem = _uniform(stream(seed, "memory"), memory, n) if memory is not None else None
    devices = []
    for i in range(n):
        dev = {
            "id": i,
            "distance_m": float(distance[i]),
            "channel_gain": float(gain[i]),
            "flops": float(flops[i]),
            "tx_power_w": float(spec["device_tx_power_w"]),
            "batch_size": int(spec["batch_size"]),
            "local_iters": int(spec["local_iters"]),
        }
        if mem is not None:
            dev["memory_bytes"] = float(mem[i])
        devices.append(dev)
    return {
        "name": name,
        "seed": seed,
        "spec": dict(spec),
        "fading": spec["fading"],
        "total_bandwidth_hz": float(spec["total_bandwidth_hz"]),
        "noise_psd_w_per_hz": float(dbm_to_watt(spec["noise_psd_dbm_per_hz"])),
        "server": {
            "flops": float(spec["server_flops"]),
            "tx_power_w": float(spec["server_tx_power_w"]),
            "sharing": spec["server_sharing"],
        },
        "min_split": int(spec["min_split"]),
        "bits_per_activation": int(spec["bits_per_activation"]),
        "bits_per_param": int(spec["bits_per_param"]),
        "devices": devices,
    }
