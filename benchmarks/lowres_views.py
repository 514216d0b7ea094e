"""Views of the image at a lower resolution (issue 16): can several smaller trunk passes stand in
for the default's four 224x224 ones at the cost of about one?

The default averages the kernel prior's descriptor over four views of the 224x224 image (itself,
its mirror image and their centre crops): four ResNet-152 passes, 0.41x ResMem's speed. A pass
at S x S costs (S/224)^2 of one at 224 (160: 0.51, 128: 0.33, 112: 0.25), so two views at 160
or four at 112 cost about one pass at 224. Each row here is the kernel prior alone on views
``size:view`` (e.g. ``160:orig+160:flip``), fitted as the default is (Laplacian kernel, penalty
by leave-one-out on the human-scored rows):

- lnsim25: mean Spearman rho (tie-aware) on the 25 test halves, fitted on each training half;
  ``--distil`` adds the photos ``pool[1::4]`` (1,062, sorted paths) with ResMem's scores (its
  head on the 224 pass, as the default's recipe) mapped onto the training half's scale (mean
  and sd: "moments"). No LNSIM test label enters a fit.
- pool (``--pool``, with ``--distil``): fitted on all 2,000 LNSIM photos + ``pool[1::4]``,
  the row scores the held-out ``pool[0::4]``: Spearman with the shipped default's scores there
  (``amnet.load("default")``; ``AMNET_REFERENCE`` names another shipped model, e.g. the
  previous default) and with ResMem as its package computes it
  (``runs/general-ladder/resmem.csv``, computed when missing), and the spread. With
  ``--folds K`` (2 or 4), each of the first K quarters ``pool[k::4]`` is held out in turn
  (fitted on all LNSIM photos + the next of them, distilled): Spearman with ResMem over all
  their photos (2,124 or 4,248), and spread.
- ``|lite2:VIEWS`` after a row's views appends EfficientNet-Lite2's block (``EXTRA_BLOCKS``,
  as the default's prior sees it) averaged over its own VIEWS; ``--int8`` scores with the
  support vectors as a checkpoint with ``support="int8"`` stores them.

Descriptors are computed from the images (float32, no feature cache) and kept per
(set, size, view) in ``--out`` (``desc-*.npy``), so a killed run resumes at the last whole file.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/lowres_views.py --out runs/lowres-views
    OMP_WAIT_POLICY=PASSIVE python benchmarks/lowres_views.py --distil --out runs/lowres-views \\
        --rows "224:orig;240:orig+240:flip+240:crop4+240:crop9" [--pool]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _speed_common import (  # noqa: E402
    POOL,
    default_trunk_and_descriptor,
    lnsim25_sets,
    moments,
    spread,
)

from amnet.builders import build_image_descriptor, build_resmem_head  # noqa: E402
from amnet.inference.images import batched_images, iter_images  # noqa: E402
from amnet.model.prior import EXTRA_BLOCKS  # noqa: E402
from amnet.model.views import apply_view  # noqa: E402
from amnet.training.descriptors import base_scores, block_sizes  # noqa: E402
from amnet.training.metrics import spearman  # noqa: E402
from amnet.training.priors import fit_kernel_prior, predict_kernel  # noqa: E402
from amnet.trunks.registry import get_trunk_spec  # noqa: E402

ROWS = (  # views as size:view, '+'-joined; ';' between rows
    "224:orig;224:orig+224:flip;160:orig;160:orig+160:flip;128:orig+128:flip+128:crop4;"
    "112:orig+112:flip+112:crop4+112:crop9;224:orig+112:flip"
)


class Describer:
    """Images -> the default's descriptor (B, D) at any input size, as the torch engine runs
    the trunk (BatchNorm folded, channels-last); ImageNet logits too. With ``extra`` (a trunk
    name), that second trunk's descriptor instead (``EXTRA_BLOCKS``, as ``KernelPrior``'s
    ``extra`` sees the images), and no logits."""

    def __init__(self, extra: str | None = None) -> None:
        self.pp = get_trunk_spec("resnet152").preprocess
        self.prefix = "desc" if extra is None else extra.replace("efficientnet_", "")
        self.extra = extra is not None
        if extra is None:
            self.trunk, self.describe = default_trunk_and_descriptor()
        else:
            self.trunk = torch.nn.Identity()
            self.describe = build_image_descriptor(extra, EXTRA_BLOCKS, self.pp)

    @torch.inference_mode()
    def __call__(self, paths, size: int, view: str, log) -> tuple[np.ndarray, np.ndarray]:
        pp = dataclasses.replace(self.pp, size=size)
        X, L, t = [], [], time.time()
        for items in batched_images(iter_images(paths, pp, workers=2), 32):
            bad = [it.source for it in items if it.error is not None]
            if bad:
                raise SystemExit(f"unreadable: {bad[:3]}")
            x = apply_view(torch.stack([it.tensor for it in items]), view)
            m = self.trunk(x.contiguous(memory_format=torch.channels_last))
            if self.extra:  # a second trunk's descriptor of the images: no logits
                d, lg = self.describe(m), torch.zeros(len(m), 0)
            else:
                d, lg = self.describe.forward_with_logits(m)
            X.append(d.float().numpy())
            L.append(lg.float().numpy())
            if len(X) % 10 == 0:
                log(f"  {size}:{view} {sum(map(len, X))}/{len(paths)} ({time.time() - t:.0f}s)")
        return np.concatenate(X), np.concatenate(L)


def cached(run: Describer, out: Path, group: str, paths: list[str], size: int, view: str, *,
           resmem: bool = False, log=print) -> np.ndarray:  # fmt: skip
    """The descriptors (N, D) of ``paths`` at ``size:view``, kept in ``out/desc-{group}-s{size}-
    {view}.npy`` (computed when missing, written atomically). ``resmem``: also keep ResMem's
    head's scores of the same pass in ``out/resmem-{group}.npy`` (the distillation targets)."""
    f, rf = out / f"{run.prefix}-{group}-s{size}-{view}.npy", out / f"resmem-{group}.npy"
    if not f.exists() or (resmem and not rf.exists()):
        t = time.time()
        X, lg = run(paths, size, view, log)
        np.save(f.with_suffix(".tmp.npy"), X)
        os.replace(f.with_suffix(".tmp.npy"), f)
        if resmem:  # ResMem at 224 on our pass: the distillation targets
            r = base_scores(build_resmem_head(), paths, lg, run.pp)
            np.save(rf.with_suffix(".tmp.npy"), r)
            os.replace(rf.with_suffix(".tmp.npy"), rf)
        log(f"{f.name} {X.shape} in {time.time() - t:.0f}s")
    return np.load(f)


