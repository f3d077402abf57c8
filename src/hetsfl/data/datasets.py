"""Image datasets: Fashion-MNIST, MNIST (IDX files) and CIFAR-10 (python pickle batches).

Every loader returns whole splits as in-memory tensors, normalised with fixed published per-channel
mean/std constants. Nothing is cached on disk. Data is looked for in this order:

1. the config's ``data_dir`` (and the sub-directories the usual distributions use),
2. system directories (``SYSTEM_DIRS``; e.g. the Debian package ``dataset-fashion-mnist`` installs
   ``/usr/share/datasets/fashion-mnist``), replaceable with ``search_dirs=`` (used by the tests),
3. only if ``allow_download`` is true: a torchvision download into ``data_dir``.

Missing data and corrupt files raise :class:`hetsfl.errors.DataError` with a message that says which paths
were looked at or which file is broken, and how to fix it.
"""

from __future__ import annotations

import codecs
import gzip
import math
import os
import pickle
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hetsfl.errors import DataError

__all__ = [
    "DATASET_NAMES",
    "NORMALIZATION",
    "SYSTEM_DIRS",
    "ImageDataset",
    "load_dataset",
    "read_idx",
]

DATASET_NAMES = ("fashion_mnist", "mnist", "cifar10")

#: Published per-channel (mean, std) of the training images scaled to [0, 1].
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}

#: System-wide directories that hold the dataset files directly (searched after ``data_dir``).
SYSTEM_DIRS: dict[str, tuple[str, ...]] = {
    "fashion_mnist": ("/usr/share/datasets/fashion-mnist",),
    "mnist": ("/usr/share/datasets/mnist",),
    "cifar10": ("/usr/share/datasets/cifar10",),
}

NUM_CLASSES = 10

# (sub-directories of data_dir searched after data_dir itself, torchvision class name)
_IDX_LAYOUT = {
    "fashion_mnist": (("fashion-mnist", "FashionMNIST/raw"), "FashionMNIST"),
    "mnist": (("mnist", "MNIST/raw"), "MNIST"),
}
_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = "test_batch"

_IDX_DTYPES = {
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

    def subset(self, idx) -> ImageDataset:
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


# ------------------------------------------------------------------------------------------------ IDX files
def _corrupt(path: Path | str, problem: str) -> DataError:
    fix = "Delete this file and download it again (dataset.allow_download: true), or copy a good copy into place."
    if str(path).startswith("/usr/share/"):
        fix = "This is a system copy: reinstall its package (e.g. `sudo apt-get install --reinstall dataset-fashion-mnist`)."
    return DataError(f"Corrupt dataset file {path}: {problem}. {fix}")


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
            raise _corrupt(path, f"not a valid gzip file ({exc})") from exc
    return raw


def read_idx(path) -> np.ndarray:
    """Read an IDX file (plain or gzip) into an array in native byte order.

    Validates the magic number (two zero bytes, a known dtype code, number of dimensions >= 1), that the
    header holds all dimensions and that the data has exactly prod(dims) elements. Anything wrong raises
    :class:`DataError` naming the file.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise _corrupt(path, f"only {len(data)} bytes, too short for an IDX header")
    if data[0] != 0 or data[1] != 0:
        raise _corrupt(path, f"bad IDX magic number 0x{data[:4].hex()} (must start with two zero bytes)")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise _corrupt(path, f"unknown IDX data type code 0x{code:02x}")
    if ndim < 1:
        raise _corrupt(path, "IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise _corrupt(path, f"truncated IDX header ({len(data)} bytes, {ndim} dimensions need {header})")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    count = math.prod(dims)
    expected = header + count * dtype.itemsize
    if len(data) < expected:
        raise _corrupt(path, f"truncated: dimensions {dims} need {expected} bytes, the file has {len(data)}")
    if len(data) > expected:
        raise _corrupt(path, f"wrong size: dimensions {dims} need {expected} bytes, the file has {len(data)}")
    # bytearray makes the result writable (one copy, cheap next to decompression).
    arr = np.frombuffer(bytearray(data[header:]), dtype=dtype, count=count).reshape(dims)
    if dtype.byteorder == ">":
        arr = arr.astype(dtype.newbyteorder("="))
    return arr


# ------------------------------------------------------------------------------------------------ helpers
def _normalise(images_u8: np.ndarray, name: str) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 normalised with the published constants for ``name``."""
    mean, std = NORMALIZATION[name]
    x = torch.from_numpy(np.ascontiguousarray(images_u8, dtype=np.float32))
    for c, (m, s) in enumerate(zip(mean, std, strict=True)):
        x[:, c].sub_(255.0 * m).mul_(1.0 / (255.0 * s))
    return x


def _check_labels(labels: np.ndarray, path: Path | str) -> torch.Tensor:
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= NUM_CLASSES):
        raise _corrupt(
            path, f"labels outside 0..{NUM_CLASSES - 1} (found {int(labels.min())}..{int(labels.max())})"
        )
    return torch.from_numpy(labels.astype(np.int64))


