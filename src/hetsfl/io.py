"""File output that never leaves a half-written file behind: write to a temporary file, then rename."""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


def _umask() -> int:
    """The process umask (read by setting and restoring it; there is no read-only call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _default(obj: object) -> int | float | list:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600 files; outputs get the usual mode of a new file (0666 minus the umask) so that
        # other members of a group project can read results.
        os.fchmod(fd, 0o666 & ~_umask())
    finally:
        os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (flushed to disk before the rename)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


_ENCODER = json.JSONEncoder(default=_default, allow_nan=False)  # one encoder: building one per record is slow


def _compact(obj: object) -> str:
    return _ENCODER.encode(obj)


def _records(records: list[dict]) -> list[str]:
    """Each record's compact JSON. One C-encoder call for the whole list, split at the n - 1 record
    boundaries "}, {"; if the text holds more of them (inside a string or a nested object), one call per
    record instead."""
    text = _compact(records)
    if text.count("}, {") == len(records) - 1:
        parts = text[2:-2].split("}, {")
        return ["{" + part + "}" for part in parts]
    return [_compact(r) for r in records]


def _key(key: object) -> str:
    """A mapping key as json.dumps writes it (keys become strings; True, None as true, null)."""
    return json.dumps(key if isinstance(key, str) else json.dumps(key) if key is None or isinstance(key, bool) else str(key))


def json_text(doc: object, indent: int = 1) -> str:
    """JSON text of ``doc``: mappings one key per line, lists of scalars on one line, lists of records one record
    per line (so that per-device arrays of 10^5 devices are written by the C encoder, not the pure-Python
    indenting one). The same data as json.dumps(doc, indent=indent); NaN and infinity are refused."""
    pad = " " * indent

    def encode(obj: Any, depth: int) -> str:
        obj = obj.tolist() if isinstance(obj, np.ndarray) else obj
        if isinstance(obj, dict) and obj:
            inner = pad * (depth + 1)
            items = [f"{inner}{_key(k)}: {encode(v, depth + 1)}" for k, v in obj.items()]
            return "{\n" + ",\n".join(items) + "\n" + pad * depth + "}"
        types = set(map(type, obj)) if isinstance(obj, (list, tuple)) else set()
        if obj and any(issubclass(t, (dict, list, tuple)) for t in types):
            inner = pad * (depth + 1)
            if all(issubclass(t, dict) for t in types):
                items = [inner + record for record in _records(obj)]
            else:
                items = [inner + encode(v, depth + 1) for v in obj]
            return "[\n" + ",\n".join(items) + "\n" + pad * depth + "]"
        return _compact(obj)

    try:
        return encode(doc, 0) + "\n"
    except ValueError as exc:  # NaN or infinity: a bug upstream, said plainly
        raise ValueError(f"cannot write a non-finite number as JSON ({exc})") from exc


def write_json(
    path: str | os.PathLike, doc: object, indent: int = 1, *, sort_keys: bool = False, allow_nan: bool = False
) -> None:
    """Write ``doc`` as JSON to ``path`` atomically; nothing is written if it cannot be encoded.

    By default the layout of json_text (records one per line; NaN refused). ``sort_keys`` or ``allow_nan``
    (a training summary may hold a diverged loss, written as ``NaN``) use json.dumps's indented layout."""
    if sort_keys or allow_nan:
        text = json.dumps(doc, indent=indent, default=_default, allow_nan=allow_nan, sort_keys=sort_keys) + "\n"
    else:
        text = json_text(doc, indent)
    write_bytes(path, text.encode("utf-8"))


def write_table(path: str | os.PathLike, frame: pd.DataFrame) -> None:
    """Write a pandas DataFrame as CSV atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def setup_logging(log_path: str | os.PathLike | None = None, level: int = logging.INFO) -> None:
    """Log to ``log_path`` (a rule's log file) and stderr; progress bars (tqdm, on stderr) go there too."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        stream = open(log_path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
        sys.stderr = stream
        handlers = [logging.StreamHandler(stream)]
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s", handlers=handlers, force=True)


def provenance() -> dict:
    """Where and how an output was made: host, time, and the SLURM job (None outside SLURM)."""
    import platform
    import time

    return {
        "host": platform.node(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
