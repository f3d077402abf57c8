"""Errors of the distributed runtime: each names the rank, its role and its host."""

from __future__ import annotations

from hetsfl.errors import HetsflError

__all__ = ["CommError", "LaunchError", "RendezvousError", "RunConfigError"]


class RunConfigError(HetsflError):
    """A run directory, its run.json or its data file is missing or inconsistent."""


class RendezvousError(HetsflError):
    """Rank, world size or master address cannot be determined, or the process group cannot be formed."""


class CommError(HetsflError):
    """A message between two ranks timed out, failed (peer died) or broke the protocol.

    ``peer_failed`` is true when the connection was closed or reset by the peer: this rank is then a
    casualty of another rank's failure, not its cause (the launcher reports the cause).
    """

    def __init__(self, message: str, peer_failed: bool = False):
        super().__init__(message)
        self.peer_failed = peer_failed


class LaunchError(HetsflError):
    """A rank started by launch_local failed; the message names the rank, exit code and log tail."""