def start(out: str, splits: int):
    """Threads, the output folder, a stderr logger and the lnsim25 splits: (out, log, the
    splits, every LNSIM photo they hold)."""
    torch.set_num_threads(int(os.environ.get("AMNET_THREADS", "2")))
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    return (folder, lambda m: print(m, file=sys.stderr, flush=True),
            *lnsim25_sets(folder, splits))  # fmt: skip


def views_of(row: str) -> list[tuple[int, str]]:
    """The ResNet-152 views of a row, (size, view) each."""
    main = row.partition("|")[0]
    return [(int(s), v) for s, v in (part.split(":") for part in main.split("+"))]


def extra_views_of(row: str) -> list[str]:
    """The views (at 224) EfficientNet-Lite2 sees in a row ("...|lite2:orig+flip"), if any."""
    extra = row.partition("|")[2]
    if extra and not extra.startswith("lite2:"):
        raise SystemExit(f"a row's second trunk is 'lite2:VIEWS', got {extra!r}")
    return extra.removeprefix("lite2:").split("+") if extra else []


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/lowres-views")
    ap.add_argument("--rows", default=ROWS, help="';'-separated rows of '+'-joined size:view")
    ap.add_argument("--splits", type=int, default=25)
    ap.add_argument("--distil", action="store_true", help="distil ResMem on pool[1::4]; the "
                    "pool columns on pool[0::4]")  # fmt: skip
    ap.add_argument(
        "--pool",
        action="store_true",
        help="with --distil: the held-out pool "
        "columns (pool[0::4]: Spearman with the default and with ResMem, spread)",
    )
    ap.add_argument("--folds", type=int, choices=(2, 4), help="with --pool: the first K "
                    "quarters of the pool each held out in turn (distilled: the next of them), "
                    "Spearman with ResMem over all their photos")  # fmt: skip
    ap.add_argument("--int8", action="store_true", help="score with the support vectors "
                    "stored as a checkpoint with support='int8' stores them")  # fmt: skip
    args = ap.parse_args()
    out, log, sets, lnsim = start(args.out, args.splits)
    pool = sorted(str(p) for p in POOL.rglob("*.jpg"))
    held, distil = pool[0::4], pool[1::4]
    rows = [r for r in args.rows.split(";") if r]
    need = sorted({sv for r in rows for sv in views_of(r)})
    if args.pool and not args.distil:
        raise SystemExit("--pool needs --distil")
    groups = {"lnsim": lnsim, **({"distil": distil} if args.distil else {}),
              **({"held": held} if args.pool else {})}  # fmt: skip
    if args.folds and not args.pool:
        raise SystemExit("--folds needs --pool")
    quarters = ("held", "distil", "q2", "q3")[: args.folds or 0]  # pool[k::4], by name
    groups.update({f"q{k}": pool[k::4] for k in (2, 3) if k < len(quarters)})
    folded = [p for k in range(len(quarters)) for p in pool[k::4]]
    run = Describer()
    D: dict[tuple[str, int, str], np.ndarray] = {}
    for g, paths in groups.items():
        teach = args.distil and (g != "held" or args.folds)  # a distilled set: ResMem's targets
        todo = set(need) | ({(224, "orig")} if teach else set())
        for size, view in sorted(todo):
            resmem = teach and (size, view) == (224, "orig")
            D[g, size, view] = cached(run, out, g, paths, size, view, resmem=resmem, log=log)
    sizes = block_sizes(run.describe, 1024, 14)
    lite = sorted({v for r in rows for v in extra_views_of(r)})
    if lite:
        run2 = Describer("efficientnet_lite2")
        for g, paths in groups.items():
            for view in lite:
                D[g, 0, view] = cached(run2, out, g, paths, 224, view, log=log)
        with torch.inference_mode():
            m = run2.describe.trunk(torch.rand(1, 3, 224, 224))
            sizes2 = [p.shape[1] for p in run2.describe.describe.parts(m)]
    idx = {p: i for i, p in enumerate(lnsim)}
    r_lnsim = np.load(out / "resmem-lnsim.npy") if args.distil else None
    r_of = {g: np.load(out / f"resmem-{g}.npy") for g in groups if g != "lnsim"
            and (out / f"resmem-{g}.npy").exists()} if args.distil else {}  # fmt: skip

    def X(group: str, row: str, rows_=None) -> np.ndarray:
        a = np.mean([D[group, s, v] for s, v in views_of(row)], axis=0)
        if extra_views_of(row):  # EfficientNet-Lite2's block, averaged over its own views
            a = np.hstack([a, np.mean([D[group, 0, v] for v in extra_views_of(row)], axis=0)])
        return a if rows_ is None else a[rows_]

    def fit(row: str, tr: list[str], y: np.ndarray, distilled: str = "distil"):
        rows_ = [idx[p] for p in tr]
        xs, ts = [X("lnsim", row, rows_)], [y]
        if args.distil:  # ResMem's scores of pool[1::4] (or another quarter) on y's scale
            xs.append(X(distilled, row))
            ts.append(moments(y, r_lnsim[rows_], r_of[distilled]))
        prior, loo = fit_kernel_prior(
            run.describe, np.vstack(xs), np.concatenate(ts),
            sizes + (sizes2 if extra_views_of(row) else []), "laplace", rows=np.arange(len(tr)),
        )  # fmt: skip
        if args.int8:  # as a checkpoint stores them: int8, a step per column
            from amnet.checkpoint import int8_support

            q = int8_support(prior.support)
            prior.support.copy_(q["prior.support_int8"].float() * q["prior.support_step"])
            prior.support_sq.copy_(q["prior.support_sq"])
        return prior, loo

    ref = ref_resmem = None
    if args.pool:  # (--folds needs --pool)
        from general_ladder import resmem_package

        from amnet.checkpoint import get_model_entry

        shipped = os.environ.get("AMNET_REFERENCE", get_model_entry("default").name)
        ref = default_scores(held, shipped, out / f"default-held-{shipped}.csv", log)
        got = resmem_package(
            folded or held,  # folded holds held
            Path("runs/general-ladder/resmem.csv"),
        )
        ref_resmem = np.array([got[p] for p in held])
        ref_all = np.array([got[p] for p in folded])
    print("\n| views (size:view) | relative trunk cost | lnsim25 ρ (prior alone) |"
          + (" Spearman with the default, held-out pool | with ResMem | pool spread |"
             if args.pool else "")
          + (f" with ResMem, {len(folded)} pool photos ({args.folds} folds) | spread |"
             if args.folds else "")
          + "\n|---|---|---|" + ("---|---|---|" if args.pool else "")
          + ("---|---|" if args.folds else ""))  # fmt: skip
    human = {os.fspath(r.path): r.score for s in sets[:1] for p in s.values() for r in p}
    per_row: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # row -> (rho, leave-one-out rho)
    for row in rows:
        t, rhos, loos = time.time(), [], []
        for s in sets:
            tr = [os.fspath(x.path) for x in s["train"] + s["val"]]
            y = np.array([x.score for x in s["train"] + s["val"]], np.float64)
            prior, loo = fit(row, tr, y)
            te = [idx[os.fspath(x.path)] for x in s["test"]]
            rhos.append(spearman(predict_kernel(prior, X("lnsim", row, te)),
                                 [x.score for x in s["test"]]))  # fmt: skip
            loos.append(loo)
        per_row[row] = np.array(rhos), np.array(loos)
        cost = f"{sum((s / 224) ** 2 for s, _ in views_of(row)):.2f}"
        cost += f" + {len(extra_views_of(row))} Lite2" if extra_views_of(row) else ""
        cells = f"| {row} | {cost} | {np.mean(rhos):.4f} ± {np.std(rhos):.4f} |"
        if args.pool:
            prior, _ = fit(row, lnsim, np.array([human[p] for p in lnsim], np.float64))
            got = predict_kernel(prior, X("held", row))
            cells += (f" {spearman(got, ref):.4f} | {spearman(got, ref_resmem):.3f} | "
                      f"{spread(got)} |")  # fmt: skip
            name = row.replace(":", "_").replace("+", "-").replace("|", "_")
            with open(out / f"held-{name}.csv", "w") as f:
                csv.writer(f).writerows(zip(held, got, strict=True))
            log(f"{row} by folder: {by_folder(held, got, ref_resmem)}")
        if args.folds:  # each quarter held out in turn, the next one distilled
            y_all = np.array([human[p] for p in lnsim], np.float64)
            scored = {}
            for k, g in enumerate(quarters):
                prior, _ = fit(row, lnsim, y_all, quarters[(k + 1) % len(quarters)])
                scored.update(zip(pool[k::4], predict_kernel(prior, X(g, row)), strict=True))
            s_all = np.array([scored[p] for p in folded])
            cells += f" {spearman(s_all, ref_all):.3f} | {spread(s_all)} |"
        print(cells, flush=True)
        log(f"{row}: {time.time() - t:.0f}s")
    if args.pool:
        print(f"| `{shipped}` (shipped) | | | 1 | {spearman(ref, ref_resmem):.3f} | "
              f"{spread(ref)} |" + (" | |" if args.folds else ""))  # fmt: skip
    first, (r0, l0) = rows[0], per_row[rows[0]]
    for row in rows[1:]:  # the other rows against the first, split by split
        r1, l1 = per_row[row]
        pick = np.where(l1 > l0, r1, r0)  # chosen on each training half by leave-one-out
        print(f"\n{row} vs {first}: {np.mean(r1 - r0):+.4f} (higher on {int(np.sum(r1 > r0))}"
              f"/{len(r0)} test halves); the better by leave-one-out on each training half: "
              f"{pick.mean():.4f} ({row} on {int(np.sum(l1 > l0))}/{len(r0)})")  # fmt: skip
    return 0


