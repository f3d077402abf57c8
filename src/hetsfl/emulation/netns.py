"""An emulated network: a server namespace with a bridge, one namespace per device joined by a veth pair.

Rank 0 is the server, ranks 1..N the devices. Nothing is created in the root namespace: the bridge and the
server ends of the veth pairs ("p<n>") live in the server namespace, the device ends ("eth0") in the device
namespaces. Addresses are 10.213.K.(rank+1)/24 with K unique among the live runs on this host. Everything is
removed on exit, on exceptions, at interpreter exit and on SIGTERM/SIGINT/SIGHUP (the handler cleans up,
then behaves as the previous handler did); `clean_stale` removes what a killed run left behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from hetsfl.emulation.shaping import LinkStats

from hetsfl.emulation import _sys
from hetsfl.emulation._sys import PREFIX, EmulationError

SUBNET_BASE = "10.213"
MAX_DEVICES = 250
SERVER_IFNAME = "br0"
DEVICE_IFNAME = "eth0"
NETNS_DIR = "/run/netns"
_NS_RE = re.compile(rf"^({PREFIX}[0-9a-f]{{6}})-(s|d\d+)$")
_PROBE_RE = re.compile(rf"^{PREFIX}probe(\d+)$")  # available()'s test namespace, named after its pid


@dataclass(frozen=True)
class Endpoint:
    """Where a rank lives: namespace, address, and the interface gloo must use (GLOO_SOCKET_IFNAME)."""

    rank: int
    namespace: str
    ip: str
    ifname: str


def new_run_id() -> str:
    """A fresh 6-hex-digit run id."""
    return secrets.token_hex(3)


def run_name(run_id: str) -> str:
    """PREFIX + run id: the prefix of every namespace and cgroup of that run."""
    if not re.fullmatch(r"[0-9a-f]{6}", run_id):
        raise EmulationError(f"run_id must be 6 lowercase hex digits, got {run_id!r}")
    return PREFIX + run_id


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
    for name in set(_sys.read_records("net")) - live:
        if name.startswith(prefix):
            _sys.remove_record(name, "net")
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
        _sys.run(
            [
                "ip",
                "netns",
                "exec",
                namespace,
                "tc",
                "qdisc",
                "add",
                "dev",
                "va",
                "root",
                "tbf",
                "rate",
                "1mbit",
                "burst",
                "1600",
                "limit",
                "10000",
            ]
        )
    except EmulationError as exc:
        return False, f"network emulation unavailable: {exc}"
    finally:
        _sys.run(["ip", "netns", "del", namespace], check=False)
    return True, ""


class EmulatedNetwork:
    """Context manager building the server+N-device topology; see the module docstring.

    `endpoint(rank)`, `command(rank, argv)` and `env(rank)` say where and how to run a rank's process;
    `set_rates(rank, up_bps, down_bps)` shapes a device's link (payload bit/s); `link_stats(rank)` reads
    drops and retransmissions back.
    """

    def __init__(self, num_devices: int, run_id: str | None = None, shaping: str = "htb"):
        if not 1 <= num_devices <= MAX_DEVICES:
            raise EmulationError(f"num_devices must be in 1..{MAX_DEVICES}, got {num_devices}")
        from hetsfl.emulation import shaping as shaping_mod

        shaping_mod.check_scheme(shaping)
        self.num_devices = num_devices
        self.run_id = run_id or new_run_id()
        self.name = run_name(self.run_id)
        self.shaping = shaping
        self.octet: int | None = None
        self._created: list[str] = []
        self._owner_pid = os.getpid()
        self._active = False
        self._rates: dict[int, tuple[float | None, float | None]] = {}

    # ----- addresses and names -------------------------------------------------------------
    def namespace(self, rank: int) -> str:
        """Namespace of rank (0 = server)."""
        self._check_rank(rank)
        return f"{self.name}-s" if rank == 0 else f"{self.name}-d{rank}"

    def ip(self, rank: int) -> str:
        """IPv4 address of rank."""
        self._check_rank(rank)
        if self.octet is None:
            raise EmulationError("the network is not built yet: use it inside `with EmulatedNetwork(...)`")
        return f"{SUBNET_BASE}.{self.octet}.{rank + 1}"

    def endpoint(self, rank: int) -> Endpoint:
        """Namespace, address and interface of rank."""
        ifname = SERVER_IFNAME if rank == 0 else DEVICE_IFNAME
        return Endpoint(rank, self.namespace(rank), self.ip(rank), ifname)

    @property
    def endpoints(self) -> list[Endpoint]:
        """Endpoints of ranks 0..N."""
        return [self.endpoint(r) for r in range(self.num_devices + 1)]

    def bridge_port(self, rank: int) -> str:
        """Name (in the server namespace) of the bridge port of device rank: its downlink shaping point."""
        if rank < 1:
            raise EmulationError(f"rank {rank} is the server; bridge ports belong to devices 1..N")
        self._check_rank(rank)
        return f"p{rank}"

    def prefix(self, rank: int) -> list[str]:
        """Command prefix that runs a program in rank's network namespace.

        `nsenter --net=/run/netns/NS` where nsenter exists: it changes only the network namespace, so the
        process still sees /sys/fs/cgroup (to move its own threads into CPU-quota cgroups). Otherwise
        `ip netns exec NS`, which also remounts /sys (hiding the cgroup mounts).
        """
        namespace = self.namespace(rank)
        if shutil.which("nsenter"):
            return ["nsenter", f"--net={NETNS_DIR}/{namespace}", "--"]
        return ["ip", "netns", "exec", namespace]

    def command(self, rank: int, argv: Sequence[str], cgroup_procs: str | None = None) -> list[str]:
        """argv run in rank's namespace; with cgroup_procs (a cgroup.procs path) it enters that cgroup first."""
        if cgroup_procs is None:
            return [*self.prefix(rank), *argv]
        # The shell enters the cgroup, then execs the namespace prefix (same pid); not the other way round:
        # `ip netns exec` remounts /sys, which hides the cgroup mounts under /sys/fs/cgroup.
        script = f'echo $$ > {shlex.quote(cgroup_procs)} && exec "$@"'
        return ["sh", "-c", script, "sh", *self.prefix(rank), *argv]

    def env(
        self, rank: int, master_port: int = 29500, base: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """Environment for a torch.distributed rank in this network (env:// rendezvous at the server)."""
        env = dict(os.environ if base is None else base)
        env.update(
            GLOO_SOCKET_IFNAME=self.endpoint(rank).ifname,
            MASTER_ADDR=self.ip(0),
            MASTER_PORT=str(master_port),
            RANK=str(rank),
            WORLD_SIZE=str(self.num_devices + 1),
        )
        return env

    def popen(self, rank: int, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        """Start argv in rank's namespace (kwargs go to subprocess.Popen); killed at teardown if alive."""
        return subprocess.Popen(self.command(rank, argv, kwargs.pop("cgroup_procs", None)), **kwargs)

    def _check_rank(self, rank: int) -> None:
        if not isinstance(rank, int) or not 0 <= rank <= self.num_devices:
            raise EmulationError(f"rank must be an int in 0..{self.num_devices}, got {rank!r}")

    # ----- shaping -----------------------------------------------------------------------
    def set_rates(self, rank: int, up_bps: float | None, down_bps: float | None) -> None:
        """Shape device rank's uplink (its eth0) and downlink (its bridge port) to payload rates in bit/s.

        None removes shaping in that direction. Can be called again at any time to change the rates.
        """
        from hetsfl.emulation import shaping

        if rank < 1:
            raise EmulationError("rates belong to devices 1..N; the server (rank 0) has no link of its own")
        self._check_rank(rank)
        shaping.shape(self.prefix(rank), DEVICE_IFNAME, up_bps, self.shaping)
        shaping.shape(self.prefix(0), self.bridge_port(rank), down_bps, self.shaping)
        self._rates[rank] = (up_bps, down_bps)

    def rates(self, rank: int) -> tuple[float | None, float | None]:
        """(up_bps, down_bps) last set for device rank (None = unshaped)."""
        return self._rates.get(rank, (None, None))

    def link_stats(self, rank: int) -> LinkStats:
        """Drops, bytes and TCP retransmissions of device rank's link so far (a shaping.LinkStats)."""
        from hetsfl.emulation import shaping

        self._check_rank(rank)
        return shaping.link_stats(
            self.prefix(rank), DEVICE_IFNAME, self.prefix(0), self.bridge_port(rank), rank, self.ip(rank)
        )

    # ----- lifecycle ----------------------------------------------------------------------
    def __enter__(self) -> EmulatedNetwork:
        ok, reason = available()
        if not ok:
            raise EmulationError(reason)
        clean_stale(self.name)
        with _sys.state_lock():
            used = {
                rec.get("octet")
                for name, rec in _sys.read_records("net").items()
                if name != self.name and _sys.owner_alive(rec)
            }
            free = [k for k in range(1, 255) if k not in used]
            if not free:
                raise EmulationError("all 254 subnets 10.213.K.0/24 are used by live runs; end some first")
            start = int(self.run_id, 16) % len(free)
            self.octet = free[start]
            _sys.write_record(self.name, "net", {"octet": self.octet, "devices": self.num_devices})
        _register(self)
        self._active = True
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _ns_add(self, namespace: str) -> None:
        _sys.run(["ip", "netns", "add", namespace])
        self._created.append(namespace)

    def _build(self) -> None:
        server = self.namespace(0)
        self._ns_add(server)
        ip_s = ["ip", "-n", server]
        _sys.run([*ip_s, "link", "add", "name", SERVER_IFNAME, "type", "bridge"])
        _sys.run([*ip_s, "addr", "add", f"{self.ip(0)}/24", "dev", SERVER_IFNAME])
        _sys.run([*ip_s, "link", "set", "lo", "up"])
        _sys.run([*ip_s, "link", "set", SERVER_IFNAME, "up"])
        _set_reno(server)
        for rank in range(1, self.num_devices + 1):
            device, port = self.namespace(rank), self.bridge_port(rank)
            self._ns_add(device)
            ip_d = ["ip", "-n", device]
            _sys.run(
                [
                    "ip",
                    "link",
                    "add",
                    "name",
                    port,
                    "netns",
                    server,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    DEVICE_IFNAME,
                    "netns",
                    device,
                ]
            )
            # One MTU-sized frame per packet, so that tc shapes (and counts) what the wire would carry.
            _sys.run([*ip_s, "link", "set", port, "gso_max_segs", "1", "master", SERVER_IFNAME, "up"])
            _sys.run([*ip_d, "link", "set", DEVICE_IFNAME, "gso_max_segs", "1"])
            _sys.run([*ip_d, "addr", "add", f"{self.ip(rank)}/24", "dev", DEVICE_IFNAME])
            _sys.run([*ip_d, "link", "set", "lo", "up"])
            _sys.run([*ip_d, "link", "set", DEVICE_IFNAME, "up"])
            _set_reno(device)

    def close(self) -> None:
        """Kill the processes in the run's namespaces and delete them (idempotent)."""
        if not self._active or os.getpid() != self._owner_pid:
            return
        self._active = False
        for namespace in reversed(self._created):
            delete_namespace(namespace)
        # Anything created by a command that failed half-way: delete by name as well.
        for namespace in list_namespaces():
            if namespace.startswith(self.name + "-"):
                delete_namespace(namespace)
        self._created.clear()
        _sys.remove_record(self.name, "net")
        _unregister(self)


def _set_reno(namespace: str) -> None:
    """Reno congestion control in namespace (bbr paces and probes, which fights the shaper)."""
    _sys.run(["ip", "netns", "exec", namespace, "sysctl", "-q", "-w", "net.ipv4.tcp_congestion_control=reno"])


# ----- process-wide cleanup: atexit and signal handlers -------------------------------------
class Closeable(Protocol):
    """Anything with an idempotent close()."""

    def close(self) -> None: ...


_ACTIVE: dict[int, Closeable] = {}
_LOCK = threading.Lock()
_PREVIOUS: dict[int, object] = {}
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_INSTALLED = False


def register_cleanup(obj: Closeable) -> None:
    """Have obj.close() called at interpreter exit and on SIGTERM/SIGINT/SIGHUP (until unregistered)."""
    _register(obj)


def unregister_cleanup(obj: Closeable) -> None:
    """Undo register_cleanup."""
    _unregister(obj)


def _register(obj: Closeable) -> None:
    global _INSTALLED
    with _LOCK:
        _ACTIVE[id(obj)] = obj
        if not _INSTALLED:
            import atexit

            atexit.register(close_all)
            if threading.current_thread() is threading.main_thread():
                for sig in _SIGNALS:
                    _PREVIOUS[sig] = signal.signal(sig, _on_signal)
            _INSTALLED = True


def _unregister(obj: Closeable) -> None:
    with _LOCK:
        _ACTIVE.pop(id(obj), None)


def close_all() -> None:
    """Close every registered network/cgroup set of this process."""
    with _LOCK:
        objs = list(_ACTIVE.values())
    for obj in reversed(objs):
        with contextlib.suppress(Exception):
            obj.close()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    close_all()
    previous = _PREVIOUS.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_IGN:
        return
    else:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
