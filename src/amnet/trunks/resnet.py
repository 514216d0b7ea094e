"""Plain-PyTorch ResNet with torchvision's parameter layout (no torchvision needed).

Only modules live here; weights are loaded by :mod:`amnet.trunks.registry`.
"""

from __future__ import annotations

import torch
from torch import nn


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride on the 3x3 conv), as in torchvision."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ImageNet ResNet. ``forward_features(x, stop="layer3")`` returns the stride-16 map."""

    def __init__(self, layers: tuple[int, int, int, int], num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_ch = 64
        for i, (n, width) in enumerate(zip(layers, (64, 128, 256, 512), strict=True)):
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(n):
                blocks.append(Bottleneck(in_ch, width, stride if j == 0 else 1))
                in_ch = width * Bottleneck.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(512 * Bottleneck.expansion, num_classes)

    def forward_features(self, x: torch.Tensor, stop: str = "layer4") -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64, H/4, W/4)
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(self, name)(x)  # layer3: (B, 1024, H/16, W/16)
            if name == stop:
                break
        return x

    def truncate(self, stop: str) -> None:
        """Drop everything after ``stop`` (the classifier no longer works afterwards)."""
        names = ["layer1", "layer2", "layer3", "layer4"]
        for name in names[names.index(stop) + 1 :]:
            setattr(self, name, nn.Identity())
        self.fc = nn.Identity()

    def tail(self) -> nn.Module:
        """The layers after the layer3 cut, as their own module (shares their weights)."""
        return ResNetTail(self.layer4, self.fc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)  # (B, 2048, H/32, W/32)
        return self.fc(x.mean(dim=(2, 3)))  # (B, num_classes)


class ResNetTail(nn.Module):
    """layer4 and the ImageNet classifier: layer3 map (B, 1024, H, W) -> (layer4 map
    (B, 2048, H/2, W/2), logits (B, 1000))."""

    def __init__(self, layer4: nn.Module, fc: nn.Linear) -> None:
        super().__init__()
        self.layer4, self.fc = layer4, fc

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.layer4(x)  # (B, 2048, H/2, W/2)
        return y, self.fc(y.mean(dim=(2, 3)))  # (B, 1000)


def resnet50() -> ResNet:
    return ResNet((3, 4, 6, 3))


def resnet152() -> ResNet:
    return ResNet((3, 8, 36, 3))
