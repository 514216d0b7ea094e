"""What the test-time views buy, on the 25 lnsim25 test halves (issue 6's speed/quality choice):
the shipped recipe's Laplacian kernel prior (fitted on descriptors averaged over the views
orig, flip, crop4, crop9) asked with the image alone (what ``--no-views`` does) or with all four
views (the default), and EfficientNet-Lite2's prior (the fast model's trunk) fitted and asked
with 1, 2 or 4 views. Everything is fitted per split on the training half; the blended rows take
the AMNet heads' test predictions written by ``amnet cv`` (ResNet-152: flip augmentation and
test-time flips, so for ``--no-views`` the blend is slightly optimistic; EfficientNet: no flips):

    amnet cv --protocol lnsim25 --root ../shared/datasets/lnsim \\
        --config configs/lnsim25-cpu.json --variants amnet,amnet+kernel,kernel \\
        --out runs/lnsim25-views
    amnet cv --protocol lnsim25 --root ../shared/datasets/lnsim \\
        --config configs/lnsim25-cpu.json --trunk efficientnet_lite2 --no-flip \\
        --variants amnet,amnet+kernel,kernel --out runs/lnsim25-eff-lap
    python benchmarks/lnsim25_views.py --out runs/lnsim25-views-speed

Uses the feature caches of both trunks for the four views (built by the commands above or on
first use: about 12 minutes per view for ResNet-152 on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _speed_common import LNSIM  # noqa: E402

from amnet.builders import build_descriptor  # noqa: E402
from amnet.training.cv import (  # noqa: E402
    PRIOR_MIX,
    PRIOR_VIEWS,
    CVConfig,
    markdown_table,
    read_predictions,
    result_row,
    split_records,
    write_results,
)
from amnet.training.descriptors import block_sizes, describe_views, store_views
from amnet.training.priors import fit_kernel_prior, predict_kernel


def view_descriptors(trunk: str, paths: list[str]):
    """Each view's descriptors (N, D) of the images ``paths``, the descriptor's block sizes and
    the descriptor."""
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    maps = store_views(trunk, paths, PRIOR_VIEWS, log=log)
    describe = build_descriptor(trunk)
    desc = {v: describe_views(describe, [m]) for v, m in zip(PRIOR_VIEWS, maps, strict=True)}
    return desc, block_sizes(describe, maps[0].shape[1], maps[0].shape[-1]), describe


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=str(LNSIM))
    ap.add_argument("--head", default="runs/lnsim25-views", help="amnet cv output (resnet152)")
    ap.add_argument("--eff-head", default="runs/lnsim25-eff-lap", help="... (efficientnet_lite2)")
    ap.add_argument("--out", default="runs/lnsim25-views-speed")
    ap.add_argument("--splits", type=int, default=25)
    args = ap.parse_args()
    cv = CVConfig("lnsim25", args.root, args.out)
    sets = [split_records(cv, k) for k in range(args.splits)]
    paths = sorted({os.fspath(r.path) for s in sets for part in s.values() for r in part})
    index = {p: i for i, p in enumerate(paths)}
    res, res_sizes, res_describe = view_descriptors("resnet152", paths)
    eff, eff_sizes, eff_describe = view_descriptors("efficientnet_lite2", paths)
    mean = lambda d, views: np.mean([d[v] for v in views], axis=0)  # noqa: E731
    r4 = mean(res, PRIOR_VIEWS)
    effs = {n: mean(eff, PRIOR_VIEWS[:n]) for n in (1, 2, 4)}
    mix = PRIOR_MIX["amnet+kernel"]
    rows: list[dict] = []
    for k, s in enumerate(sets):
        start = len(rows)
        fit, test = s["train"] + s["val"], s["test"]
        itr = np.array([index[os.fspath(r.path)] for r in fit])
        ite = np.array([index[os.fspath(r.path)] for r in test])
        y, yt = np.array([r.score for r in fit]), np.array([r.score for r in test])

        def add(name: str, pred: np.ndarray, heads: Path, k=k, test=test, yt=yt) -> None:
            rows.append(result_row(name, k, pred, yt, 0))
            h = read_predictions(heads / "predictions" / f"amnet-split{k}.csv")
            a = np.array([h[r.image_id] for r in test])
            rows.append(result_row(f"{name}, blended with the heads", k,
                                   (1 - mix) * a + mix * pred, yt, 0))  # fmt: skip

        prior, _ = fit_kernel_prior(
            res_describe, r4[itr], y, res_sizes, "laplace", views=PRIOR_VIEWS
        )
        add("resnet152 4-view prior asked with the image alone (--no-views)",
            predict_kernel(prior, res["orig"][ite]), Path(args.head))  # fmt: skip
        add("resnet152 4-view prior asked with its 4 views (default)",
            predict_kernel(prior, r4[ite]), Path(args.head))  # fmt: skip
        for n, X in effs.items():
            prior, _ = fit_kernel_prior(eff_describe, X[itr], y, eff_sizes, "laplace",
                                        views=PRIOR_VIEWS[:n])  # fmt: skip
            add(f"efficientnet_lite2 prior, {n} view(s) {PRIOR_VIEWS[:n]}",
                predict_kernel(prior, X[ite]), Path(args.eff_head))  # fmt: skip
        print(f"split {k}: " + ", ".join(f"{float(r['rho']):.3f}" for r in rows[start:]),
              flush=True)  # fmt: skip
    write_results(Path(args.out), rows)
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
