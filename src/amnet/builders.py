"""Builders of the frozen networks that come from a trunk's own weights: the kernel prior's
descriptors (never stored in checkpoints: amnet does not redistribute trunk weights)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from amnet.model.prior import BLOCKS, TAIL_BLOCKS, Descriptor, ImageDescriptor
from amnet.model.resmem import ResMemHead
from amnet.trunks.registry import Preprocess, Trunk, get_trunk_spec, load_classifier


def _classifier(trunk: str) -> nn.Module:
    """A registered trunk's whole ImageNet classifier, from its own weights when it has any."""
    spec = get_trunk_spec(trunk)
    return load_classifier(trunk) if spec.weights else spec.build()


def _frozen(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


def build_descriptor(
    trunk: str, blocks: tuple[str, ...] = BLOCKS, *, tail: nn.Module | None = None
) -> Descriptor:
    """The descriptor of a registered trunk, its tail loaded (frozen, eval) from the trunk's
    own weights (never from a checkpoint: amnet does not redistribute trunk weights), or
    ``tail`` when given (``create_trunk_and_tail``'s: the weights read once)."""
    if not TAIL_BLOCKS & set(blocks):
        tail = None
    elif tail is None:
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
    # a copy: truncating may change modules the two share (EfficientNet's cut block)
    tail = copy.deepcopy(net.tail()) if TAIL_BLOCKS & set(blocks) else None
    if hasattr(net, "truncate"):
        net.truncate(spec.stop)
    # main: x = (raw - m) / s; own: x' = (raw - m') / s' = x * s / s' + (m - m') / s'
    m, s, m2, s2 = (torch.tensor(v) for v in (main.mean, main.std, own.mean, own.std))
    return _frozen(ImageDescriptor(Trunk(net, spec.stop, trunk), Descriptor(blocks, tail),
                                   s / s2, (m - m2) / s2))  # fmt: skip


def resmem_state() -> dict[str, torch.Tensor]:
    """Every tensor of ResMem's ``model.pt`` (resmem==1.1.6 wheel, found without importing it)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("resmem")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("ResMem's weights come from its wheel: "
                                "pip install --no-deps resmem==1.1.6")  # fmt: skip
    path = Path(spec.origin).parent / "model.pt"
    return torch.load(path, map_location="cpu", weights_only=True)


def build_resmem_head(state: dict[str, torch.Tensor] | None = None) -> ResMemHead:
    """ResMem's head (AlexNet branch + fc6..fc12) with its weights, frozen."""
    state = state if state is not None else resmem_state()
    own = {k: v for k, v in state.items() if not k.startswith("features.")}
    head = ResMemHead({k: tuple(v.shape) for k, v in own.items()})
    head.load_state_dict(own, strict=True)
    head.name = "resmem"
    return _frozen(head)


# a kernel prior's base models, by the name its checkpoint records (tests add tiny ones)
BASES: dict[str, Callable[[], nn.Module]] = {"resmem": build_resmem_head}


def build_base(name: str) -> nn.Module:
    if name not in BASES:
        raise ValueError(f"unknown prior base {name!r}; known: {', '.join(BASES)}")
    base = BASES[name]()
    base.name = name
    return base
