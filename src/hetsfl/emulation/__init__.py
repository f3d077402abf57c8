"""Emulated wireless links and slow devices on one Linux host (issue 11, section 2).

* netns.EmulatedNetwork: server + one network namespace per device, bridged veth links, cleanup on exit;
* shaping: tc rates per direction (payload bit/s) and drop/retransmission counters;
* compute: cgroup v1 CPU quotas that slow a process's real compute to a target FLOP/s under time dilation;
* probe: timed TCP transfers to check links.

Nothing here imports torch at module level except compute's calibration (imported lazily).
"""

from hetsfl.emulation._sys import PREFIX, EmulationError
from hetsfl.emulation.netns import EmulatedNetwork, Endpoint, available, clean_stale

__all__ = ["PREFIX", "EmulatedNetwork", "EmulationError", "Endpoint", "available", "clean_stale"]
