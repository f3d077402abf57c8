"""Emulated wireless links and slow devices on one Linux host (issue 11, section 2).

* netns.EmulatedNetwork: server + one network namespace per device, bridged veth links, cleanup on exit
  (its `ip` commands in namespaces; owner: run names and the owner-record lifecycle; cleanup: atexit/signals);
* shaping: tc rates per direction (payload bit/s) and drop/retransmission counters;
* compute: cgroup v1 CPU quotas that slow a process's real compute to a target FLOP/s under time dilation;
* probe: timed TCP transfers to check links; burst: busy work to check quotas.

Importing this package does not import torch (only compute's calibration functions do, when called).
"""

from hetsfl.emulation import compute, netns
from hetsfl.emulation._sys import PREFIX, EmulationError
from hetsfl.emulation.compute import (
    CpuGroup,
    CpuGroups,
    QuotaError,
    calibrate_flops,
    calibrate_model,
    paced,
    quota_fraction,
    smallest_alpha,
)
from hetsfl.emulation.netns import EmulatedNetwork, Endpoint, available
from hetsfl.emulation.shaping import LinkStats, QdiscStats


def clean_stale(prefix: str = PREFIX) -> list[str]:
    """Remove namespaces and cgroups of dead runs whose names start with prefix; return what was removed."""
    return netns.clean_stale(prefix) + compute.clean_stale(prefix)


__all__ = [
    "PREFIX",
    "CpuGroup",
    "CpuGroups",
    "EmulatedNetwork",
    "EmulationError",
    "Endpoint",
    "LinkStats",
    "QdiscStats",
    "QuotaError",
    "available",
    "calibrate_flops",
    "calibrate_model",
    "clean_stale",
    "paced",
    "quota_fraction",
    "smallest_alpha",
]
