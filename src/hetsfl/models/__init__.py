"""Splittable model definitions: build a model by name."""

from __future__ import annotations

import operator
from collections.abc import Callable

from hetsfl.data.registry import DATASET_SHAPES
from hetsfl.models.base import SplittableModel
from hetsfl.models.cnn import build_cnn
from hetsfl.models.resnet import build_resnet18
from hetsfl.models.vgg import build_vgg16

MODEL_NAMES = ("cnn", "vgg16", "resnet18")

_BUILDERS: dict[str, Callable[[int, tuple[int, int, int]], SplittableModel]] = {
    "cnn": build_cnn,
    "vgg16": build_vgg16,
    "resnet18": build_resnet18,
}
# The dataset each model is meant for; its input shape is the model's default (hetsfl.data.registry).
_DEFAULT_DATASETS = {"cnn": "fashion_mnist", "vgg16": "cifar10", "resnet18": "cifar10"}

__all__ = ["MODEL_NAMES", "SplittableModel", "build_model", "default_input_shape"]


def _check_name(name: str) -> str:
    """Return name if it is a known model, else raise ValueError listing MODEL_NAMES."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    return name


def _check_shape(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Return input_shape as a (C, H, W) tuple of positive ints, else raise ValueError."""
    try:
        shape = tuple(operator.index(d) for d in input_shape if not isinstance(d, bool))
    except TypeError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be (C, H, W) with positive integers, got {input_shape!r}")
    return shape


def default_input_shape(name: str) -> tuple[int, int, int]:
    """(C, H, W) of the dataset the model is meant for: Fashion-MNIST's (1, 28, 28) for cnn, CIFAR-10's
    (3, 32, 32) for vgg16 and resnet18."""
    return DATASET_SHAPES[_DEFAULT_DATASETS[_check_name(name)]]


def build_model(
    name: str, num_classes: int = 10, input_shape: tuple[int, int, int] | None = None
) -> SplittableModel:
    """Build model `name`; weights come from torch's global RNG, so torch.manual_seed makes it repeatable."""
    _check_name(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    shape = default_input_shape(name) if input_shape is None else _check_shape(input_shape)
    return _BUILDERS[name](num_classes, shape)
