"""Dataset file formats and the in-memory dataset: IDX files (MNIST, Fashion-MNIST), CIFAR-10 python pickle
batches (unpickled safely: plain containers and numpy arrays only), :class:`ImageDataset`.

Every reader validates what it reads; a broken file raises :class:`hetsfl.errors.DataError` naming the file and
saying how to fix it. Where the files are and which dataset they are: :mod:`hetsfl.data.datasets`.
"""

from __future__ import annotations

import codecs
import gzip
import math
import os
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy._core import multiarray as _multiarray  # numpy's own pickles name these
from numpy._core import numeric as _numeric

from hetsfl.errors import DataError

__all__ = ["CIFAR_SHAPE", "ImageDataset", "check_labels", "corrupt", "normalise", "read_cifar_batch", "read_idx"]

#: One CIFAR-10 python batch row is a (C, H, W) image of this shape, flattened.
CIFAR_SHAPE = (3, 32, 32)

_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


# --------------------------------------------------------------------------------------------- dataset type
@dataclass(frozen=True, eq=False)
class ImageDataset:
    """A whole split in memory: ``x`` float32 (N, C, H, W) normalised, ``y`` int64 (N,)."""

    x: torch.Tensor
    y: torch.Tensor
    num_classes: int
    name: str

    def __post_init__(self) -> None:
        if self.x.dim() != 4 or self.x.dtype != torch.float32:
            raise ValueError(
                f"ImageDataset.x must be float32 (N, C, H, W), got {self.x.dtype} {tuple(self.x.shape)}"
            )
        if self.y.dim() != 1 or self.y.dtype != torch.int64:
            raise ValueError(f"ImageDataset.y must be int64 (N,), got {self.y.dtype} {tuple(self.y.shape)}")
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"ImageDataset has {self.x.shape[0]} images but {self.y.shape[0]} labels")
        if self.num_classes < 1:
            raise ValueError(f"ImageDataset.num_classes must be >= 1, got {self.num_classes}")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __repr__(self) -> str:
        return (
            f"ImageDataset(name={self.name!r}, n={len(self)}, shape={tuple(self.x.shape[1:])}, "
            f"num_classes={self.num_classes})"
        )

    def subset(self, idx: Any) -> ImageDataset:
        """The samples at ``idx`` (integer indices: array, tensor, list or range), in that order."""
        if isinstance(idx, torch.Tensor):
            index = idx.to(dtype=torch.int64, device="cpu").reshape(-1)
        else:
            arr = np.asarray(idx)
            if arr.size == 0:
                arr = arr.astype(np.int64)
            if arr.dtype.kind not in "iu":
                raise ValueError(f"subset indices must be integers, got dtype {arr.dtype}")
            index = torch.from_numpy(np.ascontiguousarray(arr.reshape(-1), dtype=np.int64))
        n = len(self)
        if index.numel() and (int(index.min()) < -n or int(index.max()) >= n):
            raise ValueError(f"subset indices out of range for a dataset of {n} samples")
        return ImageDataset(x=self.x[index], y=self.y[index], num_classes=self.num_classes, name=self.name)


# ------------------------------------------------------------------------------------------- errors, helpers
def corrupt(path: Path | str, problem: str) -> DataError:
    """The error for a broken dataset file: what is wrong, and how to get a good copy."""
    fix = "Delete this file and download it again (dataset.allow_download: true), or copy a good copy into place."
    if str(path).startswith("/usr/share/"):
        fix = "This is a system copy: reinstall its package (e.g. `sudo apt-get install --reinstall dataset-fashion-mnist`)."
    return DataError(f"Corrupt dataset file {path}: {problem}. {fix}")


