"""The general-domain ladder (issues 15 and 16): what ResMem's knowledge and views made of the
trunk's map buy, measured on both sides.

Every row is a kernel prior (Laplacian, the shipped descriptor) on ResNet-152's map, its views
made of the map (one trunk pass: ``AMNet(space="features")``) unless the row says otherwise:
- lnsim25: Spearman rho of the prior alone on the 25 test halves, everything (the prior, the
  ResMem rescaling, the penalty) fitted on each training half; distilled rows add pool photos
  whose targets are ResMem's (rescaled) scores, never an LNSIM test label;
- pool agreement: 2-fold over ../shared/datasets/pool (4,248 photos of every kind): the prior
  fitted on all 2,000 LNSIM photos (+ the other fold's pool photos when distilled), Spearman of
  its scores on the held-out fold with ResMem as its package runs it (on a fixed subset that
  ResMem scored: every 4th pool photo);
- pool spread: sd and 1st-99th percentile range of the held-out pool scores, beside ResMem's.

    python benchmarks/general_ladder.py --out runs/general-ladder

Needs the ResNet-152 feature cache of LNSIM and the pool ("orig" view; built on first use: about
12 min per 2,000 photos on 2 cores) and ResMem's wheel. Writes ladder.csv, pool.csv (per-photo
scores) and resmem.csv (ResMem's package scores, reused when there).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _speed_common import LNSIM, POOL, spread  # noqa: E402
from speed_resmem import load_resmem, resmem_tensor  # noqa: E402

from amnet.builders import build_descriptor, build_resmem_head  # noqa: E402
from amnet.training.cv import PRIOR_VIEWS, CVConfig, split_records  # noqa: E402
from amnet.training.data import read_split_file  # noqa: E402
from amnet.training.descriptors import (  # noqa: E402
    base_scores,
    block_sizes,
    map_view_features,
    store_views,
)
from amnet.training.metrics import spearman  # noqa: E402
from amnet.training.priors import KernelDescriptors  # noqa: E402
from amnet.trunks.registry import get_trunk_spec  # noqa: E402


def resmem_package(paths: list[str], out: Path) -> dict[str, float]:
    """ResMem's scores as its package computes them (256x256, centre crop 227), cached."""
    have = {}
    if out.is_file():
        have = {r["path"]: float(r["resmem"]) for r in csv.DictReader(open(out))}
    need = [p for p in paths if p not in have]
    if need:
        net = load_resmem()
        with torch.inference_mode():
            for i in range(0, len(need), 16):
                x = torch.stack([resmem_tensor(Path(p)) for p in need[i : i + 16]])
                for p, s in zip(need[i : i + 16], net(x).tolist(), strict=True):
                    have[p] = s
                print(f"resmem {i + 16}/{len(need)}", file=sys.stderr, flush=True)
        tmp = out.with_suffix(".tmp")
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "resmem"])
            w.writerows(sorted(have.items()))
        os.replace(tmp, out)
    return {p: have[p] for p in paths}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/general-ladder")
    ap.add_argument("--splits", type=int, default=25)
    ap.add_argument("--pool-every", type=int, default=1, help="every K-th pool photo (smoke runs)")
    ap.add_argument(
        "--image-only",
        action="store_true",
        help="only the rows of the image alone (no views): the fast general model",
    )
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cv = CVConfig("lnsim25", str(LNSIM), str(out))
    sets = [split_records(cv, k) for k in range(args.splits)]
    lnsim = sorted({os.fspath(r.path) for s in sets for part in s.values() for r in part})
    # all subjects' mean hit rates, as the shipped recipe fits them (the splits' halves differ)
    human = {os.fspath(r.path): r.score
             for r in read_split_file(LNSIM / "scores.txt", LNSIM / "images")}  # fmt: skip
    pool = sorted(str(p) for p in POOL.rglob("*.jpg"))[:: args.pool_every]
    folder = {p: Path(p).parent.name for p in pool}
    fold = {p: i % 2 for i, p in enumerate(pool)}
    ref = resmem_package(pool[::4], out / "resmem.csv")  # the agreement reference
    paths = lnsim + pool
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    (maps,) = store_views("resnet152", paths, ("orig",), log=log)  # one trunk pass each
    describe = build_descriptor("resnet152")
    per_view, logits = {}, None
    for v in PRIOR_VIEWS if not args.image_only else ("orig",):  # each view, described once
        per_view[v], lg = map_view_features(describe, maps, (v,))
        logits = lg if lg is not None else logits
        log(f"descriptors of view {v} {per_view[v].shape}")
    del maps
    base = build_resmem_head()
    r_all = base_scores(base, paths, logits, get_trunk_spec("resnet152").preprocess)
    sizes = block_sizes(describe, 1024, 14)

    def data(views: tuple[str, ...], with_base: bool) -> KernelDescriptors:
        X = np.mean([per_view[v] for v in views], axis=0)
        return KernelDescriptors.from_arrays(
            "resnet152", paths, views, X, sizes, base="resmem" if with_base else None, r=r_all
        )

    orig_only, orig_b = data(("orig",), False), data(("orig",), True)
    r = dict(zip(paths, r_all, strict=True))
    ref_224 = np.array([r[p] for p in ref])
    print(f"ResMem at 224 on amnet's pass vs its package, {len(ref)} pool photos: Spearman "
          f"{spearman(ref_224, list(ref.values())):.3f}, mean |diff| "
          f"{np.abs(ref_224 - np.array(list(ref.values()))).mean():.3f}")  # fmt: skip

    def plain(data: KernelDescriptors):
        return (lambda paths, y, extra=None: data.fit(paths, y)), data.predict

    def based(data: KernelDescriptors, scale: str, distil: bool, use: str = "residual"):
        """The prior with ResMem's score as ``use`` says ("residual", "block", or "teacher":
        only the distilled pool photos' targets, no base at inference)."""

        def fit(paths, y, extra=None):
            d = (extra, [r[p] for p in extra]) if distil and extra else None
            return data.fit(paths, y, scale=scale, distil=d, use=use)

        return fit, data.predict

    def distilled(data: KernelDescriptors, scale: str, r_block: bool):
        """Distilled, ResMem's score a descriptor column (``r_block``) or only the teacher."""
        return based(data, scale, True, "block" if r_block else "teacher")

    if args.image_only:  # the rows of the image alone (the fast general model)
        rows = {
            "kernel, image only (no views)": plain(orig_only),
            "kernel, image only, distilled (moments)": distilled(orig_b, "moments", False),
        }
    else:
        kd, plain4 = data(PRIOR_VIEWS, True), data(PRIOR_VIEWS, False)
        rows = {
            "kernel, image only (no views)": plain(orig_only),
            "kernel, 4 views of the map": plain(plain4),
            "+ ResMem base (regression): falls back to ResMem": based(kd, "regression", False),
            "+ ResMem base (regression), distilled on pool": based(kd, "regression", True),
            "kernel, 4 views of the map, distilled (regression)": distilled(
                kd, "regression", False
            ),
            "kernel, 4 views of the map, distilled (moments)": distilled(kd, "moments", False),
            "kernel + ResMem block, distilled (moments)": distilled(kd, "moments", True),
            "kernel + ResMem block, 2 views, distilled (moments)": distilled(
                data(PRIOR_VIEWS[:2], True), "moments", True
            ),
        }

    distil_pool = pool[1::4]  # lnsim25's distillation photos: a quarter of the pool
    table, per_photo = [], {p: {"folder": folder[p], "resmem": ref.get(p, "")} for p in pool}
    rho_r = [spearman([r[os.fspath(x.path)] for x in s["test"]], [x.score for x in s["test"]])
             for s in sets]  # fmt: skip
    table.append(
        (
            "ResMem at 224 on amnet's pass, alone",
            np.mean(rho_r),
            np.std(rho_r),
            spearman(ref_224, list(ref.values())),
            spread(np.array([r[p] for p in pool])),
        )
    )
    for name, (fit, predict) in rows.items():
        rhos = []
        for s in sets:
            tr = [os.fspath(x.path) for x in s["train"] + s["val"]]
            te = [os.fspath(x.path) for x in s["test"]]
            prior, _ = fit(tr, [x.score for x in s["train"] + s["val"]], distil_pool)
            rhos.append(spearman(predict(prior, te), [x.score for x in s["test"]]))
        scores = {}
        for f in (0, 1):
            held = [p for p in pool if fold[p] == f]
            prior, _ = fit(lnsim, [human[p] for p in lnsim], [p for p in pool if fold[p] != f])
            scores.update(zip(held, predict(prior, held), strict=True))
        s = np.array([scores[p] for p in pool])
        agree = spearman([scores[p] for p in ref], list(ref.values()))
        table.append((name, np.mean(rhos), np.std(rhos), agree, spread(s)))
        for p in pool:
            per_photo[p][name] = f"{scores[p]:.4f}"
        print(f"{name}: lnsim25 {np.mean(rhos):.3f} ± {np.std(rhos):.3f}, pool agreement "
              f"{agree:.3f}, {spread(s)}", flush=True)  # fmt: skip
    print(
        "\n| Row | lnsim25 ρ (prior alone) | agreement with ResMem, held-out pool | pool spread |"
    )
    print("|---|---|---|---|")
    for name, m, sd, agree, sp in table:
        print(f"| {name} | {m:.3f} ± {sd:.3f} | {agree:.3f} | {sp} |")
    ref_s = np.array(list(ref.values()))
    print(f"| ResMem (its package), the pool subset | | 1 | {spread(ref_s)} |")
    print("\nPer source folder (sd of the scores; agreement with ResMem on its subset):")
    for fo in sorted(set(folder.values())):
        ps = [p for p in ref if folder[p] == fo]
        line = [f"ResMem sd {np.std([ref[p] for p in ps]):.3f}"]
        for name in rows:
            mine = [float(per_photo[p][name]) for p in ps]
            line.append(f"{name}: sd {np.std(mine):.3f}, "
                        f"rho {spearman(mine, [ref[p] for p in ps]):.2f}")  # fmt: skip
        print(f"{fo} ({len(ps)} photos): " + "; ".join(line))
    with open(out / "pool.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["path", *next(iter(per_photo.values()))])
        w.writeheader()
        w.writerows({"path": p, **v} for p, v in per_photo.items())
    return 0


if __name__ == "__main__":
    sys.exit(main())
