"""ResMem's memorability head (Needell & Bainbridge, 2021), fed from amnet's own trunk pass.

ResMem scores an image (resized to 256x256, centre crop 227, [0, 1] RGB) with fc6..fc12 on the
concatenation of ResNet-152's ImageNet logits and a small grouped AlexNet-style branch of the
image. amnet's default trunk *is* ResMem's ResNet-152 (its ``features.*``), so the logits come
from the tail the kernel prior's descriptor already runs: only the AlexNet branch (0.6 GFLOPs)
and the fully connected layers are extra. The branch needs a 227x227 input; the model's own
input (224x224, amnet's preprocessing) is resized to it. Modules only: the weights come from
the resmem wheel (``amnet.builders.build_resmem_head``), never from an amnet checkpoint.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

RESMEM_CROP = 227  # the AlexNet branch's input side


class ResMemHead(nn.Module):
    """(images (B, 3, S, S) on [0, 1] RGB, ImageNet logits (B, 1000)) -> ResMem score (B,)."""

    def __init__(self, shapes: dict[str, tuple[int, ...]]) -> None:
        super().__init__()

        def conv(name: str, in_ch: int, **kw) -> nn.Conv2d:
            out_ch, per_group, k, _ = shapes[f"{name}.weight"]
            return nn.Conv2d(in_ch, out_ch, k, groups=in_ch // per_group, **kw)

        ch = lambda name: shapes[f"{name}.weight"][0]  # noqa: E731 - a layer's output channels
        self.conv1 = conv("conv1", 3, stride=4)  # (B, 48, 55, 55)
        self.conv2 = conv("conv2", ch("conv1"), padding=2)  # (B, 256, 27, 27), 2 groups
        self.conv3 = conv("conv3", ch("conv2"), padding=1)  # (B, 384, 13, 13)
        self.conv4 = conv("conv4", ch("conv3"), padding=1)
        self.conv5 = conv("conv5", ch("conv4"), padding=1)  # (B, 256, 13, 13)
        self.pool, self.lrn = nn.MaxPool2d(3, 2), nn.LocalResponseNorm(5)
        for i in range(6, 13):
            out_f, in_f = shapes[f"fc{i}.weight"]
            setattr(self, f"fc{i}", nn.Linear(in_f, out_f))

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """The AlexNet-style branch: (B, 3, 227, 227) -> (B, 9216)."""
        c = self.lrn(self.pool(F.relu(self.conv1(x))))  # (B, 48, 27, 27)
        c = self.lrn(self.pool(F.relu(self.conv2(c))))  # (B, 256, 13, 13)
        c = F.relu(self.conv5(F.relu(self.conv4(F.relu(self.conv3(c))))))
        return self.pool(c).flatten(1)  # (B, 256 * 6 * 6)

    def forward_with_activations(
        self, images: torch.Tensor, logits: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Scores (B,) and the activations of fc6..fc11 ({"fc6": (B, 4096), ...})."""
        if images.shape[-1] != RESMEM_CROP or images.shape[-2] != RESMEM_CROP:
            images = F.interpolate(images, size=(RESMEM_CROP, RESMEM_CROP), mode="bilinear",
                                   align_corners=False)  # fmt: skip
        h = torch.cat((self.branch(images), logits), 1)  # (B, 9216 + 1000)
        acts = {}
        for i in range(6, 12):
            h = acts[f"fc{i}"] = F.relu(getattr(self, f"fc{i}")(h))  # dropout: identity
        return torch.sigmoid(self.fc12(h))[:, 0], acts  # (B,); [:, 0], not squeeze: ONNX

    def forward(self, images: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return self.forward_with_activations(images, logits)[0]
