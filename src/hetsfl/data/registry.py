"""The datasets the pipeline knows, in one place: name -> input shape, classes, normalisation, file format, where
the usual distributions put the files. Only the standard library: the workflow and the stages read it without
importing torch (the loaders that use it are in :mod:`hetsfl.data.datasets`)."""

from __future__ import annotations

from dataclasses import dataclass

from hetsfl.errors import DataError

__all__ = [
    "DATASETS",
    "DATASET_CLASSES",
    "DATASET_NAMES",
    "DATASET_SHAPES",
    "NORMALIZATION",
    "SYSTEM_DIRS",
    "DatasetInfo",
    "dataset_info",
]


@dataclass(frozen=True)
class DatasetInfo:
    """What the pipeline needs to know about one dataset."""

    shape: tuple[int, int, int]  # (C, H, W) of one image
    num_classes: int
    mean: tuple[float, ...]  # published per-channel mean and std of the training images scaled to [0, 1]
    std: tuple[float, ...]
    file_format: str  # "idx" (hetsfl.data.formats.read_idx) or "cifar" (python pickle batches)
    subdirs: tuple[str, ...]  # sub-directories of data_dir the usual distributions unpack to
    system_dirs: tuple[str, ...]  # system-wide directories holding the files directly (after data_dir)
    torchvision_class: str  # torchvision.datasets class that downloads it


DATASETS: dict[str, DatasetInfo] = {
    "fashion_mnist": DatasetInfo(
        shape=(1, 28, 28), num_classes=10, mean=(0.2860,), std=(0.3530,), file_format="idx",
        subdirs=("fashion-mnist", "FashionMNIST/raw"), system_dirs=("/usr/share/datasets/fashion-mnist",),
        torchvision_class="FashionMNIST",
    ),
    "mnist": DatasetInfo(
        shape=(1, 28, 28), num_classes=10, mean=(0.1307,), std=(0.3081,), file_format="idx",
        subdirs=("mnist", "MNIST/raw"), system_dirs=("/usr/share/datasets/mnist",), torchvision_class="MNIST",
    ),
    "cifar10": DatasetInfo(
        shape=(3, 32, 32), num_classes=10, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
        file_format="cifar", subdirs=("cifar-10-batches-py",), system_dirs=("/usr/share/datasets/cifar10",),
        torchvision_class="CIFAR10",
    ),
}

DATASET_NAMES = tuple(DATASETS)
DATASET_SHAPES: dict[str, tuple[int, int, int]] = {name: d.shape for name, d in DATASETS.items()}
DATASET_CLASSES: dict[str, int] = {name: d.num_classes for name, d in DATASETS.items()}
#: Published per-channel (mean, std) of the training images scaled to [0, 1].
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    name: (d.mean, d.std) for name, d in DATASETS.items()
}
#: System-wide directories searched after ``data_dir`` (a dict, so tests can replace an entry).
SYSTEM_DIRS: dict[str, tuple[str, ...]] = {name: d.system_dirs for name, d in DATASETS.items()}


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry of ``name``; an unknown name raises DataError listing the known ones."""
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise DataError(f"Unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}.") from None
