"""Constants shared by the stages."""

# Dataset shapes and class counts live in hetsfl.data.registry (no torch); re-exported here.
from hetsfl.data.registry import DATASET_CLASSES, DATASET_SHAPES

__all__ = ["DATASET_CLASSES", "DATASET_SHAPES", "TRAIN_METHODS"]

# Training method -> (optimisation method whose splits and round latency it uses, engine method).
TRAIN_METHODS = {
    "sfl": ("ao", "sfl"),
    "sfl_fixed": ("fixed_split", "sfl"),
    "sfl_v2": ("ao", "sfl_v2"),
    "fl": ("fl", "fl"),
    "sl": ("sl", "sl"),
}
