"""Point-to-point messages over torch.distributed with receiver-side timing and bounded waits.

Every message is two gloo sends on the same connection: a 32-byte header (payload size, round, sequence
number, sender's wall clock) and the payload, one flat uint8 buffer (see :mod:`hetsfl.runtime.packing`).
The receiver posts both receives *before* the sender sends (gloo only moves data once the receive is
posted), so

- ``wait_s`` = from the moment the receiver starts waiting until the header arrives (the time it spent
  waiting for the other side: the peer's compute, earlier transfers, queueing),
- ``transfer_s`` = from the header's arrival until the payload is complete (the payload's time on the link,
  measured with the receiver's clock only, so it holds across hosts whose clocks differ),
- ``latency_s`` = the header's arrival minus the sender's wall clock when it sent it (one-way latency of a
  small message; meaningful only when both clocks are the same, e.g. one host).

When the size is not known in advance (``nbytes=None``) the payload receive is posted after the header
arrived; the transfer then also contains one small round trip (gloo's receive-ready notice).

Every wait has a timeout; a timeout or a failed peer raises :class:`CommError` naming both ranks, their
roles and hosts, and what was awaited. Ranks: 0 is the server, rank n + 1 is device n.
"""

from __future__ import annotations

import datetime
import re
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from hetsfl.runtime.errors import CommError

__all__ = ["HEADER_BYTES", "Kind", "Link", "Pending", "PeerInfo", "Received", "comm_error"]

HEADER_BYTES = 32


class Kind:
    """Message kinds; each has its own pair of gloo tags (header 2k, payload 2k + 1)."""

    MODEL_DOWN = 1  # global model (or its client-side units) to a device
    GRAD_DOWN = 2  # gradient of the smashed data
    SMASHED_UP = 3  # smashed data and labels of one batch
    MODEL_UP = 4  # a device's trained (client-side) model at the round's end
    REPORT_UP = 5  # a device's own measurements of the round (control, not counted as traffic)

    NAMES = {1: "model download", 2: "gradient", 3: "smashed data", 4: "model upload", 5: "round report"}


@dataclass(frozen=True)
class PeerInfo:
    """Who a rank is, for messages: rank, role ("server"/"device n"), host name and pid."""

    rank: int
    host: str
    pid: int

    @property
    def role(self) -> str:
        return "server" if self.rank == 0 else f"device {self.rank - 1}"

    def __str__(self) -> str:
        return f"rank {self.rank} ({self.role} on host {self.host}, pid {self.pid})"


@dataclass(frozen=True)
class Received:
    """A received payload and its timing (seconds, receiver's clock; ``t_done`` is time.perf_counter)."""

    payload: torch.Tensor
    nbytes: int
    wait_s: float
    transfer_s: float
    t_done: float
    round_idx: int
    seq: int
    latency_s: float  # header arrival (receiver's wall clock) - header sent (sender's): same host only


def comm_error(me: PeerInfo, what: str, exc: BaseException, timeout_s: float) -> CommError:
    """A CommError for a failed gloo call: timed out, or the peer closed the connection (it died)."""
    text = str(exc)
    if "Timed out" in text or "timed out" in text:
        return CommError(f"{me}: {what} timed out after {timeout_s:g} s (is the peer alive and making progress?)")
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    first = re.sub(r"^\[[^\]]*\.(cc|cpp|h):\d+\]\s*", "", first)  # gloo's source location
    closed = any(s in text for s in ("Connection closed", "Connection reset", "Broken pipe", "ECONNRESET"))
    return CommError(f"{me}: {what} failed: {first} (the peer may have died; see its log)", peer_failed=closed)


def _timeout(seconds: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=float(seconds))


