"""The AMNet head (Fajtl et al., CVPR 2018) and the full model. Modules and config only.

Shapes: B batch, C trunk channels, H×W feature locations (L = H·W), D projected feature size,
T attention steps, N LSTM hidden size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .views import HEAD_VIEWS, TTA_VIEWS, apply_view, check_views


@dataclass(frozen=True)
class AMNetConfig:
    """Architecture of the AMNet head; every field is saved in checkpoints."""

    in_channels: int = 1024  # C: channels of the trunk's feature map
    reduce_dim: int = 0  # R: fixed PCA projection C -> R fitted on training data; 0 = none
    proj_dim: int = 1024  # D: 1x1-conv projection of the map
    att_dim: int = 1024  # size of the additive-attention space
    hidden_size: int = 1024  # N: LSTM hidden size
    fc_dim: int = 512  # first fully connected regression layer
    steps: int = 3  # T: attention steps ("saccades"); 0 = no LSTM
    attention: bool = True  # False: uniform attention (the paper's no-attention ablation)
    dropout_features: float = 0.5  # dropout on the projected map
    dropout_fc: float = 0.5  # dropout before each fully connected layer
    target_mean: float = 0.75  # training targets are (y - target_mean) * target_scale
    target_scale: float = 2.0

    def __post_init__(self) -> None:
        for name in ("in_channels", "proj_dim", "att_dim", "hidden_size", "fc_dim"):
            if getattr(self, name) <= 0:
                raise ValueError(f"AMNetConfig.{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.reduce_dim <= self.in_channels:
            raise ValueError("AMNetConfig.reduce_dim must be in [0, in_channels]")
        if self.steps < 0:
            raise ValueError(f"AMNetConfig.steps must be >= 0, got {self.steps}")
        for name in ("dropout_features", "dropout_fc"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"AMNetConfig.{name} must be in [0, 1)")
        if self.target_scale <= 0:
            raise ValueError("AMNetConfig.target_scale must be positive")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> AMNetConfig:
        known = cls.__dataclass_fields__
        unknown = set(d) - set(known)
        if unknown:
            raise ValueError(f"unknown AMNetConfig fields: {sorted(unknown)}")
        return cls(**d)


class AMNetOutput(NamedTuple):
    score: torch.Tensor  # (B,) memorability on the [0, 1] scale
    step_scores: torch.Tensor  # (B, T) per-step scores on the [0, 1] scale
    attention: torch.Tensor  # (B, T, H, W), each map sums to 1
    raw: torch.Tensor  # (B,) score in normalised target units (what the loss sees)


class SoftAttention(nn.Module):
    """Additive attention over L locations: a_l = softmax_l(v . tanh(K_l + W h)).

    The keys K = W_x x are computed once per image (``keys``), not once per step."""

    def __init__(self, dim: int, hidden: int, att_dim: int) -> None:
        super().__init__()
        self.key = nn.Linear(dim, att_dim, bias=False)
        self.query = nn.Linear(hidden, att_dim)
        self.score = nn.Linear(att_dim, 1)

    def keys(self, x: torch.Tensor) -> torch.Tensor:
        return self.key(x)  # (B, L, D) -> (B, L, A)

    def forward(self, keys: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        e = torch.tanh(keys + self.query(h).unsqueeze(1))  # (B, L, A)
        return F.softmax(self.score(e).squeeze(-1), dim=-1)  # (B, L)


class AMNetHead(nn.Module):
    """Feature map (B, C, H, W) -> score, per-step scores and attention maps."""

    def __init__(self, cfg: AMNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        r = cfg.reduce_dim
        if r:  # a fixed (not trained) linear map, set by ``set_reduction`` before training
            self.register_buffer("reduce_weight", torch.eye(r, cfg.in_channels))  # (R, C)
            self.register_buffer("reduce_bias", torch.zeros(r))  # (R,)
        self.proj = nn.Conv2d(r or cfg.in_channels, cfg.proj_dim, 1)
        self.proj_bn = nn.BatchNorm2d(cfg.proj_dim)
        self.drop_features = nn.Dropout(cfg.dropout_features)
        self.drop_fc = nn.Dropout(cfg.dropout_fc)
        regress_in = cfg.hidden_size if cfg.steps > 0 else cfg.proj_dim
        self.fc1 = nn.Linear(regress_in, cfg.fc_dim)
        self.fc2 = nn.Linear(cfg.fc_dim, 1)
        if cfg.steps > 0:
            self.init_h = nn.Linear(cfg.proj_dim, cfg.hidden_size)
            self.init_c = nn.Linear(cfg.proj_dim, cfg.hidden_size)
            self.attend = SoftAttention(cfg.proj_dim, cfg.hidden_size, cfg.att_dim)
            self.lstm = nn.LSTMCell(cfg.proj_dim, cfg.hidden_size)

    def regress(self, h: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc1(self.drop_fc(h)))  # (B, fc_dim)
        return self.fc2(self.drop_fc(h)).squeeze(-1)  # (B,)

    def to_unit(self, raw: torch.Tensor) -> torch.Tensor:
        """Normalised target units -> the [0, 1] memorability scale (not clamped)."""
        return raw / self.cfg.target_scale + self.cfg.target_mean

    def set_reduction(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Install the fixed projection (R, C) and bias (R,), e.g. a PCA of training features."""
        self.reduce_weight.copy_(weight)
        self.reduce_bias.copy_(bias)

    def reduce(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, R, H, W) with the fixed projection; identity when R = 0."""
        if not self.cfg.reduce_dim:
            return feats
        return F.conv2d(feats, self.reduce_weight[:, :, None, None], self.reduce_bias)

    def forward(self, feats: torch.Tensor) -> AMNetOutput:
        return self.forward_reduced(self.reduce(feats))

    def forward_reduced(self, feats: torch.Tensor) -> AMNetOutput:
        """The head after the fixed reduction (training on pre-reduced features uses this)."""
        B, _, H, W = feats.shape
        x = F.relu(self.proj_bn(self.proj(feats)))  # (B, D, H, W)
        x = self.drop_features(x)
        x = x.flatten(2).transpose(1, 2)  # (B, L, D)
        mean = x.mean(dim=1)  # (B, D)
        T = self.cfg.steps
        if T == 0:
            raw = self.regress(mean)  # (B,)
            empty = feats.new_zeros(B, 0)
            return AMNetOutput(self.to_unit(raw), empty, empty.view(B, 0, H, W), raw)
        h, c = torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean))  # (B, N) each
        keys = self.attend.keys(x) if self.cfg.attention else None  # (B, L, A)
        uniform = feats.new_full((B, H * W), 1.0 / (H * W))
        alphas, raws = [], []
        for _ in range(T):
            alpha = self.attend(keys, h) if keys is not None else uniform  # (B, L)
            context = torch.bmm(alpha.unsqueeze(1), x).squeeze(1)  # (B, D)
            h, c = self.lstm(context, (h, c))  # (B, N) each
            raws.append(self.regress(h))
            alphas.append(alpha)
        step_raw = torch.stack(raws, dim=1)  # (B, T)
        attention = torch.stack(alphas, dim=1).view(B, T, H, W)  # (B, T, H, W)
        raw = step_raw.mean(dim=1)  # (B,)
        return AMNetOutput(self.to_unit(raw), self.to_unit(step_raw), attention, raw)


class AMNet(nn.Module):
    """A frozen trunk (image -> feature map) followed by the AMNet head."""

    def __init__(self, trunk: nn.Module, head: AMNetHead) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = head

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.trunk(images)  # (B, 3, 224, 224) -> (B, C, 14, 14)

    def forward_head(self, feats: torch.Tensor) -> AMNetOutput:
        return self.head(feats)

    def forward(self, images: torch.Tensor) -> AMNetOutput:
        return self.forward_head(self.forward_features(images))


class LinearPrior(nn.Module):
    """A linear score on the globally pooled trunk map (B, C, H, W) -> (B,), on the [0, 1]
    scale: ``mean_hw(x) . weight + bias``, clamped to [0, 1] (a linear model extrapolates far
    outside the training range on unfamiliar images). Its tensors are set by fitting (ridge
    regression, ``amnet.ridge.fit_prior``), never by gradient descent."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.zeros(channels))  # (C,)
        self.register_buffer("bias", torch.zeros(()))

    def describe(self, feats: torch.Tensor) -> torch.Tensor:
        return feats.mean(dim=(2, 3))  # (B, C, H, W) -> (B, C)

    def features(self, feats: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        return self.describe(feats)  # the images are not used

    def score(self, desc: torch.Tensor) -> torch.Tensor:
        return (desc @ self.weight + self.bias).clamp(0.0, 1.0)  # (B, C) @ (C,) -> (B,)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.score(self.describe(feats))


KERNELS = ("rbf", "laplace")


class KernelPrior(nn.Module):
    """Kernel ridge regression on an image descriptor, on the [0, 1] scale:
    ``sum_n coef_n k(z, s_n) + bias`` with ``z = (describe(x) - mean) * scale`` and s_n the
    training images' scaled descriptors, clamped to [0, 1]. ``kernel`` "rbf":
    ``k = exp(-gamma |z - s_n|^2)``; "laplace": ``k = exp(-gamma |z - s_n|)``.

    The descriptor is ``describe`` (an ``amnet.describe.Descriptor`` of the trunk's map) and,
    with ``extra`` (an ``amnet.describe.ImageDescriptor``: a second trunk that sees the
    images), its blocks appended. Both are frozen and not part of the fitted state:
    checkpoints leave their tensors out and they are rebuilt from the trunks' weights. The
    buffers are set by ``amnet.ridge.fit_kernel_prior``, never by gradient descent."""

    def __init__(
        self, describe: nn.Module, dim: int, n_support: int, kernel: str = "rbf",
        extra: nn.Module | None = None, views: tuple[str, ...] = TTA_VIEWS,
    ) -> None:  # fmt: skip
        super().__init__()
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
        self.describe = describe
        self.extra = extra
        self.kernel = kernel
        self.views = check_views(views, with_orig=True)  # its descriptor's test-time views
        self.register_buffer("mean", torch.zeros(dim))  # (D,)
        self.register_buffer("scale", torch.ones(dim))  # (D,) 1 / (sd * sqrt(block size))
        self.register_buffer("support", torch.zeros(n_support, dim))  # (N, D) scaled
        self.register_buffer("support_sq", torch.zeros(n_support))  # (N,) |s_n|^2
        self.register_buffer("coef", torch.zeros(n_support))  # (N,)
        self.register_buffer("bias", torch.zeros(()))
        self.register_buffer("gamma", torch.ones(()))

    def score(self, desc: torch.Tensor) -> torch.Tensor:
        z = (desc.float() - self.mean) * self.scale  # (B, D)
        s = self.support.float()
        d2 = (z * z).sum(1, keepdim=True) + self.support_sq - 2.0 * z @ s.T  # (B, N)
        d = d2.clamp_min(0.0)
        k = torch.exp(-self.gamma * (d.sqrt() if self.kernel == "laplace" else d))  # (B, N)
        return (k @ self.coef + self.bias).clamp(0.0, 1.0)  # (B,)

    def features(self, feats: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        """The descriptor (B, D) of trunk maps ``feats`` and, with ``extra``, of ``images``."""
        desc = self.describe(feats)
        if self.extra is None:
            return desc
        if images is None:
            raise ValueError("this kernel prior describes the images too: pass images")
        return torch.cat([desc, self.extra(images)], dim=1)

    def frozen_nets(self) -> list[nn.Module]:
        """The networks the descriptor runs (a runtime may fold or re-lay them out)."""
        nets = [getattr(self.describe, "tail", None)]
        if self.extra is not None:
            nets += [self.extra.trunk, getattr(self.extra.describe, "tail", None)]
        return [n for n in nets if n is not None]

    def forward(self, feats: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        return self.score(self.features(feats, images))


def _unmirror(att: torch.Tensor, mirrored: bool) -> torch.Tensor:
    return att.flip(-1) if mirrored else att  # (B, T, H, W), back in the original's frame


def average_views(outs: list[AMNetOutput], mirrored: list[bool]) -> AMNetOutput:
    """Test-time augmentation: the mean of each output over views of the same images; the
    attention maps of mirrored views are mirrored back first."""
    score = torch.stack([o.score for o in outs]).mean(0)  # (B,)
    steps = torch.stack([o.step_scores for o in outs]).mean(0)  # (B, T)
    raw = torch.stack([o.raw for o in outs]).mean(0)  # (B,)
    att = torch.stack([_unmirror(o.attention, m) for o, m in zip(outs, mirrored, strict=True)])
    return AMNetOutput(score, steps, att.mean(0), raw)


def _head_outputs(head: nn.Module, feats: dict[str, torch.Tensor]) -> AMNetOutput:
    """``head`` averaged over the head views ("orig", "flip") among ``feats``."""
    names = [v for v in feats if v in HEAD_VIEWS]
    return average_views([head(feats[v]) for v in names], [v == "flip" for v in names])


class AMNetEnsemble(nn.Module):
    """Several AMNet heads on the same features; scores, step scores and attention maps are
    averaged (each averaged map still sums to 1). With a ``prior`` (a ``LinearPrior`` or a
    ``KernelPrior``), scores and step scores become ``(1 - prior_mix) * heads + prior_mix *
    prior``; the attention maps are the heads' alone.

    ``forward_views`` scores several views of the same images (``amnet.views``): the heads'
    outputs are averaged over "orig" and "flip", the prior scores the average of the
    descriptors of its views (a ``KernelPrior``'s ``views``; "orig" and "flip" otherwise)."""

    def __init__(
        self, heads: list[AMNetHead], prior: LinearPrior | KernelPrior | None = None,
        prior_mix: float = 0.0,
    ) -> None:  # fmt: skip
        super().__init__()
        if not heads:
            raise ValueError("an ensemble needs at least one head")
        if len({h.cfg.steps for h in heads}) != 1:
            raise ValueError("all heads of an ensemble must have the same number of steps")
        if (prior is None) != (prior_mix == 0.0) or not 0.0 <= prior_mix < 1.0:
            raise ValueError("a prior needs prior_mix in (0, 1), and prior_mix > 0 a prior")
        self.heads = nn.ModuleList(heads)
        self.cfg = heads[0].cfg
        self.prior = prior
        self.prior_mix = prior_mix

    def _heads(self, feats: torch.Tensor) -> AMNetOutput:
        outs = [h(feats) for h in self.heads]
        return AMNetOutput(*(torch.stack(t).mean(0) for t in zip(*outs, strict=True)))

    def forward_views(
        self, feats: dict[str, torch.Tensor], images: dict[str, torch.Tensor] | None = None
    ) -> AMNetOutput:
        """``feats``: the trunk map of each view, by view name; ``images``: the views
        themselves (needed by a kernel prior with an ``extra`` descriptor)."""
        out = _head_outputs(self._heads, feats)
        if self.prior is None:
            return out
        names = [v for v in feats if v in getattr(self.prior, "views", HEAD_VIEWS)]
        images = images or {}
        seen = _stack_views([images[v] for v in names]) if set(names) <= set(images) else None
        desc = self.prior.features(_stack_views([feats[v] for v in names]), seen)  # (V * B, D)
        desc = desc.unflatten(0, (len(names), -1))  # (V, B, D): all views in one batch
        m, p = self.prior_mix, self.prior.score(desc.mean(0))  # p: (B,)
        score = (1 - m) * out.score + m * p  # (B,)
        steps = (1 - m) * out.step_scores + m * p.unsqueeze(1)  # (B, T)
        raw = (score - self.cfg.target_mean) * self.cfg.target_scale
        return AMNetOutput(score, steps, out.attention, raw)

    def forward(self, feats: torch.Tensor, images: torch.Tensor | None = None) -> AMNetOutput:
        return self.forward_views({"orig": feats}, None if images is None else {"orig": images})


def model_views(head: nn.Module, tta: bool) -> tuple[str, ...]:
    """The views of each image a model scores: "orig" alone without ``tta``; with it, the
    head views ("orig", "flip") and those of its kernel prior."""
    if not tta:
        return ("orig",)
    prior_views = getattr(getattr(head, "prior", None), "views", ())
    return tuple(dict.fromkeys((*HEAD_VIEWS, *prior_views)))


def image_views(x: torch.Tensor, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The views ``names`` of images (B, 3, S, S), by name."""
    return {v: apply_view(x, v) for v in names}


def _stack_views(views: list[torch.Tensor]) -> torch.Tensor:
    """V tensors (B, ...) -> one batch (V * B, ...), view after view."""
    return views[0] if len(views) == 1 else torch.cat(views)


def score_images(
    trunk: Callable[[torch.Tensor], torch.Tensor], head: AMNetHead | AMNetEnsemble,
    x: torch.Tensor, tta: bool,
) -> AMNetOutput:  # fmt: skip
    """Images (B, 3, S, S) -> the head's output, the views ``model_views(head, tta)`` run
    through ``trunk`` as one batch (V * B images: fuller batches, faster for small B) and
    averaged as the head averages them."""
    views = image_views(x, model_views(head, tta))
    maps = trunk(_stack_views(list(views.values())))  # (V * B, C, H, W)
    maps = maps.chunk(len(views))  # V x (B, C, H, W); B stays dynamic in an ONNX export
    return head_views(head, dict(zip(views, maps, strict=True)), views)


def head_views(
    head: AMNetHead | AMNetEnsemble, feats: dict[str, torch.Tensor],
    images: dict[str, torch.Tensor] | None = None,
) -> AMNetOutput:  # fmt: skip
    """A head's output from the trunk maps of several views (``AMNetEnsemble.forward_views``);
    ``images``: the views, for a prior that describes the images too."""
    if isinstance(head, AMNetEnsemble):
        return head.forward_views(feats, images)
    return _head_outputs(head, feats)
