"""Process-wide cleanup: registered objects are closed at interpreter exit and on SIGTERM/SIGINT/SIGHUP.

The signal handler closes everything registered, then behaves as the previous handler did (calls it, ignores
the signal, or re-raises it with the default action).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from types import FrameType
from typing import Protocol


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


def unregister_cleanup(obj: Closeable) -> None:
    """Undo register_cleanup."""
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
