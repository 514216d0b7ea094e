"""Shared fixtures: a tiny deterministic trunk, a tiny head, checkpoints and real sample paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from amnet.checkpoint import save_checkpoint
from amnet.model.head import AMNetConfig, AMNetHead
from amnet.trunks.registry import Preprocess, TrunkSpec, get_trunk_spec, register_trunk

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
LNSIM = SHARED / "lnsim"
LAMEM_SPLITS = SHARED / "lamem-splits" / "splits"
TINY_CHANNELS = 16


class TinyNet(nn.Module):
    """(B, 3, 224, 224) -> (B, 16, 14, 14); seeded init so every build is identical."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.random.fork_rng()
        with g:
            torch.manual_seed(0)
            self.conv1 = nn.Conv2d(3, 8, 4, stride=4)
            self.bn = nn.BatchNorm2d(8)
            self.conv2 = nn.Conv2d(8, TINY_CHANNELS, 4, stride=4)

            self.conv3 = nn.Conv2d(TINY_CHANNELS, 8, 2, stride=2)
            self.fc = nn.Linear(8, 5)

    def forward_features(self, x: torch.Tensor, stop: str = "out") -> torch.Tensor:
        return self.conv2(torch.relu(self.bn(self.conv1(x))))  # (B, 16, H/16, W/16)

    def tail(self) -> nn.Module:
        """Like ResNet.tail: map (B, 16, H, W) -> (map (B, 8, H/2, W/2), logits (B, 5))."""
        return TinyTail(self.conv3, self.fc)


class TinyTail(nn.Module):
    def __init__(self, conv: nn.Module, fc: nn.Module) -> None:
        super().__init__()
        self.conv, self.fc = conv, fc

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.relu(self.conv(x))
        return y, self.fc(y.mean(dim=(2, 3)))


def _tiny_spec() -> TrunkSpec:
    try:
        return get_trunk_spec("tiny-test")
    except KeyError:
        return register_trunk(
            TrunkSpec(
                name="tiny-test",
                build=TinyNet,
                stop="out",
                channels=TINY_CHANNELS,
                preprocess=Preprocess(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)),
                weights=None,
                licence="test only",
            )
        )


TINY_CFG = AMNetConfig(
    in_channels=TINY_CHANNELS, proj_dim=8, att_dim=8, hidden_size=12, fc_dim=6, steps=3
)


@pytest.fixture(scope="session")
def tiny_trunk_name() -> str:
    return _tiny_spec().name


@pytest.fixture
def tiny_head() -> AMNetHead:
    torch.manual_seed(0)
    return AMNetHead(TINY_CFG).eval()


@pytest.fixture
def tiny_checkpoint(tmp_path, tiny_trunk_name, tiny_head) -> Path:
    return save_checkpoint(tmp_path / "tiny.safetensors", tiny_head, trunk=tiny_trunk_name)


@pytest.fixture
def photo_dir(tmp_path) -> Path:
    """A few small real-looking images written as JPEG/PNG."""
    rng = np.random.default_rng(0)
    d = tmp_path / "photos"
    d.mkdir()
    for i in range(5):
        a = (rng.random((60 + 10 * i, 80, 3)) * 255).astype(np.uint8)
        Image.fromarray(a).save(d / f"img{i}.{'jpg' if i % 2 else 'png'}")
    return d


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory) -> Path:
    """160 images whose score is a learnable function of the image (the share of the image
    covered by a bright square), in the ``list`` layout: root/images + root/scores.txt."""
    root = tmp_path_factory.mktemp("synthetic")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for i in range(160):
        side = int(rng.integers(8, 60))
        a = (rng.random((64, 64, 3)) * 60).astype(np.uint8)
        y, x = rng.integers(0, 64 - side, size=2)
        a[y : y + side, x : x + side] = (230, 230, 230)
        name = f"{i:04d}.png"
        Image.fromarray(a).save(root / "images" / name)
        lines.append(f"{name} {side * side / 64**2:.6f}")
    (root / "scores.txt").write_text("\n".join(lines) + "\n")
    return root
