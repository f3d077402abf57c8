"""tc shaping of one link direction to a TCP payload rate, and the link's drop/retransmission counters.

A frame of a full TCP segment is 1514 bytes on the veth (14 Ethernet + 20 IP + 32 TCP with timestamps +
1448 payload), so the wire rate is the payload rate x 1514/1448. The token bucket holds one frame (1600 B)
or 0.5 ms at the wire rate if that is more: a large bucket lets the start of every message out at line
speed, a one-frame bucket at 50 Mbit/s loses tokens whenever the dequeue runs late (measured 0.93-0.95 of
the rate on this loaded 2-core host; 1.00 with 0.5 ms). The queue holds 4 MB (a short one drops and TCP
retransmits). Schemes:

* ``htb`` (default): an HTB root with two unlimited classes only to order packets: packets shorter than
  128 B (ACKs, control messages) go first and are not limited; the data class's leaf is the tbf above.
  Without it, ACKs of one direction queue behind data of the other when a device uploads and downloads at
  once (measured: 2 Mbit/s up with 50 Mbit/s down, the download ran at 0.53 of its rate). The model has no
  ACKs, so they must not eat payload rate. (Shaping in the HTB class itself was inaccurate here: 0.53-0.96
  at 2 Mbit/s even for one flow; this kernel has no prio, ets, drr, hfsc, netem, fq or fq_codel.)
* ``tbf``: the bare token bucket, accurate for one direction at a time.

The interfaces get ``gso_max_segs 1`` (namespaces.py) so that tc sees single frames; the namespaces use reno.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

from hetsfl.emulation import _sys
from hetsfl.emulation._sys import EmulationError

FRAME_BYTES = 1514
PAYLOAD_BYTES = 1448
BURST_BYTES = 1600
BURST_SECONDS = 0.0005
TBF_LIMIT_BYTES = 4_000_000
FIFO_LIMIT_PACKETS = 10_000
SMALL_PACKET_BYTES = 128
SMALL_CLASS_RATE_BPS = 1e9
MIN_RATE_BPS = 8_000.0
SCHEMES = ("htb", "tbf")


def check_scheme(scheme: str) -> None:
    """Raise EmulationError unless scheme is a known shaping scheme."""
    if scheme not in SCHEMES:
        raise EmulationError(f"unknown shaping scheme {scheme!r}; choose one of {SCHEMES}")


def wire_rate(payload_bps: float) -> int:
    """tc rate (bit/s, on whole frames) that carries payload_bps of TCP payload."""
    if not math.isfinite(payload_bps) or payload_bps < MIN_RATE_BPS:
        raise EmulationError(
            f"rate must be a finite payload rate >= {MIN_RATE_BPS:g} bit/s, got {payload_bps!r}"
        )
    return round(payload_bps * FRAME_BYTES / PAYLOAD_BYTES)


def burst_bytes(payload_bps: float) -> int:
    """Token bucket size: one frame, or BURST_SECONDS at the wire rate if larger (at high rates a
    one-frame bucket loses tokens whenever the dequeue runs late on a busy host)."""
    return max(BURST_BYTES, math.ceil(wire_rate(payload_bps) / 8 * BURST_SECONDS))


def _tbf(rate: str, burst: str) -> list[str]:
    """The token bucket's parameters (rate, bucket, queue) shared by both schemes."""
    return ["tbf", "rate", rate, "burst", burst, "limit", str(TBF_LIMIT_BYTES)]


def _tbf_root(ifname: str, rate: str, burst: str) -> list[list[str]]:
    """Scheme ``tbf``: one token bucket as the root qdisc (replaces whatever was there)."""
    return [["tc", "qdisc", "replace", "dev", ifname, "root", *_tbf(rate, burst)]]


def _htb_classes(dev: list[str]) -> list[list[str]]:
    """The HTB root and its two unlimited classes: 1:10 (small packets, prio 0) and 1:20 (data, default)."""
    fast = f"{int(SMALL_CLASS_RATE_BPS)}bit"
    classes = [
        ["tc", "class", "add", *dev, "parent", "1:", "classid", classid, "htb"]
        + ["rate", fast, "ceil", fast, "prio", prio]
        for classid, prio in (("1:10", "0"), ("1:20", "1"))
    ]
    return [["tc", "qdisc", "add", *dev, "root", "handle", "1:", "htb", "default", "20"], *classes]


def _htb_leaves(dev: list[str], rate: str, burst: str) -> list[list[str]]:
    """The leaf qdiscs: a FIFO under the small-packet class, the shaping tbf under the data class."""
    return [
        ["tc", "qdisc", "add", *dev, "parent", "1:10", "handle", "10:", "pfifo"]
        + ["limit", str(FIFO_LIMIT_PACKETS)],
        ["tc", "qdisc", "add", *dev, "parent", "1:20", "handle", "20:", *_tbf(rate, burst)],
    ]


