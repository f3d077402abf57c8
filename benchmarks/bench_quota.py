"""How accurately a cgroup v1 CPU quota reproduces a target speed for short bursts (needs root).

For quota fractions q and CFS periods, a process in the cgroup spins bursts of fixed CPU time (targets of
10, 50 and 200 ms of wall time at speed q) after random idle gaps, and we print median and 10-90 % range of
wall / (cpu / q): 1.00 means the burst took exactly its target time. Run: `python benchmarks/bench_quota.py`.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

from hetsfl.emulation.compute import CpuGroups, available


def run_bursts(procs_file: str, cpu_ms: float, repeats: int, gap_ms: float, seed: int = 0) -> list[dict]:
    """Run hetsfl.emulation.burst inside the cgroup whose cgroup.procs is procs_file."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    script = f'echo $$ > {procs_file} && exec "$@"'
    argv = ["sh", "-c", script, "sh", sys.executable, "-m", "hetsfl.emulation.burst",
            str(cpu_ms), str(repeats), str(gap_ms), str(seed)]
    out = subprocess.run(argv, capture_output=True, text=True, env=env, check=True, timeout=600).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def ratios(rows: list[dict], fraction: float) -> list[float]:
    """wall / (cpu / q) per burst."""
    return [r["wall_s"] / (r["cpu_s"] / fraction) for r in rows]


def main() -> None:
    ok, reason = available()
    if not ok:
        print(f"skipped: {reason}")
        return
    print(f"{'q':>5} {'period':>7} {'target':>7}  median  p10-p90   (wall / target, {os.cpu_count()} cores, loaded host)")
    with CpuGroups() as groups:
        for fraction in (0.1, 0.25, 0.5):
            for period_us in (100_000, 20_000, 10_000, 5_000):
                if fraction * period_us < 1000:
                    continue
                group = groups.group("bench", fraction, period_us)
                for target_ms in (10, 50, 200):
                    repeats = 12 if target_ms < 200 else 5
                    rows = run_bursts(group.procs_file, fraction * target_ms, repeats, period_us / 1000)
                    values = sorted(ratios(rows, fraction))
                    p10, p90 = values[len(values) // 10], values[(9 * len(values)) // 10 - 1]
                    print(f"{fraction:5.2f} {period_us / 1000:5.0f}ms {target_ms:5d}ms  "
                          f"{statistics.median(values):6.2f}  {p10:.2f}-{p90:.2f}", flush=True)


if __name__ == "__main__":
    main()
