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

from hetsfl.emulation import compute
from hetsfl.emulation.compute import CpuGroups, available


def run_bursts(procs_file: str, cpu_ms: float, repeats: int, gap_ms: float, seed: int = 0) -> list[dict]:
    """Run hetsfl.emulation.burst inside the cgroup whose cgroup.procs is procs_file."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    script = f'echo $$ > {procs_file} && exec "$@"'
    argv = [
        "sh",
        "-c",
        script,
        "sh",
        sys.executable,
        "-m",
        "hetsfl.emulation.burst",
        str(cpu_ms),
        str(repeats),
        str(gap_ms),
        str(seed),
    ]
    out = subprocess.run(argv, capture_output=True, text=True, env=env, check=True, timeout=600).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def ratios(rows: list[dict], fraction: float) -> list[float]:
    """wall / (cpu / q) per burst."""
    return [r["wall_s"] / (r["cpu_s"] / fraction) for r in rows]


TORCH_WORK = """
import json, os, sys, time
import torch
from hetsfl.emulation.compute import calibrate_model
from hetsfl.models import build_model
from hetsfl.profiling.measure import count_flops
torch.set_num_threads(1)
model = build_model(sys.argv[3], 10).train()
host = calibrate_model(model, batch_size=16, repeats=5)
x = torch.randn(16, *model.input_shape, generator=torch.Generator().manual_seed(0))
def step():
    model.zero_grad(set_to_none=True)
    model(x).sum().backward()
flops, _ = count_flops(step)
step()
open(sys.argv[2], "w").write(str(os.getpid()))
steps, cpu0, wall0 = 0, time.process_time(), time.perf_counter()
while time.perf_counter() - wall0 < float(sys.argv[1]):
    step()
    steps += 1
print(json.dumps({"host": host, "step_flops": flops, "flops": flops * steps,
                  "wall_s": time.perf_counter() - wall0, "cpu_s": time.process_time() - cpu0}))
"""


def torch_table(groups: CpuGroups, model: str = "cnn") -> None:
    """Achieved / target FLOP/s of real torch steps under quotas."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    print(f"\n{model} fwd+bwd, batch 16, 1 thread, 2 s per row")
    print(f"{'q':>5} {'period':>7} {'step_ms':>8} {'H GFLOP/s':>10} {'cpu/wall':>9} {'achieved/target':>16}")
    for fraction in (0.05, 0.1, 0.2, 0.5):
        group = groups.group("torch", fraction)
        period = compute.period_for(fraction)
        argv = [sys.executable, "-c", TORCH_WORK, "2.0", group.procs_file, model]
        row = json.loads(subprocess.run(argv, capture_output=True, text=True, env=env, check=True).stdout)
        achieved = row["flops"] / row["wall_s"] / (fraction * row["host"])
        step_ms = 1000 * row["step_flops"] / row["host"] / fraction
        print(
            f"{fraction:5.2f} {period / 1000:5.0f}ms {step_ms:8.1f} {row['host'] / 1e9:10.1f} "
            f"{row['cpu_s'] / row['wall_s']:9.3f} {achieved:16.3f}",
            flush=True,
        )


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-bursts", action="store_true", help="only the torch table (quota'd forward + backward)")
    args = ap.parse_args()
    ok, reason = available()
    if not ok:
        print(f"skipped: {reason}")
        return
    if args.skip_bursts:
        with CpuGroups() as groups:
            torch_table(groups)
        return
    print(
        f"{'q':>5} {'period':>7} {'target':>7}  median  p10-p90   (wall / target, {os.cpu_count()} cores, loaded host)"
    )
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
                    print(
                        f"{fraction:5.2f} {period_us / 1000:5.0f}ms {target_ms:5d}ms  "
                        f"{statistics.median(values):6.2f}  {p10:.2f}-{p90:.2f}",
                        flush=True,
                    )
        torch_table(groups)


if __name__ == "__main__":
    main()
