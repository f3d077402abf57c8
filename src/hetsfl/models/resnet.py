"""ResNet-18, CIFAR style (3x3 stem, no initial max-pool)."""

from __future__ import annotations

import torch
from torch import nn

from hetsfl.models.base import SplittableModel

# (output channels, stride of the first block) for the four stages of two BasicBlocks each.
RESNET18_STAGES: tuple[tuple[int, int], ...] = ((64, 1), (128, 2), (256, 2), (512, 2))


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN layers with an identity (or 1x1 conv + BN) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


def build_resnet18(num_classes: int, input_shape: tuple[int, int, int]) -> SplittableModel:
    """Units stem, layer1_0 .. layer4_1 (8 blocks), head (L = 10)."""
    stem = nn.Sequential(
        nn.Conv2d(input_shape[0], 64, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU()
    )
    units: list[tuple[str, nn.Module]] = [("stem", stem)]
    cin = 64
    for stage, (cout, stride) in enumerate(RESNET18_STAGES, start=1):
        units.append((f"layer{stage}_0", BasicBlock(cin, cout, stride)))
        units.append((f"layer{stage}_1", BasicBlock(cout, cout, 1)))
        cin = cout
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))
    units.append(("head", head))
    return SplittableModel(units, input_shape, num_classes)