def _dedupe(paths: Sequence[Path]) -> list[Path]:
    seen: set[str] = set()
    out = []
    for p in paths:
        key = os.path.normpath(os.path.abspath(p))
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def _how_to_get(name: str, data_dir: Path) -> str:
    """Bullet lines: the ways to get the data."""
    ways = []
    if name == "fashion_mnist":
        ways.append("install the Debian package: `sudo apt-get install dataset-fashion-mnist`")
    ways.append("set `dataset.allow_download: true` in the config (torchvision downloads into data_dir)")
    if name == "cifar10":
        ways.append(
            f"download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and extract it "
            f"into {data_dir} (giving {data_dir / _CIFAR_DIR}/data_batch_1..5 and test_batch)"
        )
    else:
        files = ", ".join(f"{f}[.gz]" for f in _IDX_FILES.values())
        ways.append(f"copy the four IDX files ({files}) into {data_dir}")
    return "\n".join(f"  - {w}" for w in ways)


# ---------------------------------------------------------------------------------------- IDX datasets
def _find_idx_files(d: Path) -> dict[str, Path] | None:
    """The four IDX files in ``d`` (plain preferred over .gz), or None if any is missing."""
    found = {}
    for key, stem in _IDX_FILES.items():
        for candidate in (d / stem, d / f"{stem}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            return None
    return found


def _idx_candidates(name: str, data_dir: Path, search_dirs: Sequence[Path]) -> list[Path]:
    subdirs, _ = _IDX_LAYOUT[name]
    return _dedupe([data_dir, *(data_dir / s for s in subdirs), *search_dirs])


def _load_idx_split(images_path: Path, labels_path: Path, name: str) -> ImageDataset:
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise _corrupt(
            images_path, f"expected uint8 images of shape (N, 28, 28), got {images.dtype} {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise _corrupt(labels_path, f"expected a 1-D uint8 label file, got {labels.dtype} {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise _corrupt(
            labels_path,
            f"{labels.shape[0]} labels but {images_path.name} has {images.shape[0]} images "
            f"(the two files do not belong together)",
        )
    if images.shape[0] == 0:
        raise _corrupt(images_path, "contains no images")
    y = _check_labels(labels, labels_path)
    x = _normalise(images[:, None, :, :], name)
    return ImageDataset(x=x, y=y, num_classes=NUM_CLASSES, name=name)


def _load_idx_dataset(
    name: str, data_dir: Path, search_dirs: Sequence[Path], allow_download: bool
) -> tuple[ImageDataset, ImageDataset]:
    candidates = _idx_candidates(name, data_dir, search_dirs)
    for d in candidates:
        files = _find_idx_files(d)
        if files is not None:
            return (
                _load_idx_split(files["train_images"], files["train_labels"], name),
                _load_idx_split(files["test_images"], files["test_labels"], name),
            )
    if allow_download:
        _torchvision_download(name, data_dir)
        _, tv_class = _IDX_LAYOUT[name]
        files = _find_idx_files(data_dir / tv_class / "raw")
        if files is not None:
            return (
                _load_idx_split(files["train_images"], files["train_labels"], name),
                _load_idx_split(files["test_images"], files["test_labels"], name),
            )
    raise _missing(name, data_dir, candidates, [f"{f}[.gz]" for f in _IDX_FILES.values()], allow_download)


def _missing(
    name: str, data_dir: Path, candidates: list[Path], files: list[str], tried_download: bool
) -> DataError:
    lines = []
    for d in candidates:
        if not d.is_dir():
            note = "directory does not exist"
        else:
            absent = [f for f in files if not any((d / g).is_file() for g in _variants(f))]
            note = "missing " + ", ".join(absent)
        lines.append(f"  - {d}/  ({note})")
    download = (
        "A torchvision download was tried and did not produce the files."
        if tried_download
        else "Downloading is off (dataset.allow_download: false)."
    )
    return DataError(
        f"Dataset {name!r} not found. Looked for {', '.join(files)} in:\n" + "\n".join(lines) + "\n"
        f"{download}\nTo get it, any of:\n{_how_to_get(name, data_dir)}"
    )


def _variants(pattern: str) -> tuple[str, ...]:
    """'name[.gz]' -> ('name', 'name.gz'); other names -> (name,)."""
    if pattern.endswith("[.gz]"):
        stem = pattern[: -len("[.gz]")]
        return stem, f"{stem}.gz"
    return (pattern,)


def _torchvision_download(name: str, data_dir: Path) -> None:
    try:
        import torchvision.datasets as tvd

        cls = {"fashion_mnist": tvd.FashionMNIST, "mnist": tvd.MNIST, "cifar10": tvd.CIFAR10}[name]
        data_dir.mkdir(parents=True, exist_ok=True)
        cls(root=str(data_dir), train=True, download=True)
        cls(root=str(data_dir), train=False, download=True)
    except Exception as exc:  # network, disk, checksum: all become a user-facing error
        raise DataError(
            f"Downloading dataset {name!r} into {data_dir} with torchvision failed: {type(exc).__name__}: {exc}. "
            f"Check the network connection, or get the data without downloading, any of:\n"
            f"{_how_to_get(name, data_dir)}"
        ) from exc


# --------------------------------------------------------------------------------------------- CIFAR-10
_ALLOWED_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): np._core.multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): np._core.multiarray.scalar,
    ("numpy.core.numeric", "_frombuffer"): np._core.numeric._frombuffer,
    ("numpy._core.numeric", "_frombuffer"): np._core.numeric._frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # protocols 0-2 store array bytes as latin-1 text
}


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only (a data file must not run code)."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name}") from None


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch -> (uint8 (n, 3, 32, 32), int64 (n,))."""
    try:
        with open(path, "rb") as fh:
            obj = _SafeUnpickler(fh, encoding="latin1").load()
    except OSError as exc:
        raise DataError(
            f"Cannot read dataset file {path}: {exc}. Check that it exists and is readable."
        ) from exc
    except Exception as exc:  # UnpicklingError, EOFError, ValueError, ...: all mean a broken file
        raise _corrupt(path, f"not a readable CIFAR-10 pickle batch ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict):
        raise _corrupt(path, f"expected a dict, got {type(obj).__name__}")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    missing = [k for k in ("data", "labels") if k not in batch]
    if missing:
        raise _corrupt(path, f"missing key(s) {missing}; has {sorted(map(str, batch))}")
    data, labels = batch["data"], batch["labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise _corrupt(path, f"'data' must be a uint8 array of shape (n, 3072), got {desc}")
    try:
        labels_arr = np.asarray(labels)
    except Exception:  # ragged or odd objects
        labels_arr = np.asarray([], dtype=object)
    if labels_arr.ndim != 1 or labels_arr.dtype.kind not in "iu":
        raise _corrupt(path, "'labels' must be a flat list of integers")
    if labels_arr.shape[0] != data.shape[0]:
        raise _corrupt(path, f"{labels_arr.shape[0]} labels but {data.shape[0]} images")
    if data.shape[0] == 0:
        raise _corrupt(path, "contains no images")
    if int(labels_arr.min()) < 0 or int(labels_arr.max()) >= NUM_CLASSES:
        raise _corrupt(path, f"labels outside 0..{NUM_CLASSES - 1}")
    return data.reshape(-1, 3, 32, 32), labels_arr.astype(np.int64)


def _cifar_candidates(data_dir: Path, search_dirs: Sequence[Path]) -> list[Path]:
    out: list[Path] = [data_dir / _CIFAR_DIR]
    for d in search_dirs:
        out += [d, d / _CIFAR_DIR]
    return _dedupe(out)


def _cifar_complete(d: Path) -> bool:
    return all((d / f).is_file() for f in (*_CIFAR_TRAIN, _CIFAR_TEST))


def _load_cifar_dir(d: Path) -> tuple[ImageDataset, ImageDataset]:
    parts = [_read_cifar_batch(d / f) for f in _CIFAR_TRAIN]
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    test_x, test_y = _read_cifar_batch(d / _CIFAR_TEST)
    train = ImageDataset(_normalise(train_x, "cifar10"), torch.from_numpy(train_y), NUM_CLASSES, "cifar10")
    test = ImageDataset(_normalise(test_x, "cifar10"), torch.from_numpy(test_y), NUM_CLASSES, "cifar10")
    return train, test


def _load_cifar10(
    data_dir: Path, search_dirs: Sequence[Path], allow_download: bool
) -> tuple[ImageDataset, ImageDataset]:
    candidates = _cifar_candidates(data_dir, search_dirs)
    for d in candidates:
        if _cifar_complete(d):
            return _load_cifar_dir(d)
    if allow_download:
        _torchvision_download("cifar10", data_dir)
        if _cifar_complete(data_dir / _CIFAR_DIR):
            return _load_cifar_dir(data_dir / _CIFAR_DIR)
    raise _missing("cifar10", data_dir, candidates, [*_CIFAR_TRAIN, _CIFAR_TEST], allow_download)


# ---------------------------------------------------------------------------------------------- entry point
def load_dataset(
    name: str,
    data_dir: str | os.PathLike = "data",
    allow_download: bool = False,
    *,
    search_dirs: Sequence[str | os.PathLike] | None = None,
) -> tuple[ImageDataset, ImageDataset]:
    """Load ``(train, test)`` for ``name`` (one of :data:`DATASET_NAMES`).

    ``search_dirs`` replaces the system directories (``SYSTEM_DIRS[name]``) searched after ``data_dir``;
    each holds the files directly (for CIFAR-10 also ``<dir>/cifar-10-batches-py``).
    """
    if name not in DATASET_NAMES:
        raise DataError(f"Unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}.")
    data_dir = Path(data_dir)
    dirs = [Path(d) for d in (SYSTEM_DIRS.get(name, ()) if search_dirs is None else search_dirs)]
    if name == "cifar10":
        return _load_cifar10(data_dir, dirs, allow_download)
    return _load_idx_dataset(name, data_dir, dirs, allow_download)
