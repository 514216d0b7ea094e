"""Builders of the frozen networks that come from a trunk's own weights: the kernel prior's
descriptors (never stored in checkpoints: amnet does not redistribute trunk weights)."""

from __future__ import annotations

import torch
from torch import nn

from amnet.model.prior import BLOCKS, TAIL_BLOCKS, Descriptor, ImageDescriptor
from amnet.trunks.registry import Preprocess, Trunk, get_trunk_spec, load_classifier


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
