"""Attention maps -> pictures (numpy and PIL only).

``attention_overlays`` gives one image per attention step (the step's map upsampled smoothly
to the image, colour-mapped and blended on it); ``figure`` lays them out as in the paper: the
image, then one overlay per step with that step's score beneath, and the final score.

>>> pred = amnet.load().predict("cat.jpg")  # doctest: +SKIP
>>> image = load_image("cat.jpg")  # doctest: +SKIP
>>> fig = figure(image, pred.attention, pred.step_scores, pred.score)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .hub import atomic_write
from .images import load_image
from .predict import Prediction

PANEL = 224  # height of one panel in a figure, in pixels
_MARGIN = 8


def jet(v: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) -> RGB uint8 (..., 3) with the classic 'jet' colour map
    (blue = low, red = high), as in the paper's figures."""
    v = np.clip(np.asarray(v, dtype=np.float32), 0.0, 1.0)[..., None]  # (..., 1)
    centres = np.array([3.0, 2.0, 1.0], dtype=np.float32)  # r, g, b
    rgb = np.clip(1.5 - np.abs(4.0 * v - centres), 0.0, 1.0)  # (..., 3)
    return (rgb * 255.0 + 0.5).astype(np.uint8)


def heatmap(attention: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One attention map (h, w) -> (H, W) float32 in [0, 1] for an image of ``size`` = (W, H).

    Upsampled with bicubic interpolation (smooth, not blocky), then stretched so the least
    attended location is 0 and the most attended is 1 (a uniform map gives all zeros)."""
    a = np.asarray(attention, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"attention map must be (h, w), got shape {a.shape}")
    lo, hi = float(a.min()), float(a.max())
    if not np.isfinite([lo, hi]).all() or hi - lo < 1e-12:
        return np.zeros((size[1], size[0]), dtype=np.float32)
    a = (a - lo) / (hi - lo)
    up = Image.fromarray(a).resize(size, Image.BICUBIC)  # mode "F": float32
    return np.clip(np.asarray(up, dtype=np.float32), 0.0, 1.0)  # (H, W); bicubic overshoots


def overlay(image: Image.Image, attention: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """Blend the colour-mapped attention map (h, w) onto an RGB image; ``alpha`` is the heat
    map's weight."""
    image = image.convert("RGB")
    heat = jet(heatmap(attention, image.size))  # (H, W, 3)
    base = np.asarray(image, dtype=np.float32)
    out = (1.0 - alpha) * base + alpha * heat.astype(np.float32)
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))


def attention_overlays(
    image: Image.Image, attention: np.ndarray, alpha: float = 0.5
) -> list[Image.Image]:
    """One overlay per step for attention maps (T, h, w), each the size of ``image``."""
    att = np.asarray(attention)
    if att.ndim != 3:
        raise ValueError(f"attention must be (T, h, w), got shape {att.shape}")
    return [overlay(image, att[t], alpha) for t in range(att.shape[0])]


def _fit(image: Image.Image, height: int) -> Image.Image:
    """Scale to ``height`` (width at most 2.5x that, for panoramas), keeping the aspect ratio."""
    w, h = image.size
    s = min(height / h, 2.5 * height / w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return image.resize(size, Image.LANCZOS, reducing_gap=3.0) if size != image.size else image


def figure(
    image: Image.Image,
    attention: np.ndarray,
    step_scores: Sequence[float],
    score: float,
    *,
    title: str = "",
    panel: int = PANEL,
    alpha: float = 0.5,
) -> Image.Image:
    """The paper's layout: the image, then one overlay per step with that step's score
    beneath, and the final score (with ``title``, e.g. the file name) above them."""
    img = _fit(image.convert("RGB"), panel)
    panels = [img, *attention_overlays(img, attention, alpha)]
    captions = ["image", *(f"step {t + 1}: {s:.3f}" for t, s in enumerate(step_scores))]
    font = ImageFont.load_default(size=max(10, panel // 14))
    big = ImageFont.load_default(size=max(12, panel // 11))
    line = font.size + 6
    top = big.size + 2 * _MARGIN
    width = sum(p.width for p in panels) + _MARGIN * (len(panels) + 1)
    canvas = Image.new("RGB", (width, top + img.height + line + _MARGIN), "white")
    draw = ImageDraw.Draw(canvas)
    head = f"score {score:.3f}" + (f" (mean of {len(step_scores)} steps)" if step_scores else "")
    draw.text((_MARGIN, _MARGIN), f"{title}  {head}" if title else head, fill="black", font=big)
    x = _MARGIN
    for p, caption in zip(panels, captions, strict=True):
        canvas.paste(p, (x, top))
        draw.text(
            (x + p.width // 2, top + p.height + 4), caption, fill="black", font=font, anchor="ma"
        )
        x += p.width + _MARGIN
    return canvas


def map_filename(path: str | os.PathLike) -> str:
    """A PNG name for the map of ``path``: its stem plus a hash of its absolute path, so
    ``a/x.jpg`` and ``b/x.jpg`` never collide and a rerun overwrites the same file."""
    path = os.fspath(path)
    digest = hashlib.sha1(os.fsencode(os.path.abspath(path))).hexdigest()[:8]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(path).stem)[:80] or "image"
    return f"{stem}_{digest}.png"


def save_map(pred: Prediction, folder: str | os.PathLike, *, panel: int = PANEL) -> Path:
    """Write the figure for a scored prediction of an image file into ``folder``."""
    if not pred.ok or pred.path is None or pred.attention is None or pred.score is None:
        raise ValueError("only a scored image file has an attention map")
    image = load_image(pred.path, draft_size=2 * panel)
    name = os.fsencode(Path(pred.path).name).decode("utf-8", "replace")
    fig = figure(image, pred.attention, pred.step_scores, pred.score, title=name, panel=panel)
    dest = Path(folder) / map_filename(pred.path)
    with atomic_write(dest) as f:
        fig.save(f, format="PNG", optimize=False)
    return dest
