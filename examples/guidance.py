"""Raise (or lower) a photo's memorability score by projected gradient ascent on the pixels.

    python examples/guidance.py examples/chelsea.jpg                 # +4/255 at most, 10 steps
    python examples/guidance.py examples/chelsea.jpg --eps 8 --lower --out guided/

Each pixel moves by at most EPS/255 (an L-infinity budget). Writes OUT/<name>-before.png and
OUT/<name>-after.png (8-bit PNG: a JPEG would undo an edit this small) and prints the scores.

The new score is adversarial: the edit finds what this model responds to, not what people
remember. See docs/guidance-and-maps.md (a second model's verdict on such edits).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import amnet
from amnet.inference.images import load_image


def edit(score: torch.nn.Module, x: torch.Tensor, eps, steps: int = 10, sign=1.0) -> torch.Tensor:
    """Projected gradient ascent (``sign`` -1: descent) on images x (B, 3, H, W) in [0, 1]:
    each step moves every pixel by eps/4 along the sign of the score's gradient, then clips
    to the box ``|y - x| <= eps`` and to [0, 1]. ``eps`` and ``sign``: numbers or one per image.
    Returns the edited images rounded to 8 bits (still within eps when eps is k/255)."""
    eps = torch.as_tensor(eps, dtype=x.dtype).view(-1, 1, 1, 1)  # (B or 1, 1, 1, 1)
    sign = torch.as_tensor(sign, dtype=x.dtype).view(-1, 1, 1, 1)
    y = x.clone()
    for _ in range(steps):
        y.requires_grad_(True)
        (grad,) = torch.autograd.grad(score(y).sum(), y)
        with torch.no_grad():
            y = y + sign * eps / 4 * grad.sign()
            y = torch.minimum(torch.maximum(y, x - eps), x + eps).clamp(0.0, 1.0)
    return (y.detach() * 255).round() / 255


def to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB image -> (1, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]


def to_image(x: torch.Tensor) -> Image.Image:
    """(1, 3, H, W) in [0, 1], on the 8-bit grid -> RGB image."""
    return Image.fromarray((x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("photo")
    ap.add_argument("--eps", type=float, default=4, help="budget per pixel, in 1/255 (4)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--lower", action="store_true", help="make it less memorable")
    ap.add_argument("--out", default="guided", help="folder for the two PNGs (guided/)")
    ap.add_argument("--model", default="default")
    args = ap.parse_args(argv)

    predictor = amnet.load(args.model)
    score = predictor.as_module()  # images in [0, 1] -> scores, differentiable
    x = to_tensor(load_image(args.photo))
    y = edit(score, x, args.eps / 255, args.steps, -1.0 if args.lower else 1.0)

    out, name = Path(args.out), Path(args.photo).stem
    out.mkdir(parents=True, exist_ok=True)
    before, after = out / f"{name}-before.png", out / f"{name}-after.png"
    to_image(x).save(before)
    to_image(y).save(after)
    s0, s1 = (r.score for r in predictor.predict([before, after]))  # the files, as saved
    print(f"{args.photo}: score {s0:.4f} -> {s1:.4f} ({s1 - s0:+.4f}) within {args.eps:g}/255 "
          f"in {args.steps} steps; wrote {before} and {after}")  # fmt: skip


if __name__ == "__main__":
    main()
