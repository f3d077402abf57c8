"""Training throughput and peak memory of FL, SFL (V1), SFL-V2 and SL against centralised training.

Centralised training is one model with one SGD optimiser on the same batches (same batch size, same samples,
same order as the devices' batch schedule). Throughput is training samples per second of training time (no
evaluation), measured in this process after a warm-up round, best of --repeats interleaved timings; the
CPU-time column (process CPU seconds, one torch thread) is less disturbed by other jobs on a shared machine.

Peak memory is measured per case in a fresh subprocess: the peak RSS during training (``VmHWM`` of
/proc/self/status after resetting it with /proc/self/clear_refs once the data is loaded and the model built;
``resource.getrusage`` max RSS where that is not available), and that peak minus the RSS before training
("train +" MiB). Prints a table; not a test.

    .venv/bin/python benchmarks/bench_train.py              # N=10 throughput, N=10 and N=100 memory
    .venv/bin/python benchmarks/bench_train.py --quick      # fewer repeats
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch

from hetsfl.models import build_model
from hetsfl.train.methods import make_method, make_sgd, whole_step
from hetsfl.train.schedule import BatchSchedule

CASES = ("central", "fl", "sfl", "sfl_v2", "sl")


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _status_mib(field: str) -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) so that data loading does not mask training's peak."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def load_data(n_devices: int, seed: int = 0):
    try:
        from hetsfl.data.datasets import load_dataset

        train, _ = load_dataset("fashion_mnist", "data", allow_download=False)
        x, y, source = train.x, train.y, "fashion_mnist"
    except Exception:  # no data: random images of the same shape
        gen = torch.Generator().manual_seed(seed)
        x, y, source = (
            torch.randn(60000, 1, 28, 28, generator=gen),
            torch.randint(0, 10, (60000,), generator=gen),
            "random",
        )
    perm = np.random.default_rng(seed).permutation(len(y))
    return x, y, [np.sort(p) for p in np.array_split(perm, n_devices)], source


def heterogeneous_splits(case: str, n: int, num_units: int) -> list[int]:
    if case == "fl":
        return [num_units] * n
    if case == "sl":
        return [2] * n
    return [1 + (i % (num_units - 1)) for i in range(n)]  # 1..L-1 cycling


class Central:
    """One model, one SGD optimiser, the devices' batches one after another."""

    def __init__(self, model, schedule, x, y, lr, momentum):
        self.model, self.schedule, self.x, self.y = model, schedule, x, y
        self.opt = make_sgd(model, lr, momentum, 0.0)

    def run_round(self, r: int):
        self.model.train()
        loss = torch.zeros(())
        for n in range(self.schedule.num_devices):
            for row in torch.from_numpy(self.schedule.batches(n, r)):
                loss += whole_step(self.model, self.opt, self.x[row], self.y[row])
        return loss


def make_runner(case, n_devices, x, y, parts, iters, batch, seed=0):
    torch.manual_seed(seed)
    model = build_model("cnn")
    schedule = BatchSchedule(parts, [iters] * n_devices, [batch] * n_devices, seed)
    if case == "central":
        return Central(model, schedule, x, y, 0.01, 0.9)
    splits = heterogeneous_splits(case, n_devices, model.num_units)
    return make_method(case, model, schedule, x, y, splits, 0.01, 0.9, 0.0, seed)


