"""The kernel prior and what it describes: fixed descriptors of the frozen trunk's map (and of a
second trunk's), a linear prior and kernel ridge on the descriptor. Modules only: their tensors
are set by fitting (``amnet.training.priors``), their frozen networks are built from the trunks'
own weights (``amnet.builders``).

Descriptor blocks are pooled statistics of the trunk's map and of the trunk's own later layers
(its "tail": for a ResNet cut after layer3, layer4 and the ImageNet classifier), concatenated
block by block. Nothing here is trained.

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

from amnet.model.views import FLIP_VIEWS, check_views

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

    def forward_with_logits(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The descriptor (B, D) and the tail's ImageNet logits (B, K)."""
        parts, logits = self._parts(feats)
        if logits is None:
            raise ValueError("this descriptor runs no tail: it has no logits")
        return torch.cat(parts, dim=1), logits

    def parts(self, feats: torch.Tensor) -> list[torch.Tensor]:
        """The blocks, in order, each (B, C_block)."""
        return self._parts(feats)[0]

    def _parts(self, feats: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor | None]:
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
        return out, logits


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


class LinearPrior(nn.Module):
    """A linear score on the globally pooled trunk map (B, C, H, W) -> (B,), on the [0, 1]
    scale: ``mean_hw(x) . weight + bias``, clamped to [0, 1] (a linear model extrapolates far
    outside the training range on unfamiliar images). Its tensors are set by fitting (ridge
    regression, ``amnet.training.priors.fit_prior``), never by gradient descent."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.zeros(channels))  # (C,)
        self.register_buffer("bias", torch.zeros(()))

    def describe(self, feats: torch.Tensor) -> torch.Tensor:
        return feats.mean(dim=(2, 3))  # (B, C, H, W) -> (B, C)

    def view_features(
        self, maps: torch.Tensor, names: list[str], images: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, None]:
        """The pooled maps of V views of B images, stacked view after view (V * B, C, H, W),
        averaged over the views (B, C); no logits (the images are not used)."""
        return self.describe(maps).unflatten(0, (len(names), -1)).mean(0), None

    def score(self, desc: torch.Tensor) -> torch.Tensor:
        return (desc @ self.weight + self.bias).clamp(0.0, 1.0)  # (B, C) @ (C,) -> (B,)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.score(self.describe(feats))


KERNELS = ("rbf", "laplace")
BASE_USES = ("residual", "block")  # a base's score: what the kernel part adds to, or a column


class KernelPrior(nn.Module):
    """Kernel ridge regression on an image descriptor, on the [0, 1] scale:
    ``sum_n coef_n k(z, s_n) + bias`` with ``z = (describe(x) - mean) * scale`` and s_n the
    training images' scaled descriptors, clamped to [0, 1]. ``kernel`` "rbf":
    ``k = exp(-gamma |z - s_n|^2)``; "laplace": ``k = exp(-gamma |z - s_n|)``.

    The descriptor is ``describe`` (an ``amnet.model.prior.Descriptor`` of the trunk's map) and,
    with ``extra`` (an ``amnet.model.prior.ImageDescriptor``: a second trunk that sees the
    images), its blocks appended. Both are frozen and not part of the fitted state:
    checkpoints leave their tensors out and they are rebuilt from the trunks' weights. The
    buffers are set by ``amnet.training.priors.fit_kernel_prior``, never by gradient descent.

    With a ``base`` (``amnet.model.resmem.ResMemHead``: a score of the image and the tail's
    logits) and ``base_use="residual"``, the kernel ridge models the residual over
    ``base_scale * base + base_shift``, and the score is their sum: far from every training
    image the kernel part fades and the prior falls back to the rescaled base instead of to the
    training mean. With ``base_use="block"`` the base's score is one more descriptor column
    (the last of ``dim``).

    The main descriptor is averaged over ``views``; the ``extra`` one over ``extra_views`` (some
    of ``views``, "orig" among them; default: all of them): a second trunk may see fewer views."""

    def __init__(
        self, describe: nn.Module, dim: int, n_support: int, kernel: str = "rbf",
        extra: nn.Module | None = None, views: tuple[str, ...] = FLIP_VIEWS,
        base: nn.Module | None = None, base_use: str = "residual",
        extra_views: tuple[str, ...] | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
        self.describe = describe
        self.extra = extra
        self.kernel = kernel
        self.views = check_views(views, with_orig=True)  # its descriptor's test-time views
        self.extra_views = check_views(extra_views or self.views, with_orig=True)
        if set(self.extra_views) - set(self.views):
            raise ValueError(f"extra_views {self.extra_views} must be some of views {self.views}")
        self.register_buffer("mean", torch.zeros(dim))  # (D,)
        self.register_buffer("scale", torch.ones(dim))  # (D,) 1 / (sd * sqrt(block size))
        self.register_buffer("support", torch.zeros(n_support, dim))  # (N, D) scaled
        self.register_buffer("support_sq", torch.zeros(n_support))  # (N,) |s_n|^2
        self.register_buffer("coef", torch.zeros(n_support))  # (N,)
        self.register_buffer("bias", torch.zeros(()))
        self.register_buffer("gamma", torch.ones(()))
        self.base = base
        if base_use not in BASE_USES:
            raise ValueError(f"base_use must be one of {BASE_USES}, got {base_use!r}")
        self.base_use = base_use
        if base is not None:
            self.register_buffer("base_scale", torch.ones(()))
            self.register_buffer("base_shift", torch.zeros(()))

    def base_score(self, images: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """The rescaled base score (B,) of images (B, 3, S, S) and their logits (B, K)."""
        return self.base_scale * self.base(images, logits) + self.base_shift

    def score_with_base(self, desc: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """The score (B,) of descriptors (B, D - 1 as a block, else D) and the base's raw score
        r (B,), as ``base_use`` says."""
        if self.base_use == "block":
            return self.score(torch.cat([desc, r.unsqueeze(1).to(desc.dtype)], dim=1))
        return self.score(desc, self.base_scale * r + self.base_shift)

    def score(self, desc: torch.Tensor, base: torch.Tensor | None = None) -> torch.Tensor:
        """The score (B,) of descriptors (B, D), plus the rescaled ``base_score`` (B,)."""
        z = (desc.float() - self.mean) * self.scale  # (B, D)
        s = self.support.float()
        d2 = (z * z).sum(1, keepdim=True) + self.support_sq - 2.0 * z @ s.T  # (B, N)
        d = d2.clamp_min(0.0)
        k = torch.exp(-self.gamma * (d.sqrt() if self.kernel == "laplace" else d))  # (B, N)
        out = k @ self.coef + self.bias  # (B,)
        return (out if base is None else out + base).clamp(0.0, 1.0)

    def view_features(
        self, maps: torch.Tensor, names: list[str], images: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The descriptor (B, D) of the trunk maps of V views of B images, stacked view after
        view (V * B, C, H, W) in the order of ``names``: the main descriptor averaged over the
        views, the extra one (of ``images``, by view name) over those among ``extra_views``.
        With a ``base``, also the tail's logits of every view (V * B, K); else None."""
        desc, logits = (self.describe.forward_with_logits(maps) if self.base is not None
                        else (self.describe(maps), None))  # fmt: skip
        desc = desc.unflatten(0, (len(names), -1)).mean(0)  # (V, B, D1) -> (B, D1)
        if self.extra is None:
            return desc, logits
        seen = [v for v in names if v in self.extra_views]
        if images is None or set(seen) - set(images):
            raise ValueError("this kernel prior describes the images too: pass images")
        x = self.extra(torch.cat([images[v] for v in seen]) if len(seen) > 1 else images[seen[0]])
        return torch.cat([desc, x.unflatten(0, (len(seen), -1)).mean(0)], dim=1), logits

    def frozen_nets(self) -> list[nn.Module]:
        """The networks the descriptor runs (a runtime may fold or re-lay them out)."""
        nets = [getattr(self.describe, "tail", None)]
        if self.extra is not None:
            nets += [self.extra.trunk, getattr(self.extra.describe, "tail", None)]
        if self.base is not None:
            nets.append(self.base)
        return [n for n in nets if n is not None]

    def forward(self, feats: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        """The score (B,) of one view: trunk maps (B, C, H, W) and, with ``extra``, the images."""
        seen = None if images is None else {"orig": images}
        return self.score(self.view_features(feats, ["orig"], seen)[0])
