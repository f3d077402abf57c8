"""An emulated network: a server namespace with a bridge, one namespace per device joined by a veth pair.

Rank 0 is the server, ranks 1..N the devices. Nothing is created in the root namespace: the bridge and the
server ends of the veth pairs ("p<n>") live in the server namespace, the device ends ("eth0") in the device
namespaces. Addresses are 10.213.K.(rank+1)/24 with K unique among the live runs on this host. Everything is
removed on exit, on exceptions, at interpreter exit and on SIGTERM/SIGINT/SIGHUP (the handler cleans up,
then behaves as the previous handler did); `clean_stale` removes what a killed run left behind.

The `ip` commands are in namespaces.py, run ids and the owner lifecycle in owner.py, the exit and signal
handlers in cleanup.py; their public names are importable from here as well.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hetsfl.emulation.shaping import LinkStats

from hetsfl.emulation import _sys
from hetsfl.emulation._sys import EmulationError
from hetsfl.emulation.cleanup import Closeable, close_all, register_cleanup, unregister_cleanup
from hetsfl.emulation.namespaces import (
    NETNS_DIR,
    add_namespace,
    available,
    clean_stale,
    delete_namespace,
    exec_prefix,
    list_namespaces,
    set_up_bridge,
    set_up_link,
)
from hetsfl.emulation.owner import OwnedRun, new_run_id, run_name

__all__ = [
    "DEVICE_IFNAME",
    "MAX_DEVICES",
    "NETNS_DIR",
    "SERVER_IFNAME",
    "SUBNET_BASE",
    "Closeable",
    "EmulatedNetwork",
    "Endpoint",
    "available",
    "claim_subnet",
    "clean_stale",
    "close_all",
    "delete_namespace",
    "list_namespaces",
    "new_run_id",
    "register_cleanup",
    "run_name",
    "unregister_cleanup",
]

SUBNET_BASE = "10.213"
MAX_DEVICES = 250
SERVER_IFNAME = "br0"
DEVICE_IFNAME = "eth0"


@dataclass(frozen=True)
class Endpoint:
    """Where a rank lives: namespace, address, and the interface gloo must use (GLOO_SOCKET_IFNAME)."""

    rank: int
    namespace: str
    ip: str
    ifname: str


def claim_subnet(name: str, run_id: str, num_devices: int) -> int:
    """K of a subnet 10.213.K.0/24 no other live run uses, recorded in run name's owner record.

    Runs start their search at run_id (mod the free subnets), so concurrent runs rarely want the same K; the
    state lock makes the claim atomic.
    """
    with _sys.state_lock():
        used = {
            rec.get("octet")
            for other, rec in _sys.read_records("net").items()
            if other != name and _sys.owner_alive(rec)
        }
        free = [k for k in range(1, 255) if k not in used]
        if not free:
            raise EmulationError("all 254 subnets 10.213.K.0/24 are used by live runs; end some first")
        octet = free[int(run_id, 16) % len(free)]
        _sys.write_record(name, "net", {"octet": octet, "devices": num_devices})
    return octet


class EmulatedNetwork(OwnedRun):
    """Context manager building the server+N-device topology; see the module docstring.

    `endpoint(rank)`, `command(rank, argv)` and `env(rank)` say where and how to run a rank's process;
    `set_rates(rank, up_bps, down_bps)` shapes a device's link (payload bit/s); `link_stats(rank)` reads
    drops and retransmissions back.
    """

    kind = "net"

    def __init__(self, num_devices: int, run_id: str | None = None, shaping: str = "htb"):
        if not 1 <= num_devices <= MAX_DEVICES:
            raise EmulationError(f"num_devices must be in 1..{MAX_DEVICES}, got {num_devices}")
        from hetsfl.emulation import shaping as shaping_mod

        shaping_mod.check_scheme(shaping)
        self.num_devices = num_devices
        super().__init__(run_id)
        self.shaping = shaping
        self.octet: int | None = None
        self._created: list[str] = []
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
        """Command prefix that runs a program in rank's network namespace (see namespaces.exec_prefix)."""
        return exec_prefix(self.namespace(rank))

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

    def popen(self, rank: int, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen:
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

    # ----- lifecycle (OwnedRun) ---------------------------------------------------------------
    def _available(self) -> tuple[bool, str]:
        return available()

    def _clean_stale(self, prefix: str) -> list[str]:
        return clean_stale(prefix)

    def _claim(self) -> None:
        self.octet = claim_subnet(self.name, self.run_id, self.num_devices)

    def _ns_add(self, namespace: str) -> None:
        add_namespace(namespace)
        self._created.append(namespace)

    def _build(self) -> None:
        server = self.namespace(0)
        self._ns_add(server)
        set_up_bridge(server, SERVER_IFNAME, f"{self.ip(0)}/24")
        for rank in range(1, self.num_devices + 1):
            device = self.namespace(rank)
            self._ns_add(device)
            set_up_link(server, SERVER_IFNAME, self.bridge_port(rank), device, DEVICE_IFNAME, f"{self.ip(rank)}/24")

    def _release(self) -> None:
        """Kill the processes in the run's namespaces and delete them."""
        for namespace in reversed(self._created):
            delete_namespace(namespace)
        # Anything created by a command that failed half-way: delete by name as well.
        for namespace in list_namespaces():
            if namespace.startswith(self.name + "-"):
                delete_namespace(namespace)
        self._created.clear()
