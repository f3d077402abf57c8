"""Datasets (Fashion-MNIST, MNIST, CIFAR-10) and their partitioning over devices."""

from hetsfl.data.datasets import DATASET_NAMES, ImageDataset, load_dataset, read_idx
from hetsfl.data.partition import SCHEMES, dirichlet, iid, make_partition, partition_summary, shards

__all__ = [
    "DATASET_NAMES",
    "SCHEMES",
    "ImageDataset",
    "dirichlet",
    "iid",
    "load_dataset",
    "make_partition",
    "partition_summary",
    "read_idx",
    "shards",
]
