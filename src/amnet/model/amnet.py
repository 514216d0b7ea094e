"""The whole model: a frozen trunk, AMNet heads, a prior and the test-time views. ``AMNet`` is the
one place they meet; the torch engine, the ONNX export and the Predictor all run it.

``AMNetEnsemble`` averages several heads and blends in a prior (``amnet.model.prior``);
``forward_views`` scores several views of the same images (``amnet.model.views``).
"""

from __future__ import annotations

import torch
from torch import nn

from amnet.model.head import AMNetHead, AMNetOutput
from amnet.model.prior import KernelPrior, LinearPrior
from amnet.model.views import HEAD_VIEWS, VIEW_SPACES, apply_view, check_views


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
    prior``; the attention maps are the heads' alone (with ``prior_mix=1`` the score is the
    prior's and the heads give the attention maps only).

    ``forward_views`` scores several views of the same images (``amnet.model.views``): the heads'
    outputs are averaged over "orig" and "flip", the prior scores the average of the
    descriptors of its views (a ``KernelPrior``'s ``views``; "orig" and "flip" otherwise)."""

    def __init__(
        self, heads: list[AMNetHead], prior: LinearPrior | KernelPrior | None = None,
        prior_mix: float = 0.0, view_space: str = "image",
    ) -> None:  # fmt: skip
        super().__init__()
        if not heads:
            raise ValueError("an ensemble needs at least one head")
        if len({h.cfg.steps for h in heads}) != 1:
            raise ValueError("all heads of an ensemble must have the same number of steps")
        if (prior is None) != (prior_mix == 0.0) or not 0.0 <= prior_mix <= 1.0:
            raise ValueError("a prior needs prior_mix in (0, 1], and prior_mix > 0 a prior")
        self.heads = nn.ModuleList(heads)
        self.cfg = heads[0].cfg
        self.prior = prior
        self.prior_mix = prior_mix
        if view_space not in VIEW_SPACES:
            raise ValueError(f"view_space must be one of {VIEW_SPACES}, got {view_space!r}")
        self.view_space = view_space  # where its test-time views are made (AMNet)

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
        maps = _stack_views([feats[v] for v in names])  # (V * B, C, H, W): one batch
        desc, logits = self.prior.view_features(maps, names, images)  # (B, D), (V * B, K) | None
        r = None
        if logits is not None:  # the base scores the image itself with its "orig" logits
            logits = logits.unflatten(0, (len(names), -1))[names.index("orig")]  # (B, K)
            r = self.prior.base(images["orig"], logits)  # (B,)
        p = self.prior.score(desc) if r is None else self.prior.score_with_base(desc, r)  # (B,)
        m = self.prior_mix
        score = (1 - m) * out.score + m * p  # (B,)
        steps = (1 - m) * out.step_scores + m * p.unsqueeze(1)  # (B, T)
        raw = (score - self.cfg.target_mean) * self.cfg.target_scale
        return AMNetOutput(score, steps, out.attention, raw)

    def forward(self, feats: torch.Tensor, images: torch.Tensor | None = None) -> AMNetOutput:
        return self.forward_views({"orig": feats}, None if images is None else {"orig": images})


def model_views(head: nn.Module, views: bool) -> tuple[str, ...]:
    """The views of each image a model scores: "orig" alone without ``views``; with it, the
    head views ("orig", "flip") and those of its kernel prior."""
    if not views:
        return ("orig",)
    prior_views = getattr(getattr(head, "prior", None), "views", ())
    return tuple(dict.fromkeys((*HEAD_VIEWS, *prior_views)))


def image_views(x: torch.Tensor, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The views ``names`` of images (B, 3, S, S), by name."""
    return {v: apply_view(x, v) for v in names}


def _stack_views(views: list[torch.Tensor]) -> torch.Tensor:
    """V tensors (B, ...) -> one batch (V * B, ...), view after view."""
    return views[0] if len(views) == 1 else torch.cat(views)


class AMNet(nn.Module):
    """Images (B, 3, S, S), preprocessed for the trunk -> ``AMNetOutput``: the ``views`` of
    each image (``model_views``) run through ``trunk`` as one batch (V * B images: fuller
    batches, faster for small B), the heads and prior average them as ``head_views`` does.

    With ``space="features"`` the trunk runs once, on the images alone, and the views are made
    from its map instead (the same flips and crops, applied to the (B, C, H, W) map): one trunk
    pass instead of V; the heads and the prior see the views of the map.

    ``trunk`` is any module mapping images to its map (B, C, H, W): the frozen trunk itself, or
    the torch engine's wrapper of it (chunks, memory format). Nothing here stops gradients:
    the output is a differentiable function of the images."""

    def __init__(
        self, trunk: nn.Module, head: AMNetHead | AMNetEnsemble, views: tuple[str, ...] = ("orig",),
        space: str | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        space = space or getattr(head, "view_space", "image")  # None: as the model was fitted
        if space not in VIEW_SPACES:
            raise ValueError(f"space must be one of {VIEW_SPACES}, got {space!r}")
        self.trunk, self.head, self.space = trunk, head, space
        self.views = check_views(views, with_orig=True)

    def forward(self, x: torch.Tensor) -> AMNetOutput:
        if self.space == "features":
            maps = self.trunk(x)  # (B, C, H, W): one pass
            feats = {v: apply_view(maps, v) for v in self.views}  # views of the map
            return head_views(self.head, feats, {"orig": x})
        views = image_views(x, self.views)
        maps = self.trunk(_stack_views(list(views.values())))  # (V * B, C, H, W)
        maps = maps.chunk(len(views))  # V x (B, C, H, W); B stays dynamic in an ONNX export
        return head_views(self.head, dict(zip(views, maps, strict=True)), views)


def head_views(
    head: AMNetHead | AMNetEnsemble, feats: dict[str, torch.Tensor],
    images: dict[str, torch.Tensor] | None = None,
) -> AMNetOutput:  # fmt: skip
    """A head's output from the trunk maps of several views (``AMNetEnsemble.forward_views``);
    ``images``: the views, for a prior that describes the images too."""
    if isinstance(head, AMNetEnsemble):
        return head.forward_views(feats, images)
    return _head_outputs(head, feats)
