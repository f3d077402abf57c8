"""The `ip` commands of the emulated network: namespaces, the bridge and veth links, stale cleanup, and
whether namespaces, veth pairs and tc work here at all.

Namespaces of a run are named <PREFIX><run id>-s (the server) and -d<n> (device n); `available()` tests
with a namespace named <PREFIX>probe<pid>.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import time

from hetsfl.emulation import _sys
from hetsfl.emulation._sys import PREFIX, EmulationError

NETNS_DIR = "/run/netns"
_NS_RE = re.compile(rf"^({PREFIX}[0-9a-f]{{6}})-(s|d\d+)$")
_PROBE_RE = re.compile(rf"^{PREFIX}probe(\d+)$")  # available()'s test namespace, named after its pid


def list_namespaces() -> list[str]:
    """Names of all network namespaces (`ip netns list`)."""
    out = _sys.run(["ip", "netns", "list"])
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _kill_namespace_processes(namespace: str, grace_s: float = 1.0) -> None:
    """SIGTERM every process in namespace, SIGKILL those still there after grace_s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = [int(p) for p in _sys.run(["ip", "netns", "pids", namespace], check=False).split()]
        pids = [p for p in pids if p != os.getpid()]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if not _sys.run(["ip", "netns", "pids", namespace], check=False).split():
                return
            time.sleep(0.02)


def delete_namespace(namespace: str) -> None:
    """Kill the processes inside namespace and delete it (no error if it is already gone)."""
    _kill_namespace_processes(namespace)
    _sys.run(["ip", "netns", "del", namespace], check=False)


def clean_stale(prefix: str = PREFIX) -> list[str]:
    """Delete namespaces named <prefix>…-s/-d<n> of runs whose owner process is gone; return their names.

    Namespaces of runs whose owner still runs are never touched, so concurrent runs are safe.
    """
    live = _sys.live_names("net")
    removed = []
    for namespace in list_namespaces():
        match, probe = _NS_RE.match(namespace), _PROBE_RE.match(namespace)
        stale = (match and match.group(1) not in live) or (
            probe and _sys.process_start_time(int(probe.group(1))) is None
        )
        if stale and namespace.startswith(prefix):
            delete_namespace(namespace)
            removed.append(namespace)
    _sys.remove_dead_records("net", prefix, live)
    return removed


_AVAILABLE: tuple[bool, str] | None = None


def available() -> tuple[bool, str]:
    """(True, "") if namespaces, veth pairs and tc work here; else (False, one line saying why)."""
    global _AVAILABLE
    if _AVAILABLE is None:
        _AVAILABLE = _probe()
    return _AVAILABLE


def _probe() -> tuple[bool, str]:
    if os.geteuid() != 0:
        return False, f"network emulation needs root (network namespaces, tc); running as uid {os.geteuid()}"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return False, f"network emulation needs the `{tool}` command (iproute2), which is not installed"
    namespace = f"{PREFIX}probe{os.getpid()}"
    try:
        _sys.run(["ip", "netns", "add", namespace])
        _sys.run(["ip", "-n", namespace, "link", "add", "name", "va", "type", "veth", "peer", "name", "vb"])
        _sys.run(["ip", "netns", "exec", namespace,
                  "tc", "qdisc", "add", "dev", "va", "root", "tbf", "rate", "1mbit", "burst", "1600", "limit", "10000"])
    except EmulationError as exc:
        return False, f"network emulation unavailable: {exc}"
    finally:
        _sys.run(["ip", "netns", "del", namespace], check=False)
    return True, ""


def exec_prefix(namespace: str) -> list[str]:
    """Command prefix that runs a program in namespace.

    `nsenter --net=/run/netns/NS` where nsenter exists: it changes only the network namespace, so the
    process still sees /sys/fs/cgroup (to move its own threads into CPU-quota cgroups). Otherwise
    `ip netns exec NS`, which also remounts /sys (hiding the cgroup mounts).
    """
    if shutil.which("nsenter"):
        return ["nsenter", f"--net={NETNS_DIR}/{namespace}", "--"]
    return ["ip", "netns", "exec", namespace]


def add_namespace(namespace: str) -> None:
    """Create the network namespace."""
    _sys.run(["ip", "netns", "add", namespace])


def set_up_bridge(namespace: str, bridge: str, cidr: str) -> None:
    """In namespace: the bridge with address cidr, loopback and bridge up, reno."""
    ip_ns = ["ip", "-n", namespace]
    _sys.run([*ip_ns, "link", "add", "name", bridge, "type", "bridge"])
    _sys.run([*ip_ns, "addr", "add", cidr, "dev", bridge])
    _sys.run([*ip_ns, "link", "set", "lo", "up"])
    _sys.run([*ip_ns, "link", "set", bridge, "up"])
    set_reno(namespace)


def set_up_link(server: str, bridge: str, port: str, device: str, ifname: str, cidr: str) -> None:
    """A veth pair from `port` on the bridge in the server namespace to `ifname` (address cidr) in device's."""
    _sys.run(["ip", "link", "add", "name", port, "netns", server,
              "type", "veth", "peer", "name", ifname, "netns", device])
    ip_s, ip_d = ["ip", "-n", server], ["ip", "-n", device]
    # One MTU-sized frame per packet, so that tc shapes (and counts) what the wire would carry.
    _sys.run([*ip_s, "link", "set", port, "gso_max_segs", "1", "master", bridge, "up"])
    _sys.run([*ip_d, "link", "set", ifname, "gso_max_segs", "1"])
    _sys.run([*ip_d, "addr", "add", cidr, "dev", ifname])
    _sys.run([*ip_d, "link", "set", "lo", "up"])
    _sys.run([*ip_d, "link", "set", ifname, "up"])
    set_reno(device)


def set_reno(namespace: str) -> None:
    """Reno congestion control in namespace (bbr paces and probes, which fights the shaper)."""
    _sys.run(["ip", "netns", "exec", namespace, "sysctl", "-q", "-w", "net.ipv4.tcp_congestion_control=reno"])