def time_rounds(runner, rounds: int, first_round: int = 0) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of `rounds` rounds."""
    t0, c0 = time.perf_counter(), time.process_time()
    for r in range(first_round, first_round + rounds):
        out = runner.run_round(r)
        loss = out if isinstance(out, torch.Tensor) else out.loss_sum
        loss.item()
    return time.perf_counter() - t0, time.process_time() - c0


def child(case: str, n_devices: int, iters: int, batch: int, rounds: int) -> None:
    torch.set_num_threads(1)
    x, y, parts, _ = load_data(n_devices)
    runner = make_runner(case, n_devices, x, y, parts, iters, batch)
    # The first optimiser a process creates imports torch._dynamo (~150 MiB); FL/SFL create theirs inside the
    # round, so import it before the baseline to measure training memory, not module code.
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    gc.collect()
    if reset_peak_rss() and _status_mib("VmRSS") is not None:
        base = _status_mib("VmRSS")
        time_rounds(runner, rounds)
        peak = _status_mib("VmHWM")
    else:  # no /proc: ru_maxrss includes the data loading peak
        base = max_rss_mib()
        time_rounds(runner, rounds)
        peak = max_rss_mib()
    print(json.dumps({"base_mib": base, "peak_mib": peak}))


def measure_memory(case: str, n_devices: int, iters: int, batch: int, rounds: int) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        case,
        "--devices",
        str(n_devices),
        "--iters",
        str(iters),
        "--batch",
        str(batch),
        "--rounds",
        str(rounds),
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=10, help="N for the throughput table")
    ap.add_argument("--mem-devices", type=int, nargs="*", default=[10, 100], help="N for the memory table")
    ap.add_argument("--iters", type=int, default=10, help="local iterations K")
    ap.add_argument("--batch", type=int, default=32, help="batch size D")
    ap.add_argument("--rounds", type=int, default=1, help="rounds per timing")
    ap.add_argument("--repeats", type=int, default=6, help="best of this many timings")
    ap.add_argument("--mem-iters", type=int, default=2, help="K for the memory runs (1 round)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="1 timed round, 1 repeat")
    ap.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.devices, args.iters, args.batch, args.rounds)
        return
    if args.quick:
        args.rounds, args.repeats = 1, 2
    torch.set_num_threads(args.threads)
    x, y, parts, source = load_data(args.devices)
    n = args.devices
    print(
        f"cnn on {source}, N={n}, K={args.iters}, D={args.batch}, {args.rounds} timed rounds, best of "
        f"{args.repeats}, torch {torch.__version__}, {args.threads} thread(s)"
    )
    runners = {case: make_runner(case, n, x, y, parts, args.iters, args.batch) for case in CASES}
    for runner in runners.values():  # warm-up round
        time_rounds(runner, 1)
    best_wall = dict.fromkeys(CASES, float("inf"))
    best_cpu = dict.fromkeys(CASES, float("inf"))
    for rep in range(args.repeats):  # interleave the cases, rotating their order, so noise hits them alike
        for i in range(len(CASES)):
            case = CASES[(i + rep) % len(CASES)]
            wall, cpu = time_rounds(runners[case], args.rounds, first_round=1 + rep * args.rounds)
            best_wall[case] = min(best_wall[case], wall)
            best_cpu[case] = min(best_cpu[case], cpu)
    samples = args.rounds * n * args.iters * args.batch
    print(
        f"\n{'method':<9} {'samples/s':>10} {'vs central':>10} {'CPU-time samples/s':>19} {'vs central':>10}"
    )
    for case in CASES:
        sps, cps = samples / best_wall[case], samples / best_cpu[case]
        rel_w = best_wall["central"] / best_wall[case]
        rel_c = best_cpu["central"] / best_cpu[case]
        print(f"{case:<9} {sps:>10.0f} {rel_w:>9.2f}x {cps:>19.0f} {rel_c:>9.2f}x")

    if args.mem_devices:
        print(
            f"\npeak RSS during training (MiB; fresh process per case; 1 round of K={args.mem_iters}, D={args.batch})"
        )
        header = f"{'method':<9}" + "".join(
            f" {'N=' + str(m) + ' peak':>12} {'train +':>8}" for m in args.mem_devices
        )
        print(header)
        for case in CASES:
            cells = []
            for m in args.mem_devices:
                res = measure_memory(case, m, args.mem_iters, args.batch, 1)
                cells.append(f" {res['peak_mib']:>12.0f} {res['peak_mib'] - res['base_mib']:>8.0f}")
            print(f"{case:<9}" + "".join(cells))


if __name__ == "__main__":
    main()
