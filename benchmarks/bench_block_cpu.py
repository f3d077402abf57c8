"""CPU time of one batch's compute blocks under the conditions of an emulation, against the profile's.

The profile times blocks back to back in one process (hetsfl.profiling); an emulated device runs its block
after seconds of waiting, next to other processes, and the emulated server rotates over one model copy per
device. This prints the median thread CPU time (ms) of the runtime's blocks (hetsfl.blocks) at one torch
thread in each condition, and its ratio to back to back (docs/emulation.md, "Run to run"):

- device block (device_forward + device_backward) at split s: back to back; after an idle sleep of each
  given length; with 1, 2, 4 processes running it at once;
- server step (server_step) at split s: one copy; rotating over N copies.

Run: `python benchmarks/bench_block_cpu.py [--split 4] [--batch 32] [--repeats 40]`.
"""

from __future__ import annotations

import argparse
import copy
import multiprocessing as mp
import statistics
import time
from collections.abc import Callable

import torch

from hetsfl.blocks import device_backward, device_forward, make_sgd, server_step
from hetsfl.models import build_model
from hetsfl.models.base import SplittableModel


def _model(seed: int) -> SplittableModel:
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    return build_model("cnn", num_classes=10, input_shape=(1, 28, 28))


def _median_ms(block: Callable[[], object], repeats: int, before: Callable[[], object] | None = None) -> float:
    for _ in range(3):  # warm-up
        block()
    times = []
    for _ in range(repeats):
        if before is not None:
            before()
        t0 = time.thread_time()
        block()
        times.append(time.thread_time() - t0)
    return 1e3 * statistics.median(times)


def device_block(net: SplittableModel, split: int, batch: int) -> Callable[[], None]:
    """One split iteration's device compute: zero_grad + units 1..s forward, then backward, step, zero_grad."""
    client = net.unit_range(0, split).train()
    x = torch.randn(batch, *net.input_shape)

    def run() -> None:
        opt = make_sgd(client, 0.01, 0.0, 0.0)
        out = device_forward(client, opt, x)
        device_backward(out, torch.ones_like(out), opt)

    return run


def server_block(net: SplittableModel, split: int, batch: int, copies: int) -> Callable[[], None]:
    """The server step for units s+1..L, rotating over ``copies`` model copies (one per device)."""
    parts = [copy.deepcopy(net).unit_range(split, net.num_units).train() for _ in range(copies)]
    x = net.unit_range(0, split)(torch.zeros(batch, *net.input_shape)).detach()
    y = torch.zeros(batch, dtype=torch.long)
    turn = [0]

    def run() -> None:
        part = parts[turn[0] % copies]
        turn[0] += 1
        server_step(part, make_sgd(part, 0.01, 0.0, 0.0), x.clone(), y, True)

    return run


def _concurrent_worker(split: int, batch: int, repeats: int, out: mp.Queue) -> None:
    out.put(_median_ms(device_block(_model(0), split, batch), repeats))


def concurrent(split: int, batch: int, repeats: int, procs: int) -> list[float]:
    """The device block's median CPU time in each of ``procs`` processes running it at the same time."""
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    workers = [ctx.Process(target=_concurrent_worker, args=(split, batch, repeats, out)) for _ in range(procs)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return [out.get() for _ in workers]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", type=int, default=4, help="cut after this unit (default 4)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=40, help="timed blocks per condition")
    ap.add_argument("--sleeps", type=float, nargs="+", default=[0.05, 0.5, 2.0], help="idle seconds before a block")
    ap.add_argument("--copies", type=int, default=10, help="server model copies to rotate over (devices)")
    args = ap.parse_args()
    net = _model(0)
    block = device_block(net, args.split, args.batch)
    base = _median_ms(block, args.repeats)
    print(f"device block, s = {args.split}, batch {args.batch}, thread CPU ms (ratio to back to back)")
    print(f"  back to back        {base:7.2f}")
    for s in args.sleeps:
        reps = max(5, min(args.repeats, int(20 / max(s, 1e-3))))
        ms = _median_ms(block, reps, before=lambda s=s: time.sleep(s))
        print(f"  after {s:5.2f} s idle  {ms:7.2f} ({ms / base:.2f}x, {reps} blocks)")
    for procs in (2, 4):
        got = concurrent(args.split, args.batch, args.repeats, procs)
        print(f"  {procs} processes at once " + ", ".join(f"{v:.2f}" for v in got)
              + f" ({statistics.median(got) / base:.2f}x)")
    one = _median_ms(server_block(net, args.split, args.batch, 1), args.repeats)
    many = _median_ms(server_block(net, args.split, args.batch, args.copies), args.repeats)
    print(f"server step, s = {args.split}: one copy {one:.2f} ms, rotating over {args.copies} copies {many:.2f} ms "
          f"({many / one:.2f}x)")


if __name__ == "__main__":
    main()
