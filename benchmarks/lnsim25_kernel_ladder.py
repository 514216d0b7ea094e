"""The lnsim25 ladder, part 2 (issue 4): from the ridge prior to the kernel prior of the shipped
model, one descriptor block at a time; Spearman rho and MSE on the 25 test halves.

Each row fits per split on the training half (train + validation tenth) only: ridge with its
penalty by exact leave-one-out (``amnet.training.priors.ridge_loo``), or RBF kernel ridge on
the first blocks of ``amnet.model.prior.BLOCKS`` (``fit_kernel_prior``: penalty by exact
leave-one-out, width by the median heuristic). Descriptors average the original and mirrored
views unless the row says otherwise. The blended rows take the AMNet head's test predictions
(flip augmentation and test-time flips) from ``amnet cv``:

    amnet cv --protocol lnsim25 --root ../shared/datasets/lnsim \\
        --config configs/lnsim25-cpu.json --variants amnet,amnet+kernel,kernel \\
        --out runs/lnsim25-views
    python benchmarks/lnsim25_kernel_ladder.py --head runs/lnsim25-views --out runs/ladder-kernel

The last rows (this session's recipe) change the kernel to a Laplacian one, average the
descriptor over the centre crops too (views orig, flip, crop4, crop9 of ``amnet.model.views``) and,
with ``--extra``, append EfficientNet-Lite2's descriptor (a second trunk).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _speed_common import LNSIM  # noqa: E402

from amnet.builders import build_descriptor  # noqa: E402
from amnet.training.cache import FeatureSet, FeatureStore  # noqa: E402
from amnet.training.cv import (  # noqa: E402
    KERNEL_VIEWS,
    PRIOR_MIX,
    CVConfig,
    markdown_table,
    read_predictions,
    result_row,
    split_records,
    write_results,
)
from amnet.training.descriptors import extra_kernel_features, kernel_features, store_views
from amnet.training.priors import fit_kernel_prior, pooled, predict_kernel, ridge_loo

STEPS = (  # (row name, number of leading BLOCKS); BLOCKS order is the order of the ladder
    ("kernel: sqrt pooled layer3 (map_mean)", 1),
    ("+ centre of layer3 (map_centre)", 2),
    ("+ top and bottom halves of layer3", 4),
    ("+ pooled layer4 (tail_mean)", 5),
    ("+ centre of layer4 (tail_centre)", 6),
    ("+ ImageNet log-probabilities (tail_logprob): the kernel prior", 7),
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=str(LNSIM))
    ap.add_argument("--head", default="runs/lnsim25-views", help="amnet cv output with amnet")
    ap.add_argument("--out", default="runs/ladder-kernel")
    ap.add_argument("--splits", type=int, default=25)
    ap.add_argument("--extra", default="efficientnet_lite2", help="second trunk ('' for none)")
    args = ap.parse_args()
    root, out = Path(args.root), Path(args.out)
    cv = CVConfig("lnsim25", str(root), str(out))
    sets = [split_records(cv, k) for k in range(args.splits)]
    paths = sorted({r.path for s in sets for p in s.values() for r in p})
    store = FeatureStore("resnet152", paths, flip=True, log=lambda m: print(m, file=sys.stderr))
    t0 = time.time()
    describe = build_descriptor("resnet152")
    X2, sizes = kernel_features(describe, store.views[:2])  # (N, D), both views averaged
    X1, _ = kernel_features(describe, store.views[:1])  # the original view alone
    P3 = pooled(FeatureSet(store.views[:2], np.zeros(len(store.views[0]))))  # (N, 1024)
    edges = np.cumsum([0, *sizes])
    print(f"# descriptors {X2.shape} of 2 views in {time.time() - t0:.0f}s", flush=True)
    t0 = time.time()
    order = sorted(store.index, key=store.index.get)  # the store's row order
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    X4, _ = kernel_features(describe, store_views("resnet152", order, KERNEL_VIEWS, have=store,
                                                  log=log))  # fmt: skip
    print(f"# descriptors {X4.shape} of {KERNEL_VIEWS} in {time.time() - t0:.0f}s", flush=True)
    if args.extra:
        E4, esizes = extra_kernel_features(args.extra, order, KERNEL_VIEWS, log=log)
        XE, sizes_e = np.hstack([X4, E4]), sizes + esizes
    rows: list[dict] = []

    def add(name: str, k: int, pred: np.ndarray, y: np.ndarray, seconds: float) -> None:
        rows.append(result_row(name, k, pred, y, seconds))

    for k, s in enumerate(sets):
        start = len(rows)  # this split's rows are rows[start:]
        fit_recs = [r for r in s["train"] + s["val"] if os.fspath(r.path) in store.index]
        test_recs = [r for r in s["test"] if os.fspath(r.path) in store.index]
        itr = np.array([store.index[os.fspath(r.path)] for r in fit_recs])
        ite = np.array([store.index[os.fspath(r.path)] for r in test_recs])
        y, yt = np.array([r.score for r in fit_recs]), np.array([r.score for r in test_recs])
        t = time.time()
        w, b, _, _ = ridge_loo(P3[itr], y)
        add("ridge, pooled layer3 (LOO), flips: the previous prior", k, P3[ite] @ w + b, yt,
            time.time() - t)  # fmt: skip
        for name, n in STEPS:
            t = time.time()
            cols = slice(0, edges[n])
            prior, _ = fit_kernel_prior(describe, X2[itr, cols], y, sizes[:n])
            pred = predict_kernel(prior, X2[ite, cols])
            add(name, k, pred, yt, time.time() - t)
        t = time.time()
        prior, _ = fit_kernel_prior(describe, X1[itr], y, sizes)
        add("the kernel prior without test-time flips", k, predict_kernel(prior, X1[ite]), yt,
            time.time() - t)  # fmt: skip
        head = read_predictions(Path(args.head) / "predictions" / f"amnet-split{k}.csv")
        a = np.array([head[r.image_id] for r in test_recs])
        add("AMNet head (flips), for reference", k, a, yt, 0)
        m = PRIOR_MIX["amnet+kernel"]
        for mix in (0.5, m):
            add(f"AMNet head x {1 - mix:.1f} + kernel prior x {mix:.1f}", k,
                (1 - mix) * a + mix * pred, yt, 0)  # fmt: skip
        loo, preds = {}, {}
        two = "Laplacian kernel (2 views)"
        four = "Laplacian kernel, 4 views (+ centre crop and its mirror): the new prior"
        for name, X, sz in (
            ("Laplacian kernel, original view only", X1, sizes),
            (two, X2, sizes),
            (four, X4, sizes),
            *([(f"... + {args.extra} head and log-probs (second trunk)", XE, sizes_e)]
              if args.extra else []),
        ):  # fmt: skip
            t = time.time()
            prior, loo[name] = fit_kernel_prior(describe, X[itr], y, sz, "laplace")
            preds[name] = predict_kernel(prior, X[ite])
            add(name, k, preds[name], yt, time.time() - t)
        new = preds[four]
        best = max((two, four), key=loo.get)  # chosen on the training half alone
        add("2 or 4 views, whichever has the higher leave-one-out rho on the training half", k,
            preds[best], yt, 0)  # fmt: skip
        add(f"AMNet head x {1 - m:.1f} + the new prior x {m:.1f}: shipped", k,
            (1 - m) * a + m * new, yt, 0)  # fmt: skip
        print(f"split {k}: " + ", ".join(f"{float(r['rho']):.3f}" for r in rows[start:]),
              flush=True)  # fmt: skip
    write_results(out, rows)
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
