"""Busy-work bursts for measuring how well a CPU quota reproduces a target speed (run inside a cgroup).

`python -m hetsfl.emulation.burst CPU_MS REPEATS GAP_MS SEED` spins REPEATS times until the thread has used
CPU_MS of CPU time, after a random idle gap in [0, GAP_MS) (so bursts start at random phases of the CFS
period), and prints one JSON line per burst: cpu and wall seconds. Under a quota q the wall time should be
cpu / q.
"""

from __future__ import annotations

import json
import random
import sys
import time


def burst(cpu_seconds: float) -> tuple[float, float]:
    """Spin until this thread used cpu_seconds of CPU; return (cpu, wall) seconds."""
    cpu0, wall0 = time.thread_time(), time.perf_counter()
    while time.thread_time() - cpu0 < cpu_seconds:
        pass
    return time.thread_time() - cpu0, time.perf_counter() - wall0


def main(argv: list[str] | None = None) -> None:
    """CLI, see the module docstring."""
    cpu_ms, repeats, gap_ms, seed = (argv or sys.argv[1:])[:4]
    rng = random.Random(int(seed))
    for _ in range(int(repeats)):
        time.sleep(rng.uniform(0, float(gap_ms)) / 1000)
        cpu, wall = burst(float(cpu_ms) / 1000)
        print(json.dumps({"cpu_s": cpu, "wall_s": wall}), flush=True)


if __name__ == "__main__":
    main()
