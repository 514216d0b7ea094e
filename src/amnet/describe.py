"""Image descriptors for the kernel prior: fixed pooled statistics of the frozen trunk's map
and of the trunk's own later layers (its "tail": for a ResNet cut after layer3, layer4 and the
ImageNet classifier), concatenated block by block. Nothing here is trained.

Blocks (each (B, C) after pooling; ``sqrt`` of post-ReLU activations, which evens out their
heavy tails):
  map_mean, map_centre, map_top, map_bottom   the trunk's map: whole, central half of each
                                              side, top half, bottom half
  tail_mean, tail_centre                      the tail's map (ResNet layer4), whole and centre
  tail_logprob                                log(softmax(ImageNet logits) + 1e-4)

``ImageDescriptor`` describes the same images with a second trunk (``EXTRA_BLOCKS`` of its
own tail: e.g. EfficientNet-Lite2's head features and log-probabilities).
"""

from __future__ import annotations

import torch
from torch import nn

from .backbone import Preprocess, Trunk, get_trunk_spec, load_classifier

BLOCKS = ("map_mean", "map_centre", "map_top", "map_bottom", "tail_mean", "tail_centre",
          "tail_logprob")  # fmt: skip
TAIL_BLOCKS = {"tail_mean", "tail_centre", "tail_logprob"}
LOGPROB_FLOOR = 1e-4
EXTRA_BLOCKS = ("tail_mean", "tail_logprob")  # what a second trunk adds (ImageDescriptor)


def pool(m: torch.Tensor, region: str) -> torch.Tensor:
    """sqrt of the mean of a non-negative map (B, C, H, W) over a region -> (B, C)."""
    H, W = m.shape[-2:]
    if region == "centre":
        m = m[..., H // 4 : H - H // 4, W // 4 : W - W // 4]
    elif region == "top":
        m = m[..., : H // 2, :]
    elif region == "bottom":
        m = m[..., H - H // 2 :, :]
    elif region != "mean":
        raise ValueError(f"unknown region {region!r}")
    return m.mean(dim=(-2, -1)).clamp_min(0).sqrt()


class Descriptor(nn.Module):
    """Trunk map (B, C, H, W) -> descriptor (B, D), the ``blocks`` concatenated in order.
    ``tail`` (needed by the tail_* blocks) maps the trunk's map to (map, logits)."""

    def __init__(self, blocks: tuple[str, ...], tail: nn.Module | None = None) -> None:
        super().__init__()
        unknown = set(blocks) - set(BLOCKS)
        if unknown or not blocks:
            raise ValueError(f"unknown descriptor blocks {sorted(unknown)}; known: {BLOCKS}")
        if TAIL_BLOCKS & set(blocks) and tail is None:
            raise ValueError(f"blocks {sorted(TAIL_BLOCKS & set(blocks))} need the trunk's tail")
        self.blocks = tuple(blocks)
        self.tail = tail

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.parts(feats), dim=1)  # (B, D)

    def parts(self, feats: torch.Tensor) -> list[torch.Tensor]:
        """The blocks, in order, each (B, C_block)."""
        out: list[torch.Tensor] = []
        y = logits = None
        if self.tail is not None and TAIL_BLOCKS & set(self.blocks):
            y, logits = self.tail(feats)  # (B, C4, H/2, W/2), (B, K)
        for b in self.blocks:
            src, _, kind = b.partition("_")
            if kind == "logprob":
                out.append(torch.log(torch.softmax(logits, dim=1) + LOGPROB_FLOOR))  # (B, K)
            else:
                out.append(pool(feats if src == "map" else y, kind))
        return out


def _classifier(trunk: str) -> nn.Module:
    """A registered trunk's whole ImageNet classifier, from its own weights when it has any."""
    spec = get_trunk_spec(trunk)
    return load_classifier(trunk) if spec.weights else spec.build()


def _frozen(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


def build_descriptor(trunk: str, blocks: tuple[str, ...] = BLOCKS) -> Descriptor:
    """The descriptor of a registered trunk, its tail loaded (frozen, eval) from the trunk's
    own weights (never from a checkpoint: amnet does not redistribute trunk weights)."""
    tail = None
    if TAIL_BLOCKS & set(blocks):
        net = _classifier(trunk)
        if not hasattr(net, "tail"):
            raise ValueError(f"trunk {trunk!r} has no tail; use blocks without tail_*")
        tail = net.tail()
    return _frozen(Descriptor(blocks, tail))


class ImageDescriptor(nn.Module):
    """Another trunk's descriptor of the same images: images (B, 3, S, S), preprocessed for
    the model's main trunk, are re-normalised for this trunk (same size), run through it and
    described by ``describe`` -> (B, D). Frozen; rebuilt from the trunk's own weights."""

    def __init__(self, trunk: nn.Module, describe: Descriptor, gain: torch.Tensor,
                 shift: torch.Tensor) -> None:  # fmt: skip
        super().__init__()
        self.trunk, self.describe = trunk, describe
        self.register_buffer("gain", gain.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", shift.view(1, 3, 1, 1), persistent=False)

    @property
    def blocks(self) -> tuple[str, ...]:
        return self.describe.blocks

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.describe(self.trunk(images * self.gain + self.shift))  # (B, D)


def build_image_descriptor(
    trunk: str, blocks: tuple[str, ...], main: Preprocess
) -> ImageDescriptor:
    """``trunk``'s descriptor (``blocks``) of images preprocessed by ``main``: the trunk and
    its tail come from one load of the trunk's weights."""
    spec = get_trunk_spec(trunk)
    own = spec.preprocess
    if own.size != main.size or own.resample != main.resample:
        raise ValueError(f"trunk {trunk!r} wants {own.size}px {own.resample} input, the main "
                         f"trunk {main.size}px {main.resample}")  # fmt: skip
    net = _classifier(trunk)
    tail = net.tail() if TAIL_BLOCKS & set(blocks) else None
    if hasattr(net, "truncate"):
        net.truncate(spec.stop)
    # main: x = (raw - m) / s; own: x' = (raw - m') / s' = x * s / s' + (m - m') / s'
    m, s, m2, s2 = (torch.tensor(v) for v in (main.mean, main.std, own.mean, own.std))
    return _frozen(ImageDescriptor(Trunk(net, spec.stop, trunk), Descriptor(blocks, tail),
                                   s / s2, (m - m2) / s2))  # fmt: skip
