"""Optional compute pacing for emulated devices and server shares (hetsfl.emulation.paced).

The `emulate` stage slows each rank's real compute to the emulated rate c / alpha: a compute block that
used t seconds of this thread's CPU time ends no earlier than t / q wall seconds after it began, with
q = c / (alpha H) the share of one host core (H: the host's FLOP/s per CPU-second at one thread). The
stretch is proportional to the real, measured CPU time of the block, not to a formula's FLOP count, so
what the model gets wrong about compute (layers with few counted FLOPs, memory traffic) stays visible. This
is used instead of a cgroup CPU quota because a quota is exact only over bursts of many CFS periods of at
least 1 ms of quota each, and the per-batch compute of small devices here is well below 1 ms of CPU.

Set per rank by the launcher (absent: no pacing, the runtime's normal behaviour):

- ``HETSFL_PACE``: a device rank's fraction q_n of one core;
- ``HETSFL_SERVER_PACE`` (server): JSON list of the fractions q_S,n at which the server computes for
  device n (its share c_S,n / alpha).
"""

from __future__ import annotations

import contextlib
import json
import os

from hetsfl.emulation.compute import paced

__all__ = ["DEVICE_ENV", "SERVER_ENV", "device_pace", "server_pace"]

DEVICE_ENV = "HETSFL_PACE"
SERVER_ENV = "HETSFL_SERVER_PACE"


def _fraction(value: str | float, what: str) -> float:
    q = float(value)
    if not 0 < q <= 1:
        raise ValueError(f"{what}: pace fraction must be in (0, 1], got {value!r}")
    return q


_DEVICE = _fraction(os.environ[DEVICE_ENV], DEVICE_ENV) if os.environ.get(DEVICE_ENV) else None
_SERVER = (
    [_fraction(v, SERVER_ENV) for v in json.loads(os.environ[SERVER_ENV])] if os.environ.get(SERVER_ENV) else None
)


def device_pace() -> contextlib.AbstractContextManager:
    """Context manager pacing this device's compute block (a no-op when not emulating)."""
    return paced(_DEVICE) if _DEVICE is not None else contextlib.nullcontext()


def server_pace(n: int) -> contextlib.AbstractContextManager:
    """Context manager pacing the server's compute for device n (a no-op when not emulating)."""
    return paced(_SERVER[n]) if _SERVER is not None else contextlib.nullcontext()
