"""Datasets and their partitioning over devices.

- :mod:`~hetsfl.data.registry`: the known datasets (shape, classes, normalisation, format); no torch;
- :mod:`~hetsfl.data.formats`: the file formats (IDX, CIFAR-10 pickle batches) and :class:`ImageDataset`;
- :mod:`~hetsfl.data.datasets`: finding the files and :func:`load_dataset`;
- :mod:`~hetsfl.data.partition`: splitting the training set over devices (iid, shards, Dirichlet).

The torch parts (``ImageDataset``, ``load_dataset``, ``read_idx``) are imported on first use, so reading the
registry (the workflow and the stages do) does not import torch.
"""

from __future__ import annotations

from typing import Any

from hetsfl.data.partition import SCHEMES, dirichlet, iid, make_partition, partition_summary, shards
from hetsfl.data.registry import (
    DATASET_CLASSES,
    DATASET_NAMES,
    DATASET_SHAPES,
    DATASETS,
    DatasetInfo,
    dataset_info,
)

__all__ = [
    "DATASETS",
    "DATASET_CLASSES",
    "DATASET_NAMES",
    "DATASET_SHAPES",
    "SCHEMES",
    "DatasetInfo",
    "ImageDataset",
    "dataset_info",
    "dirichlet",
    "iid",
    "load_dataset",
    "make_partition",
    "partition_summary",
    "read_idx",
    "shards",
]


def __getattr__(name: str) -> Any:
    if name in ("ImageDataset", "read_idx"):
        from hetsfl.data import formats

        return getattr(formats, name)
    if name == "load_dataset":
        from hetsfl.data.datasets import load_dataset

        return load_dataset
    raise AttributeError(f"module 'hetsfl.data' has no attribute {name!r}")
