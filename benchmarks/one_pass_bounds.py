"""How far can one trunk pass go (issue 16)? Bounds from the default's own four views.

The default averages its kernel prior's descriptor over four views of the image (the image,
its mirror image, their centre crops): four ResNet-152 passes. Issue 16 asks for its quality
(lnsim25 within 0.005) from about one pass. Every row is the default's prior (Laplacian kernel,
distilled on ``pool[1::4]`` with ResMem's scores mapped by moments, penalty by leave-one-out on
the human-scored rows), fitted on each of the 25 lnsim25 training halves and scored on the test
half:

- **the default**: four views everywhere;
- **the image alone**: one view everywhere (the one-pass model's recipe);
- **views predicted from the image**: the 4-view prior asked with the 4-view descriptor
  *predicted* from the image's own descriptor by ridge regression (closed form, penalty by
  leave-one-out), trained on the four real views of the training half's photos and of the
  distilled photos (no labels): what any one-pass "view predictor" of this kind can learn;
- **oracles** that cannot be run but bound what can: the descriptor's layer3 blocks of the image
  alone with its layer4 and classifier blocks averaged over the four views (what a perfect
  student after layer3, e.g. a fine-tuned layer4 on the one pass's layer3 map, could at best
  give), and the reverse.

Descriptors come from ``lowres_views.py``'s cache in ``--out`` (computed when missing: 2,000
LNSIM + 1,062 pool photos x 4 views, about 20 min here).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/one_pass_bounds.py --out runs/lowres-views
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _speed_common import POOL, moments  # noqa: E402
from lowres_views import Describer, cached, start  # noqa: E402

from amnet.training.descriptors import block_sizes  # noqa: E402
from amnet.training.metrics import spearman  # noqa: E402
from amnet.training.priors import block_scale, fit_kernel_prior, predict_kernel  # noqa: E402

VIEWS = ("orig", "flip", "crop4", "crop9")
PENALTIES = 10.0 ** np.arange(-3, 3.01, 0.5)  # x the mean eigenvalue of the Gram matrix


def view_predictor(S: np.ndarray, T: np.ndarray, sizes: list[int]):
    """Ridge regression (dual form) from one view's descriptors S (N, D) to the residual of
    the 4-view descriptors T (N, D) over them, in the kernel's metric; the penalty minimises
    the exact leave-one-out error. Returns (predict: S' -> T', fraction of the residual's
    variance explained, leave-one-out)."""
    mu, sc = block_scale(S, sizes)
    Z = (S - mu) * sc
    R = (T - S) * sc
    Rm = R.mean(0)
    lam, Q = np.linalg.eigh(Z @ Z.T)
    lam = np.clip(lam, 0.0, None)
    QR = Q.T @ (R - Rm)
    best = (np.inf, 0.0)
    for a in PENALTIES * lam.mean():
        d = lam / (lam + a)
        err = (R - Rm - Q @ (d[:, None] * QR)) / (1.0 - (Q**2) @ d)[:, None]
        best = min(best, (float((err**2).sum(1).mean()), float(a)))
    alpha = Q @ (QR / (lam + best[1])[:, None])  # (N, D)
    explained = 1.0 - best[0] / float(((R - Rm) ** 2).sum(1).mean())
    return (lambda Sn: Sn + (((Sn - mu) * sc) @ Z.T @ alpha + Rm) / sc), explained


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/lowres-views")
    ap.add_argument("--splits", type=int, default=25)
    args = ap.parse_args()
    out, log, sets, lnsim = start(args.out, args.splits)
    distil = sorted(str(p) for p in POOL.rglob("*.jpg"))[1::4]
    run = Describer()
    views = {
        (g, v): cached(run, out, g, paths, 224, v, resmem=v == "orig", log=log)
        for g, paths in (("lnsim", lnsim), ("distil", distil))
        for v in VIEWS
    }
    sizes = block_sizes(run.describe, 1024, 14)
    n_map = sum(sizes[:4])  # the layer3 blocks come first; layer4 and the classifier after
    r_lnsim, r_distil = np.load(out / "resmem-lnsim.npy"), np.load(out / "resmem-distil.npy")

    def mix(g: str, map_views, tail_views) -> np.ndarray:
        X = np.mean([views[g, v] for v in tail_views], axis=0)
        X[:, :n_map] = np.mean([views[g, v] for v in map_views], axis=0)[:, :n_map]
        return X

    rows = {
        "the default: 4 views": (VIEWS, VIEWS),
        "the image alone": (("orig",), ("orig",)),
        "4-view prior, asked with views predicted from the image": None,
        "oracle: layer3 of the image, layer4 + classifier of 4 views": (("orig",), VIEWS),
        "oracle: layer3 of 4 views, layer4 + classifier of the image": (VIEWS, ("orig",)),
    }
    idx = {p: i for i, p in enumerate(lnsim)}
    one = {g: views[g, "orig"] for g in ("lnsim", "distil")}
    four = {g: mix(g, VIEWS, VIEWS) for g in ("lnsim", "distil")}
    got: dict[str, list[float]] = {r: [] for r in rows}
    explained = []
    for k, s in enumerate(sets):
        tr = [idx[os.fspath(x.path)] for x in s["train"] + s["val"]]
        te = [idx[os.fspath(x.path)] for x in s["test"]]
        y = np.array([x.score for x in s["train"] + s["val"]], np.float64)
        truth = [x.score for x in s["test"]]
        targets = np.concatenate([y, moments(y, r_lnsim[tr], r_distil)])
        for name, how in rows.items():
            if how is None:  # the default's prior, asked with predicted descriptors
                S = np.vstack([one["lnsim"][tr], one["distil"]])
                T = np.vstack([four["lnsim"][tr], four["distil"]])
                predict, ex = view_predictor(S, T, sizes)
                explained.append(ex)
                X_fit = (four["lnsim"][tr], four["distil"])
                X_test = predict(one["lnsim"][te])
            else:
                X_lnsim = mix("lnsim", *how)
                X_fit, X_test = (X_lnsim[tr], mix("distil", *how)), X_lnsim[te]
            prior, _ = fit_kernel_prior(nn.Identity(), np.vstack(X_fit), targets, sizes,
                                        "laplace", rows=np.arange(len(tr)))  # fmt: skip
            got[name].append(spearman(predict_kernel(prior, X_test), truth))
        log(f"split {k}: " + ", ".join(f"{v[-1]:.3f}" for v in got.values()))
    ref = np.array(got["the default: 4 views"])
    print("\n| row | lnsim25 ρ | vs the default (paired) | splits above the default |")
    print("|---|---|---|---|")
    for name, v in got.items():
        v = np.array(v)
        print(f"| {name} | {v.mean():.4f} ± {v.std():.4f} | {np.mean(v - ref):+.4f} | "
              f"{int(np.sum(v > ref))}/{len(v)} |")  # fmt: skip
    print(
        f"\nview predictor: {np.mean(explained):.3f} of the 4-view residual's variance "
        "explained (leave-one-out, mean over splits)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