def by_folder(paths: list[str], got: np.ndarray, ref: np.ndarray) -> str:
    """Per pool folder: the photos, the scores' sd, their Spearman with ResMem, ResMem's sd."""
    folders = np.array([Path(p).relative_to(POOL).parts[0] for p in paths])
    return "; ".join(
        f"{f} ({int(np.sum(folders == f))}): sd {got[folders == f].std():.3f}, "
        f"ρ {spearman(got[folders == f], ref[folders == f]):.2f}, ResMem sd "
        f"{ref[folders == f].std():.3f}"
        for f in sorted(set(folders))
    )


def default_scores(paths: list[str], model: str, file: Path, log) -> np.ndarray:
    """A shipped model's scores of ``paths`` (as ``amnet.load`` runs it), kept in ``file``."""
    if not file.exists():
        import amnet

        t, model = time.time(), amnet.load(model)
        got = {}
        for i in range(0, len(paths), 32):
            for p, pr in zip(paths[i : i + 32], model.predict(paths[i : i + 32]), strict=True):
                got[p] = pr.score
            log(f"  default {len(got)}/{len(paths)} ({time.time() - t:.0f}s)")
        tmp = file.with_suffix(".tmp")
        with open(tmp, "w", newline="") as f:
            csv.writer(f).writerows((p, f"{got[p]:.6f}") for p in paths)
        os.replace(tmp, file)
    got = {p: float(s) for p, s in csv.reader(open(file))}
    return np.array([got[p] for p in paths])


if __name__ == "__main__":
    sys.exit(main())
