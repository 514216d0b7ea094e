"""A shipped model with views made of the map, scored on pool photos it never saw in training
(issue 15): its whole score (heads + prior, as ``amnet predict`` computes it) on the
even-numbered half of ../shared/datasets/pool (sorted paths; the odd half is what the general
model was distilled on: ``--distil-every 2 --distil-start 1``), against ResMem as its package
runs it (the photos benchmarks/general_ladder.py scored: every 4th), overall and per source
folder, with the score spread beside ResMem's.

    python benchmarks/general_ladder.py --out runs/general-ladder   # writes resmem.csv first
    python benchmarks/general_pool.py --model amnet-general-resnet152

Runs from the feature cache (the trunk's "orig" maps of the pool, built by the ladder): the
model's views are made of the map, so the cached map is all it needs besides its own layers.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _speed_common import LNSIM  # noqa: E402

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
    if getattr(head, "view_space", "image") != "features":
        sys.exit(f"{args.model} makes its views of the image: this benchmark needs map views")
    pool = sorted(str(p) for p in (LNSIM.parent / "pool" / "images").rglob("*.jpg"))[0::2]
    ref = {r["path"]: float(r["resmem"]) for r in csv.DictReader(open(args.resmem))}
    (maps,) = store_views(meta["trunk"], pool, ("orig",), log=lambda m: None)
    views = model_views(head, True)
    scores = []
    with torch.inference_mode():
        for i in range(0, len(pool), 32):
            m = torch.from_numpy(np.asarray(maps[i : i + 32], np.float32))  # (b, C, H, W)
            out = head_views(head, {v: apply_view(m, v) for v in views})
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
