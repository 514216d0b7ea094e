"""The lnsim25 quality ladder (issue 4): each step towards a better LNSIM model, its Spearman
rho and MSE on the 25 test halves, and its cost.

Inputs (each made by the command beside it in the README):
  --plain  runs/lnsim25       `amnet cv --protocol lnsim25 ... --no-flip` (the paper's head)
  --flip   runs/lnsim25-flip  `amnet cv --protocol lnsim25 ... --variants amnet` (flip aug + TTA;
                              its per-split test predictions are blended below)
  --resmem runs/resmem        `python benchmarks/resmem_lnsim25.py` (ResMem zero-shot scores
                              and its fc7/fc9/fc11 activations, a representation learnt on LaMem)
and the cached ResNet-152 layer3 maps of both views (built by `amnet cv`).

Rows computed here, per split, with no test image in any choice: ridge regression on pooled
layer3 features (alpha on the validation tenth, as `amnet cv`'s floor), with test-time flips,
with alpha by leave-one-out on the whole training half, with layer4 pooled features added
(layer4 run once over the cached layer3 maps), with ResMem's fc activations added (the fc layer
chosen per split by leave-one-out rho on the training half), and equal-weight averages of the
AMNet head's predictions with the ridge predictions. The human row is Spearman(hrs1, hrs2) on
the test half: one half of the participants predicting the other.

    python benchmarks/lnsim25_ladder.py --out runs/ladder
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _speed_common import LNSIM  # noqa: E402

from amnet.training.cache import FeatureStore  # noqa: E402
from amnet.training.cv import (  # noqa: E402
    CVConfig,
    markdown_table,
    read_predictions,
    result_row,
    ridge_floor,
    split_records,
    write_results,
)
from amnet.training.data import read_isola  # noqa: E402
from amnet.training.priors import ridge_loo  # noqa: E402
from amnet.trunks.registry import load_classifier  # noqa: E402


def ridge(X: np.ndarray, y: np.ndarray) -> tuple[callable, float]:
    """amnet.training.priors.ridge_loo as (predict, leave-one-out rho): the shipped prior's fit."""
    w, b, _, rho = ridge_loo(X, y)
    return (lambda Z: Z @ w + b), rho


@torch.inference_mode()
def pooled(views: list[np.ndarray], net=None, batch: int = 32) -> np.ndarray:
    """Mean over views of globally pooled maps (N, C); with ``net``, of net(map) instead."""
    out = []
    for v in views:
        parts = []
        for i in range(0, len(v), batch):
            x = torch.from_numpy(np.asarray(v[i : i + batch], np.float32))  # (B, C, H, W)
            parts.append((net(x) if net is not None else x).mean((2, 3)).numpy())
        out.append(np.concatenate(parts))
    return np.mean(out, axis=0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=str(LNSIM))
    ap.add_argument("--plain", default="runs/lnsim25")
    ap.add_argument("--flip", default="runs/lnsim25-flip")
    ap.add_argument("--resmem", default="runs/resmem")
    ap.add_argument("--out", default="runs/ladder")
    ap.add_argument("--splits", type=int, default=25)
    args = ap.parse_args()
    torch.set_num_threads(2)
    root, out = Path(args.root), Path(args.out)
    cv = CVConfig("lnsim25", str(root), str(out))
    sets = [split_records(cv, k) for k in range(args.splits)]
    paths = sorted({r.path for s in sets for p in s.values() for r in p})
    store = FeatureStore("resnet152", paths, flip=True, log=lambda m: print(m, file=sys.stderr))
    names = [Path(p).name for p in paths if os.fspath(p) in store.index]
    row_of = {n: i for i, n in enumerate(names)}
    t0 = time.time()
    P3 = pooled(store.views)  # (N, 1024), both views averaged
    t_p3 = time.time() - t0
    t0 = time.time()
    P4 = pooled(store.views, load_classifier("resnet152").layer4)  # (N, 2048)
    t_p4 = time.time() - t0
    z = np.load(Path(args.resmem) / "resmem-lnsim.npz")
    rm_row = {n: i for i, n in enumerate(z["names"])}
    order = [rm_row[n] for n in names]
    fc = {k: z[k][order].astype(np.float32) for k in ("fc7", "fc9", "fc11")}
    print(f"# one-off features for {len(names)} images x 2 views: pooled layer3 {t_p3:.0f}s, "
          f"layer4 over the cached maps {t_p4:.0f}s", flush=True)  # fmt: skip

    with open(Path(args.plain) / "results.csv", newline="") as f:
        plain = {(r["model"], int(r["split"])): r for r in csv.DictReader(f)}
    with open(Path(args.resmem) / "results.csv", newline="") as f:
        resmem_rows = {int(r["split"]): r for r in csv.DictReader(f)}
    rows: list[dict] = []

    def add(name: str, k: int, pred: np.ndarray, y: np.ndarray, seconds: float) -> None:
        rows.append(result_row(name, k, pred, y, seconds))

    for k, s in enumerate(sets):
        start = len(rows)  # this split's rows are rows[start:]
        train, val, test = (store.featureset(s[p]) for p in ("train", "val", "test"))
        y = test.targets
        ite = [row_of[Path(r.path).name] for r in s["test"] if r.image_id in set(test.ids)]
        itv = [row_of[Path(r.path).name] for r in s["train"] + s["val"]]
        ytv = np.array([r.score for r in s["train"] + s["val"]])
        hrs1 = {r.image_id: r.score for r in read_isola(str(root), k, 1)}
        add("human (hrs1 vs hrs2)", k, np.array([hrs1[i] for i in test.ids]), y, 0)
        rows.append({**plain[("amnet", k)], "model": "AMNet head (paper), no flips"})
        rows.append({**plain[("ridge", k)], "model": "ridge, pooled layer3 (the floor)"})
        t = time.time()
        add("+ test-time flip", k, ridge_floor(train, val, test), y, time.time() - t)
        t = time.time()
        f3, _ = ridge(P3[itv], ytv)
        r3 = f3(P3[ite])
        add("+ alpha by leave-one-out on the training half", k, r3, y, time.time() - t)
        t = time.time()
        X34 = np.concatenate([P3, P4], 1)
        add("+ pooled layer4", k, ridge(X34[itv], ytv)[0](X34[ite]), y, time.time() - t)
        t = time.time()
        fits = [ridge(np.concatenate([P3[itv], fc[n][itv]], 1), ytv) + (n,) for n in fc]
        f_rm, _, layer = max(fits, key=lambda f: f[1])
        r_rm = f_rm(np.concatenate([P3[ite], fc[layer][ite]], 1))
        add("ridge, pooled layer3 + ResMem fc (LaMem transfer)", k, r_rm, y, time.time() - t)
        flip = read_predictions(Path(args.flip) / "predictions" / f"amnet-split{k}.csv")
        a = np.array([flip[i] for i in test.ids])
        add("AMNet head + flip augmentation and TTA", k, a, y, 0)
        add("AMNet (flips) + ridge (LOO), averaged", k, (a + r3) / 2, y, 0)
        add("AMNet (flips) + ridge with ResMem fc, averaged", k, (a + r_rm) / 2, y, 0)
        rows.append({**resmem_rows[k], "model": "ResMem zero-shot"})
        print(f"split {k}: " + ", ".join(f"{float(r['rho']):.3f}" for r in rows[start:]),
              flush=True)  # fmt: skip
    write_results(out, rows)
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