def normalise(images_u8: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32, channel c scaled to [0, 1] then normalised with ``mean[c]``, ``std[c]``."""
    x = torch.from_numpy(np.ascontiguousarray(images_u8, dtype=np.float32))
    for c, (m, s) in enumerate(zip(mean, std, strict=True)):
        x[:, c].sub_(255.0 * m).mul_(1.0 / (255.0 * s))
    return x


def check_labels(labels: np.ndarray, num_classes: int, path: Path | str) -> torch.Tensor:
    """Labels as an int64 tensor; a label outside 0..num_classes-1 means the file ``path`` is corrupt."""
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise corrupt(
            path, f"labels outside 0..{num_classes - 1} (found {int(labels.min())}..{int(labels.max())})"
        )
    return torch.from_numpy(labels.astype(np.int64))


# ------------------------------------------------------------------------------------------------ IDX files
def _read_bytes(path: Path) -> bytes:
    """The file's content, gunzipped if it is gzip (by name or by its magic bytes)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(
            f"Cannot read dataset file {path}: {exc}. Check that it exists and is readable."
        ) from exc
    if path.suffix == ".gz" or raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise corrupt(path, f"not a valid gzip file ({exc})") from exc
    return raw


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (plain or gzip) into an array in native byte order.

    Validates the magic number (two zero bytes, a known dtype code, number of dimensions >= 1), that the
    header holds all dimensions and that the data has exactly prod(dims) elements. Anything wrong raises
    :class:`DataError` naming the file.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise corrupt(path, f"only {len(data)} bytes, too short for an IDX header")
    if data[0] != 0 or data[1] != 0:
        raise corrupt(path, f"bad IDX magic number 0x{data[:4].hex()} (must start with two zero bytes)")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise corrupt(path, f"unknown IDX data type code 0x{code:02x}")
    if ndim < 1:
        raise corrupt(path, "IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise corrupt(path, f"truncated IDX header ({len(data)} bytes, {ndim} dimensions need {header})")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    count = math.prod(dims)
    expected = header + count * dtype.itemsize
    if len(data) < expected:
        raise corrupt(path, f"truncated: dimensions {dims} need {expected} bytes, the file has {len(data)}")
    if len(data) > expected:
        raise corrupt(path, f"wrong size: dimensions {dims} need {expected} bytes, the file has {len(data)}")
    # bytearray makes the result writable (one copy, cheap next to decompression).
    arr = np.frombuffer(bytearray(data[header:]), dtype=dtype, count=count).reshape(dims)
    if dtype.byteorder == ">":
        arr = arr.astype(dtype.newbyteorder("="))
    return arr



# ------------------------------------------------------------------------------------ CIFAR-10 pickle batches
_ALLOWED_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy.core.numeric", "_frombuffer"): _numeric._frombuffer,  # type: ignore[attr-defined]  # private, not in the stubs
    ("numpy._core.numeric", "_frombuffer"): _numeric._frombuffer,  # type: ignore[attr-defined]  # private, not in the stubs
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # protocols 0-2 store array bytes as latin-1 text
}


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only (a data file must not run code)."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name}") from None


def read_cifar_batch(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch -> (uint8 (n, 3, 32, 32), int64 (n,)), labels in 0..num_classes-1."""
    try:
        with open(path, "rb") as fh:
            obj = _SafeUnpickler(fh, encoding="latin1").load()
    except OSError as exc:
        raise DataError(
            f"Cannot read dataset file {path}: {exc}. Check that it exists and is readable."
        ) from exc
    except Exception as exc:  # UnpicklingError, EOFError, ValueError, ...: all mean a broken file
        raise corrupt(path, f"not a readable CIFAR-10 pickle batch ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict):
        raise corrupt(path, f"expected a dict, got {type(obj).__name__}")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    missing = [k for k in ("data", "labels") if k not in batch]
    if missing:
        raise corrupt(path, f"missing key(s) {missing}; has {sorted(map(str, batch))}")
    data, labels = batch["data"], batch["labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != math.prod(CIFAR_SHAPE):
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise corrupt(path, f"'data' must be a uint8 array of shape (n, 3072), got {desc}")
    try:
        labels_arr = np.asarray(labels)
    except Exception:  # ragged or odd objects
        labels_arr = np.asarray([], dtype=object)
    if labels_arr.ndim != 1 or labels_arr.dtype.kind not in "iu":
        raise corrupt(path, "'labels' must be a flat list of integers")
    if labels_arr.shape[0] != data.shape[0]:
        raise corrupt(path, f"{labels_arr.shape[0]} labels but {data.shape[0]} images")
    if data.shape[0] == 0:
        raise corrupt(path, "contains no images")
    if int(labels_arr.min()) < 0 or int(labels_arr.max()) >= num_classes:
        raise corrupt(path, f"labels outside 0..{num_classes - 1}")
    return data.reshape(-1, *CIFAR_SHAPE), labels_arr.astype(np.int64)
