"""The memorability score as a differentiable function of the pixels, for guidance (steering an
image editor or generator) and for maps of the whole score (``amnet.inference.maps``).

>>> score = amnet.load().as_module()                      # doctest: +SKIP
>>> x = torch.rand(1, 3, 300, 400, requires_grad=True)    # doctest: +SKIP
>>> score(x).sum().backward()                             # doctest: +SKIP
>>> x.grad.shape                                          # doctest: +SKIP
torch.Size([1, 3, 300, 400])

The scores are ``predict``'s on the same tensor (within 1e-5): the resize is the one
``predict`` applies to tensors (``amnet.inference.images.resize_images``); a file or PIL image
is resized by PIL in 8 bits, which moves scores by about 1e-3.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from amnet.inference.images import TORCH_RESAMPLE, resize_images
from amnet.model.amnet import AMNet, model_views
from amnet.model.head import AMNetOutput
from amnet.trunks.registry import Preprocess

if TYPE_CHECKING:
    from amnet.inference.predictor import Predictor


class ScoreModule(nn.Module):
    """Images (B, 3, H, W) on the [0, 1] scale, any H and W -> memorability scores (B,).

    Resized to the trunk's input size (antialiased, as ``predict`` does for tensors),
    normalised, and scored by the whole model (``amnet.model.amnet.AMNet``: the trunk, the
    heads, the prior and the test-time views), in float32 whatever the Predictor's options.
    Gradients flow to the input and nowhere else: every parameter has ``requires_grad`` off and
    the module stays in eval mode (``train()`` cannot undo it; dropout never runs)."""

    def __init__(self, model: AMNet, preprocess: Preprocess) -> None:
        super().__init__()
        if preprocess.resample not in TORCH_RESAMPLE:
            raise ValueError(f"no differentiable resize for {preprocess.resample!r}")
        self.model, self.pp = model, preprocess
        self.size, self.resample = preprocess.size, preprocess.resample
        self.register_buffer("mean", torch.tensor(preprocess.mean).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(preprocess.std).view(1, 3, 1, 1), False)
        self.lock()

    @classmethod
    def from_predictor(cls, p: Predictor) -> ScoreModule:
        """The Predictor's own trunk and head (shared, not copied) with its views."""
        if p.trunk is None or p.head is None:
            raise ValueError("an ONNX model has no torch modules to differentiate; load the "
                             ".safetensors checkpoint instead")  # fmt: skip
        model = AMNet(p.trunk, p.head, model_views(p.head, p.views))
        return cls(model, p.preprocess).to(p.device)

    def lock(self) -> ScoreModule:
        """Freeze every parameter and put every submodule in eval mode."""
        for q in self.parameters():
            q.requires_grad_(False)
        return super().train(False)

    def train(self, mode: bool = True) -> ScoreModule:  # noqa: ARG002 - frozen: always eval
        return super().train(False)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> the trunk's input (B, 3, S, S)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(x.shape)}")
        x = x.to(self.mean.device, self.mean.dtype)
        return (resize_images(x, self.size, self.resample) - self.mean) / self.std

    def outputs(self, x: torch.Tensor) -> AMNetOutput:
        """Everything the model says of images (B, 3, H, W) in [0, 1]: score, step scores,
        the heads' attention maps (B, T, h, w) and the raw score."""
        return self.model(self.preprocess(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outputs(x).score  # (B,)
