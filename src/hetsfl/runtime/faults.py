"""Fault injection for the tests: ``HETSFL_RUNTIME_FAULT=<action>:<round>`` in one rank's environment.

At the start of round <round> (1-based; a device after its model arrived, the server before it sends) the
rank ``kill``s itself with SIGKILL, ``hang``s (sleeps until killed) or raises an ``error``. Unset: nothing.
"""

from __future__ import annotations

import os
import signal
import time

__all__ = ["FAULT_ENV", "fault_point"]

FAULT_ENV = "HETSFL_RUNTIME_FAULT"
_ACTIONS = ("kill", "hang", "error")


def fault_point(round_number: int) -> None:
    spec = os.environ.get(FAULT_ENV, "")
    if not spec:
        return
    action, _, when = spec.partition(":")
    if action not in _ACTIONS or not when.isdigit():
        raise ValueError(f"{FAULT_ENV}={spec!r}: expected <kill|hang|error>:<round>")
    if int(when) != round_number:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "hang":
        while True:
            time.sleep(3600)
    raise RuntimeError(f"injected fault at round {round_number} ({FAULT_ENV}={spec})")
