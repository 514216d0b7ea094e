"""The input pipeline: decoding + resizing throughput (0, 1, 2 threads) on real photos against
the model's throughput, and PIL's JPEG draft mode on large photos: its speed, how much it
changes the input tensors, and how much it changes the scores (Spearman, draft on vs off).

    python benchmarks/pipeline.py --n 256 --large 64

Large photos: LNSIM's own photos whose short side exceeds 896 px (draft mode only applies
there), plus ``--large`` LNSIM photos upscaled to 4032x3024 (a 12 MP phone photo's size) and
saved as JPEG quality 92 in a temp folder.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _speed_common import LNSIM, Timer, header, model_path, photos  # noqa: E402

import amnet  # noqa: E402
from amnet.inference.images import iter_images  # noqa: E402


def decode(paths: list[Path], pp, workers: int) -> torch.Tensor:
    return torch.stack([i.tensor for i in iter_images(paths, pp, workers=workers)])


def large_photos(k: int) -> list[Path]:
    real = [p for p in sorted((LNSIM / "images").iterdir()) if min(Image.open(p).size) > 896]
    folder = Path(tempfile.gettempdir()) / "amnet-bench-12mp"
    folder.mkdir(exist_ok=True)
    made = []
    for p in photos(k, offset=1000):
        out = folder / p.name
        if not out.is_file():
            img = Image.open(p).convert("RGB")
            size = (4032, 3024) if img.width >= img.height else (3024, 4032)
            img.resize(size, Image.BICUBIC).save(out, quality=92)
        made.append(out)
    return real + made


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=256, help="photos for decoding throughput")
    ap.add_argument("--large", type=int, default=64, help="12 MP photos made for draft mode")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, trained = model_path()
    header(f"input pipeline; model {model} ({'trained' if trained else 'untrained head'})")
    p = amnet.load(model)
    pp = p.preprocess
    paths = photos(args.n)
    print(
        f"decoding + resizing {args.n} LNSIM photos (mostly 500x333 JPEG) to {pp.size}x{pp.size}:"
    )
    for workers in (0, 1, 2):
        t = Timer()
        t.time(lambda w=workers: decode(paths, pp, w), args.n)
        print(f"  {workers} threads: {t.rate:7.1f} images/s  load {t.load}", flush=True)

    big = large_photos(args.large)
    n_real = len(big) - args.large
    print(f"\ndraft mode on {len(big)} large JPEGs ({n_real} LNSIM photos with a short side "
          f"> 896 px, {args.large} made at 4032x3024):")  # fmt: skip
    xs, timers = {}, {}
    for draft in (True, False, True, False):  # twice each, alternating; the last pair counts
        timers[draft] = Timer()
        xs[draft] = timers[draft].time(
            lambda d=draft: decode(big, replace(pp, draft=d), 2), len(big)
        )
    for draft in (True, False):
        print(f"  draft {'on ' if draft else 'off'}: {timers[draft].rate:6.1f} images/s  "
              f"load {timers[draft].load}")  # fmt: skip
    diff = (xs[True] - xs[False]).abs()  # (N, 3, S, S) on the [0, 1] scale
    print(f"  input change: mean |diff| {diff.mean():.4f}, 99th percentile "
          f"{diff.flatten().quantile(0.99) if diff.numel() < 16e6 else diff.max():.4f} "
          f"(on the [0, 1] scale; 1/255 = 0.0039)")  # fmt: skip
    from scipy.stats import spearmanr

    with torch.inference_mode():
        s = {d: np.array([r.score for b in xs[d].split(32) for r in p.predict_tensors(b)])
             for d in (True, False)}  # fmt: skip
    rho = spearmanr(s[True], s[False]).statistic
    for name, idx in (("LNSIM large", slice(0, n_real)), ("12 MP made", slice(n_real, None))):
        d = np.abs(s[True][idx] - s[False][idx])
        print(f"  scores, {name}: max |diff| {d.max():.2e}, mean {d.mean():.2e}")
    print(f"  Spearman(draft on, draft off) over all {len(big)}: {rho:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
