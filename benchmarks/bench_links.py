"""Shaped links: measured / predicted transfer time per message size, rate and direction (needs root).

For rates of 2, 10 and 50 Mbit/s (payload) on one device's link and messages of 64 KiB, 1 MiB and 8 MiB,
times TCP transfers device -> server (up), server -> device (down) and both at once (same size and rate each
way), at the receiver, and prints the median and the min-max of measured / predicted (predicted = 8 x bytes /
rate over the bytes after the first received chunk), with the qdisc drops and TCP retransmissions of both
namespaces during the run. `--quick` leaves out 8 MiB at 2 Mbit/s (34 s per message). A last table has three devices at 2, 10 and
50 Mbit/s uploading at once, then downloading at once (each ~1 s per message).
Run: `python benchmarks/bench_links.py [--quick] [--scheme htb|tbf] [--only-fanin]`.
"""

from __future__ import annotations

import argparse
import statistics

from hetsfl.emulation import EmulatedNetwork, available
from hetsfl.emulation.probe import Flow, run_flows
from hetsfl.emulation.shaping import tcp_retrans_segs

SIZES = (64 << 10, 1 << 20, 8 << 20)
RATES = (2e6, 10e6, 50e6)


def repeats_for(nbytes: int, rate: float) -> int:
    """More repeats for short transfers: about 3 s of traffic, between 3 and 15 messages."""
    return max(3, min(15, int(3.0 / (8 * nbytes / rate))))


def counters(net: EmulatedNetwork) -> tuple[int, int, int]:
    """(drops up + down, retransmissions in the device namespace, in the server namespace)."""
    stats = net.link_stats(1)
    return stats.up.drops + stats.down.drops, tcp_retrans_segs(net.prefix(1)), tcp_retrans_segs(net.prefix(0))


def fan_in(scheme: str) -> None:
    """Three devices at 2, 10, 50 Mbit/s sending to (then receiving from) the server at once."""
    rates = (2e6, 10e6, 50e6)
    print("\nthree devices at once; ratio = measured / predicted")
    with EmulatedNetwork(len(rates), shaping=scheme) as net:
        for rank, rate in enumerate(rates, start=1):
            net.set_rates(rank, rate, rate)
        for mode in ("up", "down"):
            flows = [
                Flow(rank, 0, (int(rate / 8),) * 4) if mode == "up" else Flow(0, rank, (int(rate / 8),) * 4)
                for rank, rate in enumerate(rates, start=1)
            ]
            for flow, transfers, rate in zip(flows, run_flows(net, flows, timeout=600), rates, strict=True):
                ratios = [t.seconds / (8 * t.timed_bytes / rate) for t in transfers]
                print(
                    f"{mode:>5} device {max(flow.src, flow.dst)} {rate / 1e6:4.0f}Mb median {statistics.median(ratios):.3f}"
                    f" min-max {min(ratios):.3f}-{max(ratios):.3f}",
                    flush=True,
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--scheme", default="htb", choices=("htb", "tbf"))
    parser.add_argument("--only-fanin", action="store_true")
    args = parser.parse_args()
    ok, reason = available()
    if not ok:
        print(f"skipped: {reason}")
        return
    if args.only_fanin:
        fan_in(args.scheme)
        return
    print(f"scheme {args.scheme}; ratio = measured / predicted time at the receiver (loaded 2-core host)")
    print(
        f"{'rate':>8} {'size':>7} {'mode':>5} {'dir':>5} {'n':>3} {'pred_s':>8} {'median':>7} {'min-max':>12}"
        f" {'drops':>5} {'retx':>5}"
    )
    with EmulatedNetwork(1, shaping=args.scheme) as net:
        for rate in RATES:
            net.set_rates(1, rate, rate)
            for nbytes in SIZES:
                if args.quick and rate < 5e6 and nbytes > 4 << 20:
                    continue
                n = repeats_for(nbytes, rate)
                sizes = (nbytes,) * n
                for mode, flows in (
                    ("up", [Flow(1, 0, sizes)]),
                    ("down", [Flow(0, 1, sizes)]),
                    ("both", [Flow(1, 0, sizes), Flow(0, 1, sizes)]),
                ):
                    before = counters(net)
                    results = run_flows(net, flows, timeout=600)
                    after = counters(net)
                    drops, retx = after[0] - before[0], after[1] - before[1] + after[2] - before[2]
                    for flow, transfers in zip(flows, results, strict=True):
                        ratios = [t.seconds / (8 * t.timed_bytes / rate) for t in transfers]
                        pred = 8 * statistics.median(t.timed_bytes for t in transfers) / rate
                        direction = "up" if flow.src == 1 else "down"
                        print(
                            f"{rate / 1e6:6.0f}Mb {nbytes >> 10:6d}K {mode:>5} {direction:>5} {n:3d} {pred:8.3f} "
                            f"{statistics.median(ratios):7.3f} {min(ratios):5.3f}-{max(ratios):5.3f} "
                            f"{drops:5d} {retx:5d}",
                            flush=True,
                        )

    fan_in(args.scheme)


if __name__ == "__main__":
    main()
