"""Errors of the distributed runtime: each names the rank, its role and its host."""

from __future__ import annotations

from hetsfl.errors import HetsflError

__all__ = ["CommError", "LaunchError", "RendezvousError", "RunConfigError"]


class RunConfigError(HetsflError):
    """A run directory, its run.json or its data file is missing or inconsistent."""


class RendezvousError(HetsflError):
    """Rank, world size or master address cannot be determined, or the process group cannot be formed."""


class CommError(HetsflError):
    """A message between two ranks timed out, failed (peer died) or broke the protocol."""


class LaunchError(HetsflError):
    """A rank started by launch_local failed; the message names the rank, exit code and log tail."""
