"""A shipped model scored on pool photos it never saw in training
(issue 15): its whole score (heads + prior, as ``amnet predict`` computes it) on the
even-numbered half of ../shared/datasets/pool (sorted paths; the odd half is what the general
model was distilled on: ``--distil-every 2 --distil-start 1``), against ResMem as its package
runs it (the photos benchmarks/general_ladder.py scored: every 4th), overall and per source
folder, with the score spread beside ResMem's.

    python benchmarks/general_ladder.py --out runs/general-ladder   # writes resmem.csv first
    python benchmarks/general_pool.py --model amnet-general-resnet152

Runs from the feature caches: the trunk's "orig" maps of the pool for a model whose views are
made of the map; each view's maps (built when missing: a trunk pass per view and photo) for a
model whose views are made of the image.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _speed_common import POOL  # noqa: E402

from amnet.checkpoint import load_checkpoint, resolve_model  # noqa: E402
from amnet.model.amnet import head_views, model_views  # noqa: E402
from amnet.model.views import apply_view  # noqa: E402
from amnet.training.descriptors import store_views  # noqa: E402
from amnet.training.metrics import spearman  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="amnet-general-resnet152")
    ap.add_argument("--resmem", default="runs/general-ladder/resmem.csv")
    args = ap.parse_args()
    head, meta = load_checkpoint(resolve_model(args.model))
    pool = sorted(str(p) for p in POOL.rglob("*.jpg"))[0::2]
    ref = {r["path"]: float(r["resmem"]) for r in csv.DictReader(open(args.resmem))}
    views = model_views(head, True)
    on_map = getattr(head, "view_space", "image") == "features"
    maps = store_views(meta["trunk"], pool, ("orig",) if on_map else views, log=lambda m: None)
    scores = []
    with torch.inference_mode():
        for i in range(0, len(pool), 32):
            got = [torch.from_numpy(np.asarray(m[i : i + 32], np.float32)) for m in maps]
            if on_map:  # the views made of the one map (b, C, H, W)
                out = head_views(head, {v: apply_view(got[0], v) for v in views})
            else:  # each view's own trunk pass, from the caches
                out = head_views(head, dict(zip(views, got, strict=True)))
            scores.append(out.score.double().numpy())
    s = dict(zip(pool, np.concatenate(scores), strict=True))
    common = [p for p in pool if p in ref]
    ours, theirs = np.array([s[p] for p in common]), np.array([ref[p] for p in common])
    print(f"{args.model} on {len(pool)} held-out pool photos; ResMem on {len(common)} of them")
    print(f"agreement with ResMem (Spearman) {spearman(ours, theirs):.3f}")
    all_s = np.array(list(s.values()))
    lo, hi = np.percentile(all_s, [1, 99])
    rlo, rhi = np.percentile(theirs, [1, 99])
    print(f"spread: ours sd {all_s.std():.3f} (1st-99th pct {lo:.2f}-{hi:.2f}, mean "
          f"{all_s.mean():.3f}); ResMem sd {theirs.std():.3f} ({rlo:.2f}-{rhi:.2f}, mean "
          f"{theirs.mean():.3f})")  # fmt: skip
    print("| folder | photos (ResMem) | agreement | sd ours | sd ResMem |\n|---|---|---|---|---|")
    for folder in sorted({Path(p).parent.name for p in pool}):
        ps = [p for p in common if Path(p).parent.name == folder]
        mine = [s[p] for p in pool if Path(p).parent.name == folder]
        print(f"| {folder} | {len(mine)} ({len(ps)}) | {spearman([s[p] for p in ps], [ref[p] for p in ps]):.3f} | "  # noqa: E501
              f"{np.std(mine):.3f} | {np.std([ref[p] for p in ps]):.3f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
