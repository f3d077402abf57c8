"""A run's owner: run ids and names, and the lifecycle shared by EmulatedNetwork and CpuGroups.

Entering an OwnedRun checks that the resources can be made here, removes what dead runs of the same name left,
writes the owner record (this process; see _sys), registers for cleanup at exit and on signals, then builds
the resources (closing again if that fails). close() is idempotent and acts only in the owner process: it
removes the resources, then the owner record and the registration.
"""

from __future__ import annotations

import abc
import os
import re
import secrets
from typing import ClassVar, Self

from hetsfl.emulation import _sys
from hetsfl.emulation._sys import PREFIX, EmulationError
from hetsfl.emulation.cleanup import register_cleanup, unregister_cleanup


def new_run_id() -> str:
    """A fresh 6-hex-digit run id."""
    return secrets.token_hex(3)


def run_name(run_id: str) -> str:
    """PREFIX + run id: the prefix of every namespace and cgroup of that run."""
    if not re.fullmatch(r"[0-9a-f]{6}", run_id):
        raise EmulationError(f"run_id must be 6 lowercase hex digits, got {run_id!r}")
    return PREFIX + run_id


class OwnedRun(abc.ABC):
    """Resources of one kind (owner records of `kind`) named after a run; a context manager."""

    #: The owner records' kind ("net" or "cpu").
    kind: ClassVar[str]

    def __init__(self, run_id: str | None = None):
        self.run_id = run_id or new_run_id()
        self.name = run_name(self.run_id)
        self._owner_pid = os.getpid()
        self._active = False

    def __enter__(self) -> Self:
        ok, reason = self._available()
        if not ok:
            raise EmulationError(reason)
        self._clean_stale(self.name)
        self._claim()
        register_cleanup(self)
        self._active = True
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the run's resources, its owner record and its cleanup registration (idempotent)."""
        if not self._active or os.getpid() != self._owner_pid:
            return
        self._active = False
        self._release()
        _sys.remove_record(self.name, self.kind)
        unregister_cleanup(self)

    @abc.abstractmethod
    def _available(self) -> tuple[bool, str]:
        """(True, "") if the resources can be made here; else (False, one line saying why)."""

    @abc.abstractmethod
    def _clean_stale(self, prefix: str) -> list[str]:
        """Remove resources of dead runs whose names start with prefix."""

    @abc.abstractmethod
    def _claim(self) -> None:
        """Write the owner record (with _sys.write_record) before anything is created."""

    @abc.abstractmethod
    def _build(self) -> None:
        """Create the resources."""

    @abc.abstractmethod
    def _release(self) -> None:
        """Remove the resources (also what a failed _build left half made)."""
