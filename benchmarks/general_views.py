"""Views of the image (a trunk pass each) or the image alone (one pass), with and without
ResMem's knowledge: what each costs and buys on natural scenes and on everyday photos
(issues 15 and 16). Every row is the kernel prior alone.

- lnsim25: mean Spearman rho (tie-aware) on the 25 test halves; everything (the kernel, the
  penalty by leave-one-out on the human-scored rows, ResMem's rescaling, a teacher) is fitted
  on each training half. Distilled rows add the photos ``pool[1::4]`` (1,062, sorted paths)
  with ResMem's scores (its head on amnet's own trunk pass) mapped onto LNSIM's scale
  ("moments": LNSIM's mean and sd on the training half). No LNSIM photo is distilled.
- agreement on LNSIM: Spearman, on each test half, of the row's scores with ResMem as its
  package computes it (mean over the 25 halves): how much LaMem knowledge the row keeps on
  natural scenes.
- pool: the photos ``pool[0::4]`` (1,062), never fitted on. Each row is fitted on all 2,000
  LNSIM photos (+ ``pool[1::4]`` when distilled) and scores them: Spearman with ResMem as its
  package computes it, Spearman with the reference row (the 4-view distilled prior), and the
  spread (sd, 1st-99th percentile) of the scores. ``--folds 4``: each quarter ``pool[q::4]``
  held out in turn (distilled: ``pool[q+1::4]``; a student's extra photos: the other two),
  the columns over all 4,248 held-out scores.
- students (``--student``): the image alone fitted to a teacher's scores (a row with views) on
  extra photos ``pool[2::4]`` and ``pool[3::4]`` (2,124; their 4 views must be cached), besides
  LNSIM's human scores and the distilled photos; and, to tell the teacher from the number of
  photos, the image alone distilled from ResMem on all three quarters.

Needs the ResNet-152 feature caches of LNSIM and of ``pool[0::4]`` + ``pool[1::4]`` in the
views orig, flip, crop4 and crop9 (built on first use: ~13 min per view per 4,000 photos on 2
cores). ResMem's package scores are computed when missing (``runs/general-ladder/resmem.csv``,
``OUT/resmem-lnsim.csv``; ~4 photos/s). Writes per-view descriptors (``desc-*.npy``, reused)
and pool.csv to --out.

    python benchmarks/general_views.py --out runs/general-views
    python benchmarks/general_views.py --student --folds 4 --out runs/general-views
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _speed_common import LNSIM, POOL, lnsim25_sets, spread  # noqa: E402
from general_ladder import resmem_package  # noqa: E402

from amnet.builders import build_descriptor, build_resmem_head  # noqa: E402
from amnet.training.data import read_split_file  # noqa: E402
from amnet.training.descriptors import (  # noqa: E402
    base_scores,
    block_sizes,
    map_view_features,
    store_views,
)
from amnet.training.metrics import spearman  # noqa: E402
from amnet.training.priors import fit_kernel_prior, predict_kernel  # noqa: E402
from amnet.trunks.registry import get_trunk_spec  # noqa: E402

VIEWS = ("orig", "flip", "crop4", "crop9")  # the default's four views of the image


def descriptors(paths: list[str], name: str, out: Path, describe, log) -> tuple[dict, np.ndarray]:
    """Per-view descriptors {view: (N, D)} of ``paths`` (``describe`` of the trunk's cached
    maps) and ResMem-at-224's scores (N,), computed once and kept in ``out``."""
    got, r_file = {}, out / f"desc-{name}-resmem.npy"
    for v in VIEWS:
        f = out / f"desc-{name}-{v}.npy"
        if not f.exists():
            t = time.time()
            (maps,) = store_views("resnet152", paths, (v,), log=log)
            X, logits = map_view_features(describe, maps, ("orig",))  # the map as it is
            del maps
            if v == "orig" and not r_file.exists():
                r = base_scores(build_resmem_head(), paths, logits,
                                get_trunk_spec("resnet152").preprocess)  # fmt: skip
                np.save(r_file, r.astype(np.float64))
            np.save(f, X.astype(np.float32))
            log(f"descriptors {name}/{v} {X.shape} in {time.time() - t:.0f}s")
        got[v] = np.load(f)
        if len(got[v]) != len(paths):
            raise SystemExit(f"{f} holds {len(got[v])} rows, not {len(paths)}: remove it")
    return got, np.load(r_file)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/general-views")
    ap.add_argument("--splits", type=int, default=25)
    ap.add_argument("--student", action="store_true", help="add the student rows")
    ap.add_argument("--rows", help="only the rows whose names contain one of these "
                    "(comma-separated)")  # fmt: skip
    ap.add_argument("--weights", help="also weigh the distilled rows of the 4-view prior: "
                    "each of these weights (comma-separated), and the one leave-one-out on "
                    "the human-scored rows chooses")  # fmt: skip
    ap.add_argument("--folds", type=int, choices=(1, 4), default=1, help="pool columns: 1 "
                    "fold (held out: pool[0::4]) or 4 (each quarter held out in turn)")  # fmt: skip
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    sets, lnsim = lnsim25_sets(out, args.splits)
    human = {os.fspath(r.path): r.score
             for r in read_split_file(LNSIM / "scores.txt", LNSIM / "images")}  # fmt: skip
    pool = sorted(str(p) for p in POOL.rglob("*.jpg"))
    # fold q: held out pool[q::4], distilled pool[q+1::4], a student's extra photos the rest
    folds = [(pool[q::4], pool[(q + 1) % 4 :: 4], sorted(pool[(q + 2) % 4 :: 4] +
              pool[(q + 3) % 4 :: 4])) for q in range(args.folds)]  # fmt: skip
    held, distil, rest = folds[0]
    extra = rest if args.student else []
    held_all = [p for h, _, _ in folds for p in h]
    # ResMem as its package computes it: held-out pool photos, LNSIM (computed when missing)
    ref = resmem_package(held_all, Path("runs/general-ladder/resmem.csv"))
    ref = np.array([ref[p] for p in held_all])
    ref_lnsim = resmem_package(lnsim, out / "resmem-lnsim.csv")
    describe = build_descriptor("resnet152")
    L, rL = descriptors(lnsim, "lnsim", out, describe, log)
    P, rP = descriptors(held + distil, "pool", out, describe, log)
    E, rE = (descriptors(rest, "extra", out, describe, log) if args.student or args.folds > 1
             else (dict.fromkeys(VIEWS), None))  # fmt: skip
    order = lnsim + held + distil + (rest if rE is not None else [])
    idx = {p: i for i, p in enumerate(order)}
    V = {v: np.vstack([a for a in (L[v], P[v], E[v]) if a is not None]) for v in VIEWS}
    r = np.concatenate([a for a in (rL, rP, rE) if a is not None])
    assert len(r) == len(order) and all(len(a) == len(order) for a in V.values())
    sizes = block_sizes(describe, 1024, 14)

    def X(views, paths):
        rows = [idx[p] for p in paths]
        return np.mean([V[v][rows] for v in views], axis=0)

    def resmem_targets(paths, y, photos):
        """ResMem's scores of ``photos`` mapped onto the scale of the LNSIM ``paths``' targets
        y: the same mean and sd on those photos ("moments")."""
        rr = r[[idx[p] for p in paths]]
        a = np.std(y) / rr.std()
        return a * r[[idx[p] for p in photos]] + np.mean(y) - a * rr.mean()

    def fit(views, paths, y, distilled, teacher=None, ask=None, weight=1.0, loo=False):
        """Prior on ``views`` fitted on LNSIM ``paths`` (targets y) [+ the distilled photos,
        ResMem mapped by moments, each row weighted ``weight``] [+ the extra photos, the
        ``teacher``'s scores]; it scores the views ``ask`` (default: ``views``). ``loo``:
        return (scorer, leave-one-out rho on the human-scored rows) instead."""
        y = np.asarray(y, np.float64)
        xs, ts = [X(views, paths)], [y]
        if distilled:
            xs.append(X(views, distil))
            ts.append(resmem_targets(paths, y, distil))
        if teacher is not None:
            xs.append(X(views, extra))
            ts.append(teacher)
        w = None if weight == 1.0 else np.r_[np.ones(len(paths)), np.full(len(distil), weight)]
        prior, rho = fit_kernel_prior(describe, np.vstack(xs), np.concatenate(ts), sizes,
                                      "laplace", rows=np.arange(len(paths)), weights=w)  # fmt: skip
        scorer = lambda paths: predict_kernel(prior, X(ask or views, paths))  # noqa: E731
        return (scorer, rho) if loo else scorer

    rows = {  # name: (views, distilled, teacher row or None)
        "LNSIM only, the image alone (the old `--no-views`)": (("orig",), False, None),
        "LNSIM only, 4 views of the image (the old default's prior)": (VIEWS, False, None),
        "distilled, the image alone (`amnet-general-resnet152`'s prior)": (("orig",), True, None),
        "distilled, 4 views of the image": (VIEWS, True, None),
        "the same, asked with the image alone (the default with `--no-views`)": (
            VIEWS,
            True,
            None,
            ("orig",),
        ),  # fmt: skip
    }
    if args.student:
        rows["distilled on 3 times the photos, the image alone"] = (("orig",), True, "resmem")
        rows["student of the 4-view distilled prior, the image alone"] = (
            ("orig",), True, "distilled, 4 views of the image")  # fmt: skip
        rows["student of the 4-view LNSIM-only prior, the image alone"] = (
            ("orig",),
            False,
            "LNSIM only, 4 views of the image (the old default's prior)",
        )

    def teacher_scores(teacher, paths, y):
        """A student's targets on the extra photos: ResMem's, mapped ("resmem"), or a teacher
        row's prior fitted on the same LNSIM ``paths``; None without a teacher."""
        if teacher == "resmem":  # more distilled photos
            return resmem_targets(paths, np.asarray(y, np.float64), extra)
        if teacher is None:
            return None
        tv, td, *_ = rows[teacher]
        return fit(tv, paths, y, td)(extra)

    def on_pool(score) -> np.ndarray:
        """``score()`` (a prior fitted on all of LNSIM and this fold's pool photos, scoring
        its held-out ones) on every fold in turn, the scores concatenated."""
        nonlocal held, distil, extra
        got = []
        for h, d, e in folds:
            held, distil, extra = h, d, e if args.student else []
            got.append(score())
        held, distil, extra = folds[0][0], folds[0][1], folds[0][2] if args.student else []
        return np.concatenate(got)

    reference = "distilled, 4 views of the image"
    if args.rows:  # only these rows (and the reference, for the pool column)
        rows = {k: v for k, v in rows.items() if k == reference or
                any(w in k for w in args.rows.split(","))}  # fmt: skip
    table, scores = [], {}
    hy = np.array([human[p] for p in lnsim])  # every LNSIM photo's human score
    for name, (views, distilled, teacher, *ask) in rows.items():
        ask = ask[0] if ask else None
        t, rhos, agree = time.time(), [], []
        for s in sets:
            tr = [os.fspath(x.path) for x in s["train"] + s["val"]]
            y = [x.score for x in s["train"] + s["val"]]
            te = [os.fspath(x.path) for x in s["test"]]
            ty = teacher_scores(teacher, tr, y)  # a teacher fitted on this half too
            got = fit(views, tr, y, distilled, ty, ask)(te)
            rhos.append(spearman(got, [x.score for x in s["test"]]))
            agree.append(spearman(got, [ref_lnsim[p] for p in te]))
        s = on_pool(lambda v=views, d=distilled, te=teacher, a=ask: fit(
            v, lnsim, hy, d, teacher_scores(te, lnsim, hy), a)(held))  # fmt: skip
        scores[name] = s
        table.append((name, np.mean(rhos), np.std(rhos), np.mean(agree), spearman(s, ref),
                      spread(s)))  # fmt: skip
        log(f"{name}: lnsim25 {np.mean(rhos):.4f} ± {np.std(rhos):.4f}, ResMem on LNSIM "
            f"{np.mean(agree):.3f}, on the pool {table[-1][4]:.3f}, {table[-1][5]} "
            f"({time.time() - t:.0f}s)")  # fmt: skip
    if args.weights:  # the distilled rows' weight: each fixed, and chosen per fit by LOO
        grid = [float(w) for w in args.weights.split(",")]
        t, test, loo, agree = time.time(), [], [], []
        for s in sets:
            tr = [os.fspath(x.path) for x in s["train"] + s["val"]]
            y = [x.score for x in s["train"] + s["val"]]
            te, ty = [os.fspath(x.path) for x in s["test"]], [x.score for x in s["test"]]
            fits = [fit(VIEWS, tr, y, True, weight=w, loo=True) for w in grid]
            test.append([spearman(f(te), ty) for f, _ in fits])
            agree.append([spearman(f(te), [ref_lnsim[p] for p in te]) for f, _ in fits])
            loo.append([rho for _, rho in fits])
        test, loo, agree = np.array(test), np.array(loo), np.array(agree)  # (splits, weights)
        pick = loo.argmax(1)
        full_loo = [fit(VIEWS, lnsim, hy, True, weight=w, loo=True)[1] for w in grid]  # fold 0
        chosen = int(np.argmax(full_loo))
        for j, w in enumerate(grid):
            name = f"distilled, 4 views, distilled rows weighted {w:g}"
            scores[name] = on_pool(lambda w=w: fit(VIEWS, lnsim, hy, True, weight=w)(held))
            table.append((name, test[:, j].mean(), test[:, j].std(), agree[:, j].mean(),
                          spearman(scores[name], ref), spread(scores[name])))  # fmt: skip
        name = f"distilled, 4 views, weight chosen by leave-one-out from {args.weights}"
        at = np.arange(len(sets)), pick
        scores[name] = scores[f"distilled, 4 views, distilled rows weighted {grid[chosen]:g}"]
        table.append((name, test[at].mean(), test[at].std(), agree[at].mean(),
                      spearman(scores[name], ref), spread(scores[name])))  # fmt: skip
        log(
            f"weights {grid}: chosen per split {[grid[k] for k in pick]}; on all LNSIM "
            f"{grid[chosen]} (LOO {[round(r, 4) for r in full_loo]}) ({time.time() - t:.0f}s)"
        )
    print(f"\n| Row | lnsim25 ρ (prior alone) | Spearman with ResMem, LNSIM test halves | "
          f"Spearman with ResMem, held-out pool ({len(held_all)}, {args.folds} fold(s)) | with "
          "the 4-view distilled prior | pool spread |\n|---|---|---|---|---|---|")  # fmt: skip
    for name, m, sd, lnsim_agree, agree, sp in table:
        print(f"| {name} | {m:.3f} ± {sd:.3f} | {lnsim_agree:.3f} | {agree:.3f} | "
              f"{spearman(scores[name], scores[reference]):.3f} | {sp} |")  # fmt: skip
    print(f"| ResMem (its package) | | 1 | 1 | {spearman(ref, scores[reference]):.3f} | "
          f"{spread(ref)} |")  # fmt: skip
    folder = np.array([Path(p).parent.name for p in held_all])
    print("\nPer source folder, held-out pool (sd; Spearman with ResMem):")
    for fo in sorted(set(folder)):
        m = folder == fo
        cells = [f"ResMem sd {ref[m].std():.3f}"] + [
            f"{n.split(',')[0][:40]}…: sd {scores[n][m].std():.3f}, "
            f"rho {spearman(scores[n][m], ref[m]):.2f}" for n in rows]  # fmt: skip
        print(f"- {fo} ({m.sum()}): " + "; ".join(cells))
    with open(out / ("pool.csv" if not args.rows else "pool-some-rows.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "resmem", *rows])
        w.writerows([p, f"{ref[i]:.4f}", *(f"{scores[n][i]:.4f}" for n in rows)]
                    for i, p in enumerate(held_all))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
