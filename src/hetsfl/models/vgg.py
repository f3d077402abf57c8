"""VGG-16 with batch norm, CIFAR style (32x32 inputs, small classifier)."""

from __future__ import annotations

from torch import nn

from hetsfl.models.base import SplittableModel

# Output channels of the conv layers in each of the 5 stages; each stage ends with a 2x2 max-pool.
VGG16_STAGES: tuple[tuple[int, ...], ...] = (
    (64, 64),
    (128, 128),
    (256, 256, 256),
    (512, 512, 512),
    (512, 512, 512),
)


def _conv_unit(cin: int, cout: int, pool: bool) -> nn.Sequential:
    """Conv3x3 + BatchNorm + ReLU, followed by a 2x2 max-pool if `pool`."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel_size=3, padding=1),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


def vgg_flatten_size(input_shape: tuple[int, int, int]) -> int:
    """Features entering fc1: 512 x (H / 32) x (W / 32)."""
    _, height, width = input_shape
    h, w = height >> len(VGG16_STAGES), width >> len(VGG16_STAGES)
    if h < 1 or w < 1:
        raise ValueError(f"vgg16 needs inputs of at least 32x32 pixels, got input_shape={tuple(input_shape)}")
    return VGG16_STAGES[-1][-1] * h * w


def build_vgg16(num_classes: int, input_shape: tuple[int, int, int]) -> SplittableModel:
    """Units conv1_1..conv5_3 (13), fc1, fc2 (L = 15)."""
    units: list[tuple[str, nn.Module]] = []
    cin = input_shape[0]
    for stage, widths in enumerate(VGG16_STAGES, start=1):
        for i, cout in enumerate(widths, start=1):
            units.append((f"conv{stage}_{i}", _conv_unit(cin, cout, pool=i == len(widths))))
            cin = cout
    units.append(
        ("fc1", nn.Sequential(nn.Flatten(), nn.Linear(vgg_flatten_size(input_shape), 512), nn.ReLU()))
    )
    units.append(("fc2", nn.Sequential(nn.Linear(512, num_classes))))
    return SplittableModel(units, input_shape, num_classes)
