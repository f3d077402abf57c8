"""Distributed runtime on unshaped loopback: per-batch overhead of a split step, and SFL throughput against
the in-process engine on the same workload.

1. Per-batch overhead: one device (N = 1), K split iterations per round at two cuts of the CNN. The
   distributed time per batch is the server's ``train_s`` / K of each round (model download and upload
   included, hence K large); the in-process time per batch is the engine's ``split_step`` on the same
   batches in this process. Overhead = distributed - in-process, per batch (medians over rounds 2.., the
   first round is warm-up, and over --repeats launches).
2. Throughput: SFL-V1 with N devices and heterogeneous cuts; samples per second of the distributed run
   (samples / (train + aggregate) time per round, server clock) against the engine's samples per second of
   training time (timing.csv) on the same spec, data and partition. Goal: ratio >= 0.5.

The distributed run uses 1 + N processes with ``--threads`` torch threads each, the engine one process; on
a machine with few cores shared with other work the numbers are noisy: medians and the spread (min-max)
are printed. Not a test.

    .venv/bin/python benchmarks/bench_runtime.py            # default sizes
    .venv/bin/python benchmarks/bench_runtime.py --quick    # fewer rounds and repeats
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hetsfl.data.datasets import ImageDataset
from hetsfl.runtime import RunOptions, launch_local, write_run
from hetsfl.train import TrainSpec, run_training
from hetsfl.train.methods import make_sgd, split_step
from hetsfl.train.schedule import BatchSchedule


def load_data(n_train: int, n_test: int):
    try:
        from hetsfl.data.datasets import load_dataset

        train, test = load_dataset("fashion_mnist", "data", allow_download=False)
        source = "fashion_mnist"
    except Exception:  # no data: random images of the same shape
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(n_train + n_test, 1, 28, 28, generator=gen)
        y = torch.randint(0, 10, (n_train + n_test,), generator=gen)
        train = ImageDataset(x[:n_train], y[:n_train], 10, "random")
        test = ImageDataset(x[n_train:], y[n_train:], 10, "random")
        source = "random"
    rng = np.random.default_rng(0)
    train = train.subset(np.sort(rng.choice(len(train), n_train, replace=False)))
    test = test.subset(np.sort(rng.choice(len(test), n_test, replace=False)))
    return train, test, source


def spread(values) -> str:
    v = list(values)
    return f"{statistics.median(v):.4g} [{min(v):.4g}..{max(v):.4g}]"


def launch(spec, train, test, parts, threads: int) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    with tempfile.TemporaryDirectory(prefix="bench_runtime_") as tmp:
        out = Path(tmp)
        write_run(out, spec, train, test, parts, RunOptions(timeout_s=300, threads=threads))
        t0 = time.perf_counter()
        launch_local(out, progress=False)
        wall = time.perf_counter() - t0
        return pd.read_csv(out / "measured_rounds.csv"), pd.read_csv(out / "measured_devices.csv"), wall


def in_process_per_batch(spec: TrainSpec, train, parts, rounds: int) -> list[float]:
    """The engine's split_step on device 0's batches of rounds 1.., seconds per batch, one list per round."""
    from hetsfl.models import build_model

    torch.manual_seed(spec.seed)
    model = build_model(spec.model, input_shape=tuple(train.x.shape[1:]))
    client, server = model.split(spec.splits[0])
    sched = BatchSchedule(parts, spec.local_iters, spec.batch_sizes, spec.seed)
    out = []
    for r in range(rounds):
        opt_c = make_sgd(client, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
        opt_s = make_sgd(server, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
        idx = torch.from_numpy(sched.batches(0, r))
        t0 = time.perf_counter()
        for row in idx:
            split_step(client, server, opt_c, opt_s, train.x[row], train.y[row]).item()
        out.append((time.perf_counter() - t0) / idx.shape[0])
    return out[1:]


def overhead(train, test, args) -> None:
    k = args.iters_overhead
    print(f"\n1. Per-batch overhead of a split step, N = 1, K = {k}, D = {args.batch}, cnn (ms per batch)")
    print("   non-compute = (round_s - device compute - server compute) / K of the distributed run: messages up and")
    print("   down (header + payload each), packing, thread hand-offs; model download and upload amortised over K")
    print(f"{'cut':>4} {'smashed KiB':>12} {'in-process':>22} {'distributed':>22} {'non-compute':>22} "
          f"{'up+down transfer':>22}")
    parts = [np.arange(len(train))]
    for cut in (5, 4, 2):
        spec = TrainSpec(method="sfl", model="cnn", splits=[cut], rounds=args.rounds, local_iters=[k],
                         batch_sizes=[args.batch], lr=0.01, momentum=0.9, seed=0, bits_per_activation=32, bits_per_param=32)
        local, dist_pb, noncompute, transfer = [], [], [], []
        for _ in range(args.repeats):
            local += in_process_per_batch(spec, train, parts, args.rounds)
            rounds, devices, _ = launch(spec, train, test, parts, args.threads)
            dist_pb += list((rounds["train_s"] / k)[1:])
            per = devices[devices["round"] > 1]
            noncompute += list((per["round_s"] - per["compute_s"]) / k)
            transfer += list((per["up_s"] + per["down_s"]) / k)
        act = {5: 512, 4: 64 * 7 * 7, 2: 32 * 14 * 14}[cut]
        kib = args.batch * act * 4 / 1024
        print(f"{cut:>4} {kib:>12.0f} {spread(1e3 * v for v in local):>22} {spread(1e3 * v for v in dist_pb):>22} "
              f"{spread(1e3 * v for v in noncompute):>22} {spread(1e3 * v for v in transfer):>22}")


def throughput(train, test, args) -> None:
    n = args.devices
    print(f"\n2. SFL throughput, N = {n}, K = {args.iters}, D = {args.batch}, cnn, heterogeneous cuts, "
          f"{args.rounds} rounds (round 1 dropped)")
    perm = np.random.default_rng(1).permutation(len(train))
    parts = [np.sort(p) for p in np.array_split(perm, n)]
    splits = [(1, 2, 3, 4, 5)[i % 5] for i in range(n)]
    spec = TrainSpec(method="sfl", model="cnn", splits=splits, rounds=args.rounds, local_iters=[args.iters] * n,
                     batch_sizes=[args.batch] * n, lr=0.01, momentum=0.9, seed=0, bits_per_activation=32, bits_per_param=32)
    eng, dis, ratios = [], [], []
    for _ in range(args.repeats):
        torch.set_num_threads(args.threads)
        with tempfile.TemporaryDirectory(prefix="bench_engine_") as tmp:
            run_training(spec, train, test, parts, tmp, progress=False)
            timing = pd.read_csv(Path(tmp) / "timing.csv")
        e = list(timing["samples_per_s"][1:])
        rounds, _, wall = launch(spec, train, test, parts, args.threads)
        d = list((rounds["samples"] / rounds["wall_s"])[1:])
        eng += e
        dis += d
        ratios.append(statistics.median(d) / statistics.median(e))
    print(f"   in-process engine   samples/s: {spread(eng)}")
    print(f"   distributed runtime samples/s: {spread(dis)}   (1 + {n} processes, {args.threads} thread(s) each)")
    print(f"   ratio distributed / in-process (median per repeat): {spread(ratios)}   goal >= 0.5")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=3, help="N for the throughput comparison")
    ap.add_argument("--iters", type=int, default=10, help="local iterations K (throughput)")
    ap.add_argument("--iters-overhead", type=int, default=40, help="local iterations K (overhead, N = 1)")
    ap.add_argument("--batch", type=int, default=32, help="batch size D")
    ap.add_argument("--rounds", type=int, default=4, help="rounds per run (the first is dropped)")
    ap.add_argument("--repeats", type=int, default=2, help="launches per case")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--quick", action="store_true", help="3 rounds, 1 repeat, smaller K")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.repeats, args.iters_overhead = 3, 1, 20
    torch.set_num_threads(args.threads)
    train, test, source = load_data(3000, 500)
    print(f"data: {source}, {len(train)} training samples; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}; torch {torch.__version__}")
    overhead(train, test, args)
    throughput(train, test, args)


if __name__ == "__main__":
    main()