def _htb_filters(dev: list[str]) -> list[list[str]]:
    """Filters to the small-packet class: IP packets shorter than SMALL_PACKET_BYTES, and all ARP."""
    small_filter = ["match", "u16", "0x0000", f"0x{0xFFFF & ~(SMALL_PACKET_BYTES - 1):04x}", "at", "2"]
    to_small = ["flowid", "1:10"]
    return [
        ["tc", "filter", "add", *dev, "parent", "1:", "protocol", "ip", "prio", "1", "u32"]
        + [*small_filter, *to_small],
        ["tc", "filter", "add", *dev, "parent", "1:", "protocol", "arp", "prio", "2", "u32"]
        + ["match", "u32", "0", "0", *to_small],
    ]


def _htb(ifname: str, rate: str, burst: str) -> list[list[str]]:
    """Scheme ``htb``: htb only orders (two unlimited classes, small packets first); the data leaf is a tbf
    that shapes. The first command clears the old root."""
    dev = ["dev", ifname]
    clear = ["tc", "qdisc", "del", *dev, "root"]
    return [clear, *_htb_classes(dev), *_htb_leaves(dev, rate, burst), *_htb_filters(dev)]


def tc_commands(ifname: str, payload_bps: float | None, scheme: str = "htb") -> list[list[str]]:
    """The tc commands (without a netns prefix) that shape ifname's egress; None = unshaped."""
    check_scheme(scheme)
    if payload_bps is None:
        return [["tc", "qdisc", "del", "dev", ifname, "root"]]
    rate = f"{wire_rate(payload_bps)}bit"
    burst = str(burst_bytes(payload_bps))
    if scheme == "tbf":
        return _tbf_root(ifname, rate, burst)
    if scheme == "htb":
        return _htb(ifname, rate, burst)
    raise AssertionError(scheme)


def shape(prefix: Sequence[str], ifname: str, payload_bps: float | None, scheme: str = "htb") -> None:
    """Apply tc_commands in the namespace given by prefix (`ip netns exec NS`)."""
    commands = tc_commands(ifname, payload_bps, scheme)
    # Deleting a root qdisc that is not there fails harmlessly ("Cannot delete qdisc with handle of zero").
    _sys.run([*prefix, *commands[0]], check=commands[0][2] != "del")
    for cmd in commands[1:]:
        _sys.run([*prefix, *cmd])


@dataclass(frozen=True)
class QdiscStats:
    """Counters of an interface's root qdisc (summed over the hierarchy's leaves for htb)."""

    sent_bytes: int
    sent_packets: int
    drops: int
    overlimits: int
    backlog_bytes: int


@dataclass(frozen=True)
class LinkStats:
    """Counters of one device's link. Retransmissions: device namespace for up (all its TCP), sockets to
    the device in the server namespace for down (only connections still open)."""

    rank: int
    up: QdiscStats
    down: QdiscStats
    up_retrans_segs: int
    down_retrans_segs: int


def qdisc_stats(prefix: Sequence[str], ifname: str) -> QdiscStats:
    """Counters of ifname's root qdisc, from `tc -s -j qdisc show` (htb's root counts its leaves' drops)."""
    rows = json.loads(_sys.run([*prefix, "tc", "-s", "-j", "qdisc", "show", "dev", ifname]) or "[]")
    root = next((r for r in rows if r.get("root")), rows[0] if rows else {})
    return QdiscStats(
        sent_bytes=int(root.get("bytes", 0)),
        sent_packets=int(root.get("packets", 0)),
        drops=int(root.get("drops", 0)),
        overlimits=int(root.get("overlimits", 0)),
        backlog_bytes=int(root.get("backlog", 0)),
    )


def tcp_retrans_segs(prefix: Sequence[str]) -> int:
    """TCP RetransSegs of the namespace (from /proc/net/snmp read inside it)."""
    lines = [
        ln.split()
        for ln in _sys.run([*prefix, "cat", "/proc/net/snmp"]).splitlines()
        if ln.startswith("Tcp:")
    ]
    if len(lines) < 2:
        raise EmulationError("no Tcp counters in /proc/net/snmp")
    return int(dict(zip(lines[0][1:], lines[1][1:], strict=True))["RetransSegs"])


def socket_retrans_segs(prefix: Sequence[str], peer_ip: str) -> int:
    """Total retransmitted segments of the open TCP sockets to peer_ip (`ss -ti`, field retrans:a/b)."""
    out = _sys.run([*prefix, "ss", "-tinH", "dst", peer_ip], check=False)
    total = 0
    for token in out.split():
        if token.startswith("retrans:"):
            total += int(token.split("/")[-1])
    return total


def link_stats(
    dev_prefix: Sequence[str], dev_if: str, srv_prefix: Sequence[str], port: str, rank: int, dev_ip: str
) -> LinkStats:
    """LinkStats of one device (see EmulatedNetwork.link_stats)."""
    return LinkStats(
        rank=rank,
        up=qdisc_stats(dev_prefix, dev_if),
        down=qdisc_stats(srv_prefix, port),
        up_retrans_segs=tcp_retrans_segs(dev_prefix),
        down_retrans_segs=socket_retrans_segs(srv_prefix, dev_ip),
    )
