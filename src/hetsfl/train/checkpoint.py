"""Checkpoints of a training run: what identifies the run (spec and data fingerprint), saving, and loading
only a checkpoint that belongs to the same run.

A checkpoint (``checkpoint.pt`` in the run's out_dir) holds the format number, the spec, the data
fingerprint, the rounds done, the global model, the method's own state (SL's optimisers) and the rows of
metrics, timing and bits so far. It is written atomically (temporary file, then rename).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hetsfl.data.formats import ImageDataset
from hetsfl.errors import HetsflError
from hetsfl.io import write_bytes
from hetsfl.train.spec import TrainSpec

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAME",
    "cpu_state",
    "data_fingerprint",
    "load_checkpoint",
    "partitions_sha256",
    "save_checkpoint",
    "torch_save",
]

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = 1
# Fields that may differ between a checkpoint and the spec that resumes it (they do not change the numbers).
_RESUME_FREE_FIELDS = ("rounds", "checkpoint_every")


def torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` atomically."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes(path, buf.getvalue())


def cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the module's state_dict with every tensor on the CPU."""
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def partitions_sha256(parts: Sequence[np.ndarray]) -> hashlib._Hash:
    """A sha256 fed with each partition in turn (its length, then its indices as int64); more may follow."""
    h = hashlib.sha256()
    for p in parts:
        arr = np.ascontiguousarray(np.asarray(p, dtype=np.int64))
        h.update(len(arr).to_bytes(8, "little"))
        h.update(arr.tobytes())
    return h


def data_fingerprint(train: ImageDataset, test: ImageDataset, parts: Sequence[np.ndarray]) -> dict[str, Any]:
    """What identifies the data of a run: names and sizes of the splits, a hash of partitions and labels."""
    h = partitions_sha256(parts)
    for ds in (train, test):
        h.update(np.ascontiguousarray(ds.y.cpu().numpy(), dtype=np.int64).tobytes())
    return {
        "train": [getattr(train, "name", ""), len(train), list(train.x.shape[1:])],
        "test": [getattr(test, "name", ""), len(test), list(test.x.shape[1:])],
        "partitions_labels_sha256": h.hexdigest(),
    }


def _comparable(spec_dict: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec_dict.items() if k not in _RESUME_FREE_FIELDS}


def save_checkpoint(
    path: Path,
    spec: TrainSpec,
    fingerprint: dict[str, Any],
    done: int,
    model: torch.nn.Module,
    method_state: dict[str, Any],
    metrics: list[dict],
    timing: list[dict],
    bits: list[dict],
) -> None:
    """Write the checkpoint after round ``done`` (1-based) to ``path``."""
    torch_save(
        {
            "format": CHECKPOINT_FORMAT,
            "spec": spec.to_dict(),
            "data": fingerprint,
            "round": done,
            "model": cpu_state(model),
            "method_state": method_state,
            "metrics": metrics,
            "timing": timing,
            "bits": bits,
        },
        path,
    )


def load_checkpoint(
    path: Path, spec: TrainSpec, fingerprint: dict[str, Any], device: torch.device
) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if there is one (None otherwise). One of another run (other spec or data)
    or beyond ``spec.rounds`` raises HetsflError saying to delete it."""
    if not path.exists():
        return None
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:
        raise HetsflError(
            f"cannot read checkpoint {path} ({type(exc).__name__}: {exc}); delete it to start over"
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise HetsflError(f"checkpoint {path} has an unknown format; delete it to start over")
    old, new = _comparable(ckpt["spec"]), _comparable(spec.to_dict())
    if old != new or ckpt["data"] != fingerprint:
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        what = f"spec fields {diff}" if diff else "the data or partition"
        raise HetsflError(
            f"checkpoint {path} belongs to a different training run ({what} differ). Delete the checkpoint to "
            f"start over, or use another out_dir."
        )
    if ckpt["round"] > spec.rounds:
        raise HetsflError(
            f"checkpoint {path} is at round {ckpt['round']}, beyond the requested {spec.rounds} rounds. Delete "
            f"it or use another out_dir."
        )
    return ckpt
