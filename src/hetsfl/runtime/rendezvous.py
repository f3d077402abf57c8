"""Where a rank finds the others: rank, world size and master address from arguments or the environment.

Sources, first match wins for each value:

- explicit arguments (``--rank``, ``--world-size``, ``--master-addr``, ``--master-port``);
- ``RANK`` / ``WORLD_SIZE`` / ``MASTER_ADDR`` / ``MASTER_PORT`` (``env://``; set by ``torchrun`` and by
  :func:`hetsfl.runtime.launch_local`);
- SLURM (``srun``): ``SLURM_PROCID``, ``SLURM_NTASKS``, the first host of ``SLURM_STEP_NODELIST`` (or of
  ``SLURM_JOB_NODELIST``) as master, and the port ``DEFAULT_SLURM_PORT_BASE + SLURM_JOB_ID % 20000``
  when no port is given (concurrent steps of one job need an explicit ``--master-port`` each).
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from hetsfl.runtime.errors import RendezvousError

__all__ = ["DEFAULT_SLURM_PORT_BASE", "Rendezvous", "first_host", "free_port", "resolve_rendezvous"]

DEFAULT_SLURM_PORT_BASE = 29500


@dataclass(frozen=True)
class Rendezvous:
    """Where this process stands: rank (0 = server), world size (devices + 1), master address and port."""

    rank: int
    world_size: int
    master_addr: str
    master_port: int
    source: str  # where the rank came from: "args", "env" or "slurm" (for the log)

    @property
    def init_method(self) -> str:
        host = f"[{self.master_addr}]" if ":" in self.master_addr else self.master_addr
        return f"tcp://{host}:{self.master_port}"


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: ``"n[03-05,9],gpu1"`` -> ``"n03"``, ``"a,b"`` -> ``"a"``."""
    text = nodelist.strip()
    if not text:
        raise RendezvousError("empty SLURM node list; pass --master-addr")
    m = re.match(r"([^,\[]+)(\[([^\]]*)\])?", text)
    if m is None:  # pragma: no cover - the pattern matches any non-empty text not starting with ',' or '['
        raise RendezvousError(f"cannot read the SLURM node list {nodelist!r}; pass --master-addr")
    prefix, ranges = m.group(1), m.group(3)
    if ranges is None:
        return prefix
    first = ranges.split(",", 1)[0].split("-", 1)[0]
    return prefix + first


def _int(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise RendezvousError(f"{name}={value!r} is not an integer") from None


def resolve_rendezvous(
    rank: int | None = None,
    world_size: int | None = None,
    master_addr: str | None = None,
    master_port: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> Rendezvous:
    """Rank, world size, master address and port from the arguments, else the environment (see module)."""
    env = os.environ if environ is None else environ
    if rank is not None:
        source = "args"
    elif "RANK" in env:
        rank, source = _int(env["RANK"], "RANK"), "env"
    elif "SLURM_PROCID" in env:
        rank, source = _int(env["SLURM_PROCID"], "SLURM_PROCID"), "slurm"
    else:
        raise RendezvousError(
            "no rank: pass --rank, or set RANK (torchrun does), or run under srun (SLURM_PROCID)"
        )
    if world_size is None:
        if "WORLD_SIZE" in env:
            world_size = _int(env["WORLD_SIZE"], "WORLD_SIZE")
        elif "SLURM_NTASKS" in env:
            world_size = _int(env["SLURM_NTASKS"], "SLURM_NTASKS")
        else:
            raise RendezvousError("no world size: pass --world-size, or set WORLD_SIZE, or run under srun")
    if master_addr is None:
        if env.get("MASTER_ADDR"):
            master_addr = env["MASTER_ADDR"]
        elif env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST"):
            master_addr = first_host(env.get("SLURM_STEP_NODELIST") or env["SLURM_JOB_NODELIST"])
        else:
            raise RendezvousError("no master address: pass --master-addr or set MASTER_ADDR")
    if master_port is None:
        if env.get("MASTER_PORT"):
            master_port = _int(env["MASTER_PORT"], "MASTER_PORT")
        elif env.get("SLURM_JOB_ID"):
            master_port = DEFAULT_SLURM_PORT_BASE + _int(env["SLURM_JOB_ID"], "SLURM_JOB_ID") % 20000
        else:
            raise RendezvousError("no master port: pass --master-port or set MASTER_PORT")
    rank, world_size, master_port = int(rank), int(world_size), int(master_port)
    if world_size < 2:
        raise RendezvousError(f"world size {world_size}: the runtime needs a server and at least one device")
    if not 0 <= rank < world_size:
        raise RendezvousError(f"rank {rank} is outside 0..{world_size - 1} (world size {world_size})")
    if not 0 < master_port < 65536:
        raise RendezvousError(f"master port {master_port} is not a TCP port (1..65535)")
    return Rendezvous(rank, world_size, str(master_addr), master_port, source)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on `host` a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
