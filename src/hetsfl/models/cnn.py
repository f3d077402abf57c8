"""A small CNN (two conv layers, two fully connected layers) for 28x28 grayscale images."""

from __future__ import annotations

from torch import nn

from hetsfl.models.base import SplittableModel


def _pooled(size: int, times: int) -> int:
    """Spatial size after `times` 2x2 max-pools (floor)."""
    for _ in range(times):
        size //= 2
    return size


def cnn_flatten_size(input_shape: tuple[int, int, int]) -> int:
    """Number of features entering fc1 (64 channels after two size-preserving convs and two pools)."""
    _, height, width = input_shape
    h, w = _pooled(height, 2), _pooled(width, 2)
    if h < 1 or w < 1:
        raise ValueError(f"cnn needs inputs of at least 4x4 pixels, got input_shape={tuple(input_shape)}")
    return 64 * h * w


def build_cnn(num_classes: int, input_shape: tuple[int, int, int]) -> SplittableModel:
    """Units conv1, pool1, conv2, pool2, fc1, fc2 (L = 6)."""
    channels = input_shape[0]
    units = [
        ("conv1", nn.Sequential(nn.Conv2d(channels, 32, kernel_size=5, padding=2), nn.ReLU())),
        ("pool1", nn.Sequential(nn.MaxPool2d(2))),
        ("conv2", nn.Sequential(nn.Conv2d(32, 64, kernel_size=5, padding=2), nn.ReLU())),
        ("pool2", nn.Sequential(nn.MaxPool2d(2))),
        ("fc1", nn.Sequential(nn.Flatten(), nn.Linear(cnn_flatten_size(input_shape), 512), nn.ReLU())),
        ("fc2", nn.Sequential(nn.Linear(512, num_classes))),
    ]
    return SplittableModel(units, input_shape, num_classes)
