"""Attention maps -> pictures (numpy and PIL only).

``attention_overlays`` gives one image per attention step (the step's map upsampled smoothly
to the image, colour-mapped and blended on it); ``figure`` lays them out as in the paper: the
image, then one overlay per step with that step's score beneath, and the final score. With a
``score_map`` (``amnet.inference.maps``: the whole score's sensitivity, heads and prior) a last
panel shows it (``signed_overlay``: red where a region raises the score, blue where it lowers
it), and a line above the panels says what each is.

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

from amnet.fileio import atomic_write
from amnet.inference.images import load_image
from amnet.types import Prediction

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


def signed_overlay(image: Image.Image, m: np.ndarray, alpha: float = 0.7) -> Image.Image:
    """Blend a signed map (h, w) onto an RGB image: red where it is positive, blue where it is
    negative, as strongly as ``|m| / max |m|`` (times ``alpha``); zero leaves the image as is."""
    image = image.convert("RGB")
    a = np.asarray(m, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"map must be (h, w), got shape {a.shape}")
    top = float(np.abs(a).max()) if a.size else 0.0
    if not np.isfinite(top) or top < 1e-12:
        return image
    up = Image.fromarray(a / top).resize(image.size, Image.BICUBIC)  # mode "F"
    v = np.clip(np.asarray(up, dtype=np.float32), -1.0, 1.0)[..., None]  # (H, W, 1)
    colour = np.where(v > 0, [230.0, 20.0, 20.0], [20.0, 60.0, 230.0])  # (H, W, 3)
    w = alpha * np.abs(v)
    out = (1.0 - w) * np.asarray(image, dtype=np.float32) + w * colour
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))


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
    score_map: np.ndarray | None = None,
    heads_share: float | None = None,
) -> Image.Image:
    """The paper's layout: the image, then one overlay per step with that step's score
    beneath, and the final score (with ``title``, e.g. the file name) above them.

    ``score_map`` (h, w), the whole score's sensitivity, adds a last panel; with it or with
    ``heads_share`` (the heads' weight in the score), a line above the panels labels the
    attention steps "attention (heads, 0.2 of the score)" and the map "whole-score sensitivity"."""
    img = _fit(image.convert("RGB"), panel)
    panels = [img, *attention_overlays(img, attention, alpha)]
    captions = ["image", *(f"step {t + 1}: {s:.3f}" for t, s in enumerate(step_scores))]
    if score_map is not None:
        panels.append(signed_overlay(img, score_map))
        captions.append("red raises, blue lowers")
    font = ImageFont.load_default(size=max(10, panel // 14))
    big = ImageFont.load_default(size=max(12, panel // 11))
    line = font.size + 6
    labelled = score_map is not None or heads_share is not None
    top = big.size + 2 * _MARGIN + (line if labelled else 0)
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
    if labelled:
        _label_groups(draw, panels, len(step_scores), heads_share, top - line, font)
    return canvas


def _label_groups(draw: ImageDraw.ImageDraw, panels: list[Image.Image], steps: int,
                  heads_share: float | None, y: int, font) -> None:  # fmt: skip
    """What the attention panels and the whole-score panel show, on a line above them."""
    share = "" if heads_share is None else f", {heads_share:.2g} of the score"
    share = ": the whole score" if heads_share is not None and heads_share > 0.999 else share
    x = _MARGIN + panels[0].width + _MARGIN
    span = sum(p.width + _MARGIN for p in panels[1 : 1 + steps]) - _MARGIN
    if steps:
        draw.text((x + span // 2, y), f"attention (heads{share})", fill="black", font=font,
                  anchor="ma")  # fmt: skip
    if len(panels) > 1 + steps:
        last = panels[-1]
        draw.text((x + span + _MARGIN + last.width // 2, y), "whole-score sensitivity",
                  fill="black", font=font, anchor="ma")  # fmt: skip


def map_filename(path: str | os.PathLike) -> str:
    """A PNG name for the map of ``path``: its stem plus a hash of its absolute path, so
    ``a/x.jpg`` and ``b/x.jpg`` never collide and a rerun overwrites the same file."""
    path = os.fspath(path)
    digest = hashlib.sha1(os.fsencode(os.path.abspath(path))).hexdigest()[:8]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(path).stem)[:80] or "image"
    return f"{stem}_{digest}.png"


def save_map(
    pred: Prediction, folder: str | os.PathLike, *, panel: int = PANEL,
    score_map: np.ndarray | None = None, heads_share: float | None = None,
) -> Path:  # fmt: skip
    """Write the figure for a scored prediction of an image file into ``folder`` (with the
    whole score's sensitivity ``score_map`` and the heads' share, when given: ``figure``)."""
    if not pred.ok or pred.path is None or pred.attention is None or pred.score is None:
        raise ValueError("only a scored image file has an attention map")
    image = load_image(pred.path, draft_size=2 * panel)
    name = os.fsencode(Path(pred.path).name).decode("utf-8", "replace")
    fig = figure(image, pred.attention, pred.step_scores, pred.score, title=name, panel=panel,
                 score_map=score_map, heads_share=heads_share)  # fmt: skip
    dest = Path(folder) / map_filename(pred.path)
    with atomic_write(dest) as f:
        fig.save(f, format="PNG", optimize=False)
    return dest
