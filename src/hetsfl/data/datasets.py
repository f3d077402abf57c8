"""Finding and loading the datasets of :mod:`hetsfl.data.registry` (Fashion-MNIST, MNIST, CIFAR-10).

Every loader returns whole splits as in-memory tensors, normalised with the registry's published per-channel
mean/std constants. Nothing is cached on disk. Data is looked for in this order:

1. the config's ``data_dir`` (and the sub-directories the usual distributions use),
2. system directories (``SYSTEM_DIRS``; e.g. the Debian package ``dataset-fashion-mnist`` installs
   ``/usr/share/datasets/fashion-mnist``), replaceable with ``search_dirs=`` (used by the tests),
3. only if ``allow_download`` is true: a torchvision download into ``data_dir``.

Missing data and corrupt files raise :class:`hetsfl.errors.DataError` with a message that says which paths
were looked at or which file is broken, and how to fix it. The file formats: :mod:`hetsfl.data.formats`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from hetsfl.data.formats import ImageDataset, check_labels, corrupt, normalise, read_cifar_batch, read_idx
from hetsfl.data.registry import (
    DATASET_NAMES,
    NORMALIZATION,
    SYSTEM_DIRS,
    DatasetInfo,
    dataset_info,
)
from hetsfl.errors import DataError

__all__ = [
    "DATASET_NAMES",
    "NORMALIZATION",
    "SYSTEM_DIRS",
    "ImageDataset",
    "load_dataset",
    "read_idx",
]

_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = "test_batch"

Splits = tuple[ImageDataset, ImageDataset]


# ---------------------------------------------------------------------------------------------- entry point
def load_dataset(
    name: str,
    data_dir: str | os.PathLike = "data",
    allow_download: bool = False,
    *,
    search_dirs: Sequence[str | os.PathLike] | None = None,
) -> Splits:
    """Load ``(train, test)`` for ``name`` (one of :data:`DATASET_NAMES`).

    ``search_dirs`` replaces the system directories (``SYSTEM_DIRS[name]``) searched after ``data_dir``;
    each holds the files directly (for CIFAR-10 also ``<dir>/cifar-10-batches-py``).
    """
    info = dataset_info(name)
    dirs = [Path(d) for d in (SYSTEM_DIRS.get(name, ()) if search_dirs is None else search_dirs)]
    return _LOADERS[info.file_format](name, info, Path(data_dir), dirs, allow_download)


# ------------------------------------------------------------------------------------------------ helpers
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
    if dataset_info(name).file_format == "cifar":
        ways.append(
            f"download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and extract it "
            f"into {data_dir} (giving {data_dir / dataset_info(name).subdirs[0]}/data_batch_1..5 and test_batch)"
        )
    else:
        files = ", ".join(f"{f}[.gz]" for f in _IDX_FILES.values())
        ways.append(f"copy the four IDX files ({files}) into {data_dir}")
    return "\n".join(f"  - {w}" for w in ways)


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

        cls = getattr(tvd, dataset_info(name).torchvision_class)
        data_dir.mkdir(parents=True, exist_ok=True)
        cls(root=str(data_dir), train=True, download=True)
        cls(root=str(data_dir), train=False, download=True)
    except Exception as exc:  # network, disk, checksum: all become a user-facing error
        raise DataError(
            f"Downloading dataset {name!r} into {data_dir} with torchvision failed: {type(exc).__name__}: {exc}. "
            f"Check the network connection, or get the data without downloading, any of:\n"
            f"{_how_to_get(name, data_dir)}"
        ) from exc


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


def _load_idx_split(images_path: Path, labels_path: Path, name: str, info: DatasetInfo) -> ImageDataset:
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    channels, height, width = info.shape
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (height, width):
        raise corrupt(
            images_path,
            f"expected uint8 images of shape (N, {height}, {width}), got {images.dtype} {images.shape}",
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise corrupt(labels_path, f"expected a 1-D uint8 label file, got {labels.dtype} {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise corrupt(
            labels_path,
            f"{labels.shape[0]} labels but {images_path.name} has {images.shape[0]} images "
            f"(the two files do not belong together)",
        )
    if images.shape[0] == 0:
        raise corrupt(images_path, "contains no images")
    y = check_labels(labels, info.num_classes, labels_path)
    x = normalise(images[:, None, :, :], info.mean, info.std)
    return ImageDataset(x=x, y=y, num_classes=info.num_classes, name=name)


def _idx_splits(files: dict[str, Path], name: str, info: DatasetInfo) -> Splits:
    return (
        _load_idx_split(files["train_images"], files["train_labels"], name, info),
        _load_idx_split(files["test_images"], files["test_labels"], name, info),
    )


def _load_idx_dataset(
    name: str, info: DatasetInfo, data_dir: Path, search_dirs: Sequence[Path], allow_download: bool
) -> Splits:
    candidates = _dedupe([data_dir, *(data_dir / s for s in info.subdirs), *search_dirs])
    for d in candidates:
        files = _find_idx_files(d)
        if files is not None:
            return _idx_splits(files, name, info)
    if allow_download:
        _torchvision_download(name, data_dir)
        files = _find_idx_files(data_dir / info.torchvision_class / "raw")
        if files is not None:
            return _idx_splits(files, name, info)
    raise _missing(name, data_dir, candidates, [f"{f}[.gz]" for f in _IDX_FILES.values()], allow_download)


# --------------------------------------------------------------------------------------------- CIFAR-10
def _cifar_complete(d: Path) -> bool:
    return all((d / f).is_file() for f in (*_CIFAR_TRAIN, _CIFAR_TEST))


def _load_cifar_dir(d: Path, name: str, info: DatasetInfo) -> Splits:
    parts = [read_cifar_batch(d / f, info.num_classes) for f in _CIFAR_TRAIN]
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    test_x, test_y = read_cifar_batch(d / _CIFAR_TEST, info.num_classes)
    train = ImageDataset(normalise(train_x, info.mean, info.std), torch.from_numpy(train_y), info.num_classes, name)
    test = ImageDataset(normalise(test_x, info.mean, info.std), torch.from_numpy(test_y), info.num_classes, name)
    return train, test


def _load_cifar_dataset(
    name: str, info: DatasetInfo, data_dir: Path, search_dirs: Sequence[Path], allow_download: bool
) -> Splits:
    candidates: list[Path] = [data_dir / s for s in info.subdirs]
    for d in search_dirs:
        candidates += [d, *(d / s for s in info.subdirs)]
    candidates = _dedupe(candidates)
    for d in candidates:
        if _cifar_complete(d):
            return _load_cifar_dir(d, name, info)
    if allow_download:
        _torchvision_download(name, data_dir)
        if _cifar_complete(data_dir / info.subdirs[0]):
            return _load_cifar_dir(data_dir / info.subdirs[0], name, info)
    raise _missing(name, data_dir, candidates, [*_CIFAR_TRAIN, _CIFAR_TEST], allow_download)


# File format (DatasetInfo.file_format) -> loader(name, info, data_dir, search_dirs, allow_download).
_LOADERS: dict[str, Callable[[str, DatasetInfo, Path, Sequence[Path], bool], Splits]] = {
    "idx": _load_idx_dataset,
    "cifar": _load_cifar_dataset,
}
