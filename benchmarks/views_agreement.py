"""Views made of the image (a trunk pass each) against views made of the trunk's map (one pass):
how closely a model's scores follow when only the place its views are made changes (issue 16).

The same checkpoint is run three ways on N photos of every kind from ../shared/datasets/pool
(every K-th, sorted) and on N LNSIM photos: its own views (4 trunk passes for the default), the
same views made of the map (``AMNet(space="features")``: one pass; the prior was fitted on
views of the image, so this is the cheap approximation, not a refit), and the image alone
(``--no-views``).
Prints the Spearman of each with the first, and each one's mean score.

    python benchmarks/views_agreement.py --n 96
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _speed_common import LNSIM  # noqa: E402

import amnet  # noqa: E402
from amnet.inference.engine import RunOptions  # noqa: E402
from amnet.model.amnet import AMNet, model_views  # noqa: E402
from amnet.training.metrics import spearman  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--n", type=int, default=96)
    args = ap.parse_args()
    pool = sorted((LNSIM.parent / "pool" / "images").rglob("*.jpg"))
    sets = {"pool": pool[:: max(1, len(pool) // args.n)][: args.n],
            "lnsim": sorted((LNSIM / "images").iterdir())[: args.n]}  # fmt: skip
    own = amnet.load(args.model)
    plain = amnet.load(args.model, options=RunOptions(views=False))
    maps = amnet.load(args.model)
    engine = maps.engine  # the same model, its views made of the map instead
    engine.model = AMNet(engine.model.trunk, engine.model.head, model_views(maps.head, True),
                         space="features")  # fmt: skip
    for name, photos in sets.items():
        with torch.inference_mode():
            a = np.array([p.score for p in own.predict(photos, batch_size=16)])
            b = np.array([p.score for p in maps.predict(photos, batch_size=16)])
            c = np.array([p.score for p in plain.predict(photos, batch_size=16)])
        print(
            f"{name} ({len(photos)} photos): views of the map vs of the image: Spearman "
            f"{spearman(b, a):.4f}, max |diff| {np.abs(b - a).max():.4f}; the image alone vs "
            f"views of the image: Spearman {spearman(c, a):.4f}, max |diff| "
            f"{np.abs(c - a).max():.4f}; means {a.mean():.3f} / {b.mean():.3f} / {c.mean():.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