class Link:
    """Messages between this rank (``me``) and one peer, with a default timeout for every wait."""

    def __init__(self, me: PeerInfo, peer: PeerInfo, timeout_s: float):
        self.me = me
        self.peer = peer
        self.timeout_s = float(timeout_s)

    def _fail(self, what: str, exc: BaseException, timeout_s: float) -> CommError:
        return comm_error(self.me, f"{what} with {self.peer}", exc, timeout_s)

    def _wait(self, work: dist.Work | None, what: str, timeout_s: float | None) -> None:
        assert work is not None  # isend/irecv give None only to a rank outside the group: never here
        t = self.timeout_s if timeout_s is None else float(timeout_s)
        try:
            work.wait(timeout=_timeout(t))
        except RuntimeError as exc:
            raise self._fail(what, exc, t) from exc

    def send(
        self, kind: int, payload: torch.Tensor, round_idx: int, seq: int = 0, timeout_s: float | None = None
    ) -> float:
        """Send one message (header, then payload); returns the seconds this call blocked.

        Returns once gloo has handed the payload to the kernel, not when it arrived: transfer times are
        measured by the receiver.
        """
        if payload.dtype != torch.uint8 or payload.dim() != 1:
            raise ValueError("payload must be a 1-D uint8 tensor (see hetsfl.runtime.packing.pack)")
        t0 = time.perf_counter()
        header = torch.tensor([payload.numel(), round_idx, seq, time.time()], dtype=torch.float64)
        what = f"sending {Kind.NAMES[kind]} (round {round_idx + 1}, #{seq})"
        try:
            wh = dist.isend(header, dst=self.peer.rank, tag=2 * kind)
            wp = dist.isend(payload, dst=self.peer.rank, tag=2 * kind + 1) if payload.numel() else None
        except RuntimeError as exc:
            raise self._fail(what, exc, self.timeout_s) from exc
        self._wait(wh, what, timeout_s)
        if wp is not None:
            self._wait(wp, what, timeout_s)
        return time.perf_counter() - t0

    def post(self, kind: int, nbytes: int | None, round_idx: int, seq: int = 0) -> Pending:
        """Post the receive of one message of ``kind`` (size ``nbytes``, or None if it is not known)."""
        return Pending(self, kind, nbytes, round_idx, seq)


class Pending:
    """A posted receive; ``wait()`` completes it and returns a :class:`Received`."""

    def __init__(self, link: Link, kind: int, nbytes: int | None, round_idx: int, seq: int):
        self.link = link
        self.kind = kind
        self.nbytes = nbytes
        self.round_idx = round_idx
        self.seq = seq
        self.what = f"receiving {Kind.NAMES[kind]} (round {round_idx + 1}, #{seq})"
        src = link.peer.rank
        self.header = torch.empty(4, dtype=torch.float64)
        try:
            self._wh = dist.irecv(self.header, src=src, tag=2 * kind)
            self.payload = None
            self._wp = None
            if nbytes is not None and nbytes > 0:
                self.payload = torch.empty(int(nbytes), dtype=torch.uint8)
                self._wp = dist.irecv(self.payload, src=src, tag=2 * kind + 1)
        except RuntimeError as exc:
            raise link._fail(self.what, exc, link.timeout_s) from exc

    def wait(self, timeout_s: float | None = None) -> Received:
        link = self.link
        t0 = time.perf_counter()
        link._wait(self._wh, self.what, timeout_s)
        t1 = time.perf_counter()
        latency = time.time() - float(self.header[3])
        size, rnd, seq = int(self.header[0]), int(self.header[1]), int(self.header[2])
        if self.nbytes is not None and size != self.nbytes:
            raise CommError(
                f"{link.me}: {self.what} from {link.peer}: the header announces {size} bytes, expected "
                f"{self.nbytes} (the two ranks disagree on the run: same run.json and code version?)"
            )
        if (rnd, seq) != (self.round_idx, self.seq):
            raise CommError(
                f"{link.me}: {self.what} from {link.peer}: got round {rnd + 1} #{seq} instead "
                f"(protocol out of step)"
            )
        if self.nbytes is None and size > 0:
            self.payload = torch.empty(size, dtype=torch.uint8)
            try:
                self._wp = dist.irecv(self.payload, src=link.peer.rank, tag=2 * self.kind + 1)
            except RuntimeError as exc:
                raise link._fail(self.what, exc, link.timeout_s) from exc
        if self._wp is not None:
            link._wait(self._wp, self.what, timeout_s)
        t2 = time.perf_counter()
        payload = self.payload if self.payload is not None else torch.empty(0, dtype=torch.uint8)
        return Received(payload, size, t1 - t0, t2 - t1, t2, rnd, seq, latency)
