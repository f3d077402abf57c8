"""Small system helpers shared by the emulation modules: running commands, owner records of a run."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

from hetsfl.errors import HetsflError

#: Every namespace and cgroup this package creates is named PREFIX + a 6-hex-digit run id (+ a suffix).
PREFIX = "hsfl"
#: Owner records (one JSON file per run and kind) live here; a run whose owner process is gone is stale.
STATE_DIR = Path(os.environ.get("HETSFL_EMULATION_STATE", "/run/hetsfl-emulation"))


class EmulationError(HetsflError):
    """Emulation cannot be set up or used; the message says which step failed and what to do."""


def run(cmd: Sequence[str], *, check: bool = True, timeout: float = 30.0) -> str:
    """Run cmd, return its stdout; raise EmulationError with the command and its stderr if it fails."""
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EmulationError(f"command {' '.join(cmd)!r} could not run: {exc}") from exc
    if check and proc.returncode != 0:
        raise EmulationError(
            f"command {' '.join(cmd)!r} failed (exit {proc.returncode}): {proc.stderr.strip()}"
        )
    return proc.stdout


def process_start_time(pid: int) -> int | None:
    """Start time of pid in clock ticks since boot (field 22 of /proc/pid/stat), None if pid is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(text.rsplit(")", 1)[1].split()[19])


def owner_alive(record: dict) -> bool:
    """True if the process that wrote record still runs (same pid and same start time)."""
    pid, start = record.get("pid"), record.get("start_time")
    return isinstance(pid, int) and start is not None and process_start_time(pid) == start


@contextlib.contextmanager
def state_lock() -> Iterator[None]:
    """Exclusive lock on the owner-record directory (serialises claims, so subnets never collide)."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with open(STATE_DIR / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def record_path(name: str, kind: str) -> Path:
    """Path of the owner record of run `name` for resources of `kind` ("net" or "cpu")."""
    return STATE_DIR / f"{name}.{kind}.json"


def write_record(name: str, kind: str, data: dict) -> None:
    """Write the owner record (this process as owner) plus data; call before creating resources."""
    pid = os.getpid()
    record = {"pid": pid, "start_time": process_start_time(pid), **data}
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    path = record_path(name, kind)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(path)


def read_records(kind: str) -> dict[str, dict]:
    """All owner records of kind, by run name (unreadable records are skipped)."""
    records: dict[str, dict] = {}
    if not STATE_DIR.is_dir():
        return records
    for path in STATE_DIR.glob(f"*.{kind}.json"):
        try:
            records[path.name[: -len(f".{kind}.json")]] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return records


def remove_record(name: str, kind: str) -> None:
    """Delete the owner record (after the resources are gone)."""
    with contextlib.suppress(FileNotFoundError):
        record_path(name, kind).unlink()


def live_names(kind: str) -> set[str]:
    """Run names of kind whose owner process still runs."""
    return {name for name, rec in read_records(kind).items() if owner_alive(rec)}


def remove_dead_records(kind: str, prefix: str, live: set[str]) -> None:
    """Delete the records of kind whose run name starts with prefix and is not in live (the owner is gone)."""
    for name in set(read_records(kind)) - live:
        if name.startswith(prefix):
            remove_record(name, kind)
