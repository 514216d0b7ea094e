"""Do the maps explain the score? Deletion and insertion curves (issue 18).

For each photo and each map on the 14 x 14 attention grid — the heads' attention at each step,
their mean, the whole score's sensitivity (``amnet.inference.maps``), a random map and a
centre-bias map — the top k% of cells by the map are greyed out (deletion) or are all that is
left of the photo on grey (insertion), for k in FRACTIONS, and the whole model re-scores each
image. A map that explains the score makes the score fall fast under deletion (low area under
the curve) and rise fast under insertion (high area); ``ins - del`` sums both up.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/faithfulness.py --n 10 --out runs/faithfulness

Photos are drawn with a seed from LNSIM and from the pool of everyday photos (``_samples.py``),
decoded and resized as ``predict`` does. The model runs without test-time views (``--views``
for all four: 4x slower); its maps are of that same model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _samples import label, sample_photos  # noqa: E402

import amnet  # noqa: E402
from amnet.inference.engine import RunOptions  # noqa: E402
from amnet.inference.images import normalise, prepare  # noqa: E402
from amnet.inference.maps import GREY, occlude, score_maps, top_cells  # noqa: E402

FRACTIONS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)


def load_photos(paths: list[Path], pp) -> torch.Tensor:
    """(N, 3, S, S) in [0, 1]: what ``predict`` scores, before normalising."""
    unit = dataclasses.replace(pp, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    return torch.stack([prepare(p, unit)[0] for p in paths])


def blur(x: torch.Tensor, sigma: float = 8.0) -> torch.Tensor:
    """Gaussian blur of images (N, 3, H, W), separable, edges reflected."""
    r = int(3 * sigma)
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=x.dtype) / sigma) ** 2)
    k = (k / k.sum()).expand(3, 1, 1, -1)  # (3, 1, 1, 2r + 1): one kernel per colour
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k, groups=3)  # along rows
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.transpose(-1, -2), groups=3)


def all_maps(module, x: torch.Tensor, fill: torch.Tensor, seed: int,
             chunk: int = 4) -> tuple[dict, torch.Tensor]:  # fmt: skip
    """Every map (N, h, w) by name, and the scores (N,) of the photos x (N, 3, S, S)."""
    pairs = zip(x.split(chunk), fill.split(chunk), strict=True)
    parts = [score_maps(module, c, fill=f) for c, f in pairs]
    att = torch.cat([p.attention for p in parts])  # (N, T, h, w)
    sens = torch.cat([p.sensitivity for p in parts])  # (N, h, w)
    N, T, h, w = att.shape
    maps = {f"attention step {t + 1}": att[:, t] for t in range(T)}
    maps["attention, mean of the steps"] = att.mean(1)
    maps["whole-score sensitivity"] = sens
    maps["random"] = torch.rand(N, h, w, generator=torch.Generator().manual_seed(seed))
    yy, xx = torch.meshgrid(torch.arange(h) - (h - 1) / 2, torch.arange(w) - (w - 1) / 2,
                            indexing="ij")  # fmt: skip
    maps["centre bias"] = -(yy**2 + xx**2).expand(N, h, w)  # nearest the centre first
    return maps, torch.cat([p.score for p in parts])


def curves(predictor, x: torch.Tensor, fill: torch.Tensor, maps: dict) -> dict:
    """Deletion and insertion scores (N, F) of each map at FRACTIONS, by map name."""
    pp = predictor.preprocess

    def score(images: torch.Tensor) -> np.ndarray:
        return np.array([r.score for r in predictor.predict_tensors(normalise(images, pp))])

    whole, grey = np.split(score(torch.cat([x, fill])), 2)  # the photos, all filled
    out = {}
    for name, m in maps.items():
        dele, ins = [whole], [grey]
        for f in FRACTIONS[1:-1]:
            cells = top_cells(m, f)  # (N, h, w)
            s = score(torch.cat([occlude(x, cells, fill), occlude(x, ~cells, fill)]))  # (2N,)
            dele.append(s[: len(x)])
            ins.append(s[len(x) :])
        out[name] = (np.stack(dele + [grey], 1), np.stack(ins + [whole], 1))  # (N, F) each
    return out


def auc(scores: np.ndarray) -> np.ndarray:
    """Area under each curve (N, F) over FRACTIONS -> (N,)."""
    f = np.array(FRACTIONS)
    return ((scores[:, 1:] + scores[:, :-1]) / 2 * np.diff(f)).sum(1)


def summary(curve: dict) -> list[dict]:
    rand = auc(curve["random"][1]) - auc(curve["random"][0])
    rows = []
    for name, (dele, ins) in curve.items():
        d, i = auc(dele), auc(ins)
        gap = i - d
        rows.append({"map": name, "deletion": float(d.mean()), "insertion": float(i.mean()),
                     "ins_minus_del": float(gap.mean()),
                     "se": float(gap.std(ddof=1) / np.sqrt(len(gap))) if len(gap) > 1 else 0.0,
                     "beats_random": int((gap > rand).sum()), "n": len(gap)})  # fmt: skip
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| map | deletion AUC (lower: explains) | insertion AUC (higher: explains) | "
             "ins - del (± s.e.) | beats random on |", "|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['map']} | {r['deletion']:.4f} | {r['insertion']:.4f} | "
                     f"{r['ins_minus_del']:+.4f} (± {r['se']:.4f}) | "
                     f"{r['beats_random']} of {r['n']} |")  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10, help="photos per domain (10)")
    ap.add_argument("--domains", default="lnsim,pool")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--model", default="default")
    ap.add_argument("--views", action="store_true", help="all test-time views (4x slower)")
    ap.add_argument("--fill", choices=("grey", "blur"), default="grey",
                    help="what replaces a cell: grey, or the photo blurred")  # fmt: skip
    ap.add_argument("--out", default="runs/faithfulness")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    predictor = amnet.load(args.model, options=RunOptions(views=args.views))
    module = predictor.as_module()
    report, text = {"args": vars(args), "fractions": FRACTIONS, "domains": {}}, []
    for domain in args.domains.split(","):
        t0 = time.perf_counter()
        paths = sample_photos(domain, args.n, args.seed)
        x = load_photos(paths, predictor.preprocess)
        fill = blur(x) if args.fill == "blur" else torch.full_like(x, GREY)
        maps, scores = all_maps(module, x, fill, args.seed)
        if not all(torch.isfinite(m).all() for m in maps.values()):
            raise SystemExit(f"{domain}: a map is not finite (NaN/inf gradients)")
        curve = curves(predictor, x, fill, maps)
        rows = summary(curve)
        grey = curve["random"][0][:, -1]
        report["domains"][domain] = {
            "photos": [label(p) for p in paths], "scores": scores.tolist(),
            "grey": grey.tolist(), "rows": rows, "seconds": time.perf_counter() - t0,
            "curves": {k: [d.tolist(), i.tolist()] for k, (d, i) in curve.items()},
        }  # fmt: skip
        text += [f"### {domain}: {len(paths)} photos, mean score {scores.mean():.3f}, "
                 f"all {args.fill} {grey.mean():.3f} ({time.perf_counter() - t0:.0f} s)", "",
                 table(rows), ""]  # fmt: skip
        print("\n".join(text[-4:]), flush=True)
    (out / "results.json").write_text(json.dumps(report, indent=1))
    (out / "table.md").write_text("\n".join(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
