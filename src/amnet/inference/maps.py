"""Maps of the whole score (heads and prior), beside the heads' attention maps.

The attention maps say where the AMNet heads looked; in the shipped default the heads make
0.2 of the score and the kernel prior (0.8) has no map. These maps are of the score itself:

- ``score_maps(...).sensitivity``: input gradient x (image - grey), summed over colours and
  over each cell of the attention grid: the first-order estimate of how much the score drops
  when that cell is greyed out (positive: the cell raises the score). One forward and one
  backward pass.
- ``occlusion_map``: the drop itself, measured: each cell greyed out in turn and re-scored.
  h x w forward passes.

Both take images (B, 3, H, W) on the [0, 1] scale and a ``ScoreModule``
(``Predictor.as_module()``); ``top_cells`` and ``occlude`` grey out the highest-ranked cells of
any map (the faithfulness benchmark, ``benchmarks/faithfulness.py``).

>>> m = amnet.load().as_module()                          # doctest: +SKIP
>>> maps = score_maps(m, torch.rand(1, 3, 224, 224))      # doctest: +SKIP
>>> maps.attention.shape, maps.sensitivity.shape          # doctest: +SKIP
(torch.Size([1, 3, 14, 14]), torch.Size([1, 14, 14]))
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from amnet.inference.differentiable import ScoreModule
from amnet.inference.images import prepare

GREY = 0.5  # what a greyed-out region is filled with, on the [0, 1] scale


class ScoreMaps(NamedTuple):
    score: torch.Tensor  # (B,) the whole model's score
    step_scores: torch.Tensor  # (B, T)
    attention: torch.Tensor  # (B, T, h, w) the heads' attention, each map sums to 1
    sensitivity: torch.Tensor  # (B, h, w) first-order score drop when each cell is greyed


def cell_sums(m: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """A per-pixel map (B, H, W) -> its sum over each cell of a ``grid`` (h, w) -> (B, h, w)
    (cells as adaptive pooling draws them: exact when h and w divide H and W)."""
    H, W = m.shape[-2:]
    area = H * W / (grid[0] * grid[1])
    return F.adaptive_avg_pool2d(m[:, None], grid)[:, 0] * area  # (B, h, w)


def score_maps(
    module: ScoreModule, images: torch.Tensor, *, fill: float | torch.Tensor = GREY,
    grid: tuple[int, int] | None = None,
) -> ScoreMaps:  # fmt: skip
    """The score, the heads' attention and the whole-score sensitivity of images (B, 3, H, W)
    in [0, 1]: ``sum over a cell of grad(score) . (image - fill)``, on ``grid`` (default: the
    attention maps' h x w). ``fill``: grey, or images of the same shape (e.g. blurred)."""
    x = images.detach().to(module.mean.device, module.mean.dtype).requires_grad_(True)
    with torch.enable_grad():
        out = module.outputs(x)
        (grad,) = torch.autograd.grad(out.score.sum(), x)
    fill = torch.as_tensor(fill, dtype=x.dtype).to(x.device)
    per_pixel = (grad * (x.detach() - fill)).sum(1)  # (B, H, W)
    grid = grid or tuple(out.attention.shape[-2:])
    sens = cell_sums(per_pixel, grid)  # (B, h, w)
    return ScoreMaps(out.score.detach(), out.step_scores.detach(), out.attention.detach(), sens)


def top_cells(m: torch.Tensor, fraction: float) -> torch.Tensor:
    """The ``fraction`` of cells of maps (B, h, w) with the highest values (ties: the first
    in row-major order) -> bool (B, h, w)."""
    B, h, w = m.shape
    k = round(fraction * h * w)
    order = torch.sort(m.reshape(B, h * w), dim=1, descending=True, stable=True).indices
    chosen = torch.zeros(B, h * w, dtype=torch.bool, device=m.device)
    chosen.scatter_(1, order[:, :k], True)  # (B, h * w)
    return chosen.view(B, h, w)


def occlude(images: torch.Tensor, cells: torch.Tensor, fill: float | torch.Tensor = GREY):
    """Images (B, 3, H, W) with the ``cells`` (bool (B, h, w), a grid over the image) replaced
    by ``fill`` (a value, or images of the same shape, e.g. blurred copies)."""
    H, W = images.shape[-2:]
    mask = F.interpolate(cells[:, None].float(), size=(H, W), mode="nearest")  # (B, 1, H, W)
    fill = torch.as_tensor(fill, dtype=images.dtype, device=images.device)
    return torch.where(mask.bool(), fill, images)


@torch.no_grad()
def occlusion_map(
    module: ScoreModule, images: torch.Tensor, *, grid: tuple[int, int] = (7, 7),
    fill: float = GREY, batch: int = 16,
) -> torch.Tensor:  # fmt: skip
    """The measured score drop when each cell of ``grid`` is greyed out in turn: images
    (B, 3, H, W) in [0, 1] -> (B, h, w), ``score(image) - score(image with the cell greyed)``."""
    h, w = grid
    one_cell = torch.eye(h * w, dtype=torch.bool, device=images.device).view(h * w, h, w)
    out = []
    for img in images:
        base = module(img[None])  # (1,)
        variants = occlude(img.expand(h * w, -1, -1, -1), one_cell, fill)  # (h * w, 3, H, W)
        scores = torch.cat([module(v) for v in variants.split(batch)])  # (h * w,)
        out.append((base - scores.to(base.device)).view(h, w))
    return torch.stack(out)  # (B, h, w)


def input_score_map(module: ScoreModule, x: torch.Tensor) -> np.ndarray:
    """The sensitivity map (h, w) of one preprocessed input (3, S, S), as ``predict`` and the
    HTTP service hold it (normalised for the trunk)."""
    unit = x.to(module.mean.device) * module.std[0] + module.mean[0]  # (3, S, S) in [0, 1]
    return score_maps(module, unit[None]).sensitivity[0].cpu().numpy()


def file_score_map(module: ScoreModule, path: str | os.PathLike) -> np.ndarray:
    """The sensitivity map (h, w) of an image file, on exactly the input ``predict`` scored
    (decoded and resized by PIL as ``predict`` does)."""
    return input_score_map(module, prepare(path, module.pp)[0])
