"""Timed TCP transfers between ranks of an EmulatedNetwork, to check that shaped links hold their rates.

Each flow is a sink process in the receiver's namespace and a source process in the sender's namespace
(`python -m hetsfl.emulation.probe sink|source ...`). For every message the source sends an 8-byte length
and the payload; the sink times from the first chunk to the last byte (at the receiver: a send returns when
data is in the kernel buffer, not when it arrived) and acknowledges with one byte, so the queue is empty
before the next message. Flows given together start at the same instant and run concurrently.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hetsfl.emulation._sys import EmulationError

if TYPE_CHECKING:
    from hetsfl.emulation.netns import EmulatedNetwork

HEADER = struct.Struct("!Q")
CHUNK = 1 << 16


@dataclass(frozen=True)
class Flow:
    """Messages of the given sizes (bytes) sent from rank src to rank dst, one after another."""

    src: int
    dst: int
    sizes: tuple[int, ...]


@dataclass(frozen=True)
class Transfer:
    """One received message: its size, the bytes after the first chunk, and the time they took."""

    src: int
    dst: int
    nbytes: int
    timed_bytes: int
    seconds: float

    def rate_bps(self) -> float:
        """Measured payload rate (bit/s) over the timed bytes."""
        return 8.0 * self.timed_bytes / self.seconds if self.seconds > 0 else float("inf")


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise EmulationError("probe: connection closed early")
        buf += chunk
    return bytes(buf)


def sink(bind: str, port: int, count: int, timeout: float) -> None:
    """Accept one connection, receive `count` messages, print one JSON line per message."""
    with socket.create_server((bind, port)) as server:
        server.settimeout(timeout)
        conn, _ = server.accept()
        conn.settimeout(timeout)
        with conn:
            print(json.dumps({"ready": True}), flush=True)
            for _ in range(count):
                (size,) = HEADER.unpack(_recv_exact(conn, HEADER.size))
                got, first, start = 0, 0, time.perf_counter()
                while got < size:
                    chunk = conn.recv(min(CHUNK, size - got))
                    if not chunk:
                        raise EmulationError("probe: connection closed mid-message")
                    if got == 0:
                        start, first = time.perf_counter(), len(chunk)
                    got += len(chunk)
                seconds = time.perf_counter() - start
                conn.sendall(b"k")
                print(
                    json.dumps({"nbytes": size, "timed_bytes": size - first, "seconds": seconds}), flush=True
                )


def source(host: str, port: int, sizes: Sequence[int], start_at: float, timeout: float) -> None:
    """Connect (retrying until timeout), wait until start_at (epoch s), send the messages."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = socket.create_connection((host, port), timeout=timeout)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    with conn:
        time.sleep(max(0.0, start_at - time.time()))
        for size in sizes:
            conn.sendall(HEADER.pack(size) + bytes(size))
            if _recv_exact(conn, 1) != b"k":
                raise EmulationError("probe: bad acknowledgement")


def run_flows(
    net: EmulatedNetwork,
    flows: Sequence[Flow],
    base_port: int = 47000,
    timeout: float = 120.0,
    start_delay: float = 0.3,
) -> list[list[Transfer]]:
    """Run the flows concurrently in net (an EmulatedNetwork); per flow, its transfers in order."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    python = [sys.executable, "-m", "hetsfl.emulation.probe"]
    sinks, sources = [], []
    try:
        for i, flow in enumerate(flows):
            argv = [*python, "sink", net.ip(flow.dst), str(base_port + i), str(len(flow.sizes)), str(timeout)]
            sinks.append(net.popen(flow.dst, argv, stdout=subprocess.PIPE, text=True, env=env))
        start_at = time.time() + start_delay
        for i, flow in enumerate(flows):
            sizes = ",".join(str(s) for s in flow.sizes)
            argv = [
                *python,
                "source",
                net.ip(flow.dst),
                str(base_port + i),
                sizes,
                repr(start_at),
                str(timeout),
            ]
            sources.append(net.popen(flow.src, argv, env=env))
        results = []
        for flow, proc in zip(flows, sinks, strict=True):
            out, _ = proc.communicate(timeout=timeout)
            if proc.returncode != 0:
                raise EmulationError(f"probe sink for flow {flow} failed (exit {proc.returncode})")
            rows = [json.loads(line) for line in out.splitlines() if line.strip()]
            results.append(
                [
                    Transfer(flow.src, flow.dst, r["nbytes"], r["timed_bytes"], r["seconds"])
                    for r in rows
                    if "nbytes" in r
                ]
            )
        for proc in sources:
            proc.wait(timeout=timeout)
        return results
    finally:
        for proc in sinks + sources:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: `sink BIND PORT COUNT TIMEOUT` or `source HOST PORT SIZES START_AT TIMEOUT`."""
    parser = argparse.ArgumentParser(prog="python -m hetsfl.emulation.probe")
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("sink")
    s.add_argument("bind")
    s.add_argument("port", type=int)
    s.add_argument("count", type=int)
    s.add_argument("timeout", type=float)
    c = sub.add_parser("source")
    c.add_argument("host")
    c.add_argument("port", type=int)
    c.add_argument("sizes")
    c.add_argument("start_at", type=float)
    c.add_argument("timeout", type=float)
    args = parser.parse_args(argv)
    if args.mode == "sink":
        sink(args.bind, args.port, args.count, args.timeout)
    else:
        source(args.host, args.port, [int(x) for x in args.sizes.split(",")], args.start_at, args.timeout)


if __name__ == "__main__":
    main()
