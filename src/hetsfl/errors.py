"""Errors that carry a message meant for the user: what is wrong and how to fix it."""

from __future__ import annotations

from collections.abc import Iterable


class HetsflError(Exception):
    """Base class: the message says what is wrong and how to fix it."""


class ConfigError(HetsflError):
    """A configuration file or value is invalid."""


class InfeasibleError(HetsflError):
    """No split/bandwidth allocation satisfies the constraints; the message names the device(s).

    ``devices``: the ids of the devices that make it infeasible (empty when it is the devices together).
    """

    def __init__(self, message: str, devices: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.devices = list(devices)


class DataError(HetsflError):
    """A dataset is missing or corrupt."""
