"""Guidance, measured (issue 18): how far ``examples/guidance.py`` moves the default model's score
within an L-infinity budget of 1/255, 4/255 and 8/255 (and down at 8/255), and whether a second,
independent model (``amnet-lnsim-efficientnet_lite2``) agrees that the edited photo moved the
same way. Both scores are of the saved 8-bit PNGs, through ``predict`` on the files. A control
adds random +-eps noise (no gradient) to the same photos: what any change of that size does.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/guidance.py --lnsim 2 --pool 2 --out runs/guidance

Photos are drawn with a seed from ../shared/datasets (``_samples.py``); each is edited at its
own size, all budgets in one batch, 10 steps of projected gradient ascent with the default's
four views. Writes the PNGs, ``results.json`` and ``table.md`` into --out; ``--controls-only``
adds the control to an earlier run's results (scoring only: seconds).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _samples import DOMAINS, label, sample_photos  # noqa: E402

import amnet  # noqa: E402
from amnet.inference.images import load_image  # noqa: E402

SECOND = "amnet-lnsim-efficientnet_lite2"
VARIANTS = (("+1/255", 1, 1.0), ("+4/255", 4, 1.0), ("+8/255", 8, 1.0), ("-8/255", 8, -1.0))
NOISE = (1, 4, 8)  # the control: random +-eps/255 on every pixel


def load_example():
    """examples/guidance.py as a module: the benchmark runs the example's own ``edit``."""
    path = HERE.parent / "examples" / "guidance.py"
    spec = importlib.util.spec_from_file_location("guidance_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(photos: list[tuple[str, Path]], out: Path, steps: int, model: str,
        second_model: str = SECOND) -> list[dict]:  # fmt: skip
    ex = load_example()
    predictor, second = amnet.load(model), amnet.load(second_model)
    score = predictor.as_module()
    eps = torch.tensor([e / 255 for _, e, _ in VARIANTS])  # (V,)
    signs = torch.tensor([s for _, _, s in VARIANTS])
    rows = []
    for domain, path in photos:
        t0 = time.perf_counter()
        x = ex.to_tensor(load_image(path))  # (1, 3, H, W)
        y = ex.edit(score, x.expand(len(VARIANTS), -1, -1, -1), eps, steps, signs)  # (V, 3, H, W)
        if not torch.isfinite(y).all():
            raise SystemExit(f"{path}: the edit is not finite (NaN/inf gradients)")
        with torch.no_grad():
            optimised = score(torch.cat([x, y])).tolist()  # what the optimiser saw
        files = [out / f"{path.stem}-before.png"] + [
            out / f"{path.stem}-{'up' if sign > 0 else 'down'}{e}.png" for _, e, sign in VARIANTS
        ]
        for f, img in zip(files, torch.cat([x, y]).split(1), strict=True):
            ex.to_image(img).save(f)
        row = {"photo": label(path), "domain": domain, "size": list(x.shape[-2:]),
               "seconds": round(time.perf_counter() - t0, 1), "optimised": optimised,
               "default": [r.score for r in predictor.predict(files)],
               "second": [r.score for r in second.predict(files)]}  # fmt: skip
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    return rows


def controls(rows: list[dict], out: Path, model: str, second_model: str, seed: int) -> None:
    """Add to each row the scores of its photo with random +-eps noise, eps in NOISE."""
    ex = load_example()
    predictor, second = amnet.load(model), amnet.load(second_model)
    for k, row in enumerate(rows):
        path = DOMAINS[row["domain"]] / row["photo"]
        x = ex.to_tensor(load_image(path))  # (1, 3, H, W)
        sign = torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(seed + k))
        files = []
        for e in NOISE:
            files.append(out / f"{path.stem}-noise{e}.png")
            ex.to_image((x + (2.0 * sign - 1) * e / 255).clamp(0, 1)).save(files[-1])
        row["noise_default"] = [r.score for r in predictor.predict(files)]
        row["noise_second"] = [r.score for r in second.predict(files)]


def tables(rows: list[dict]) -> str:
    """One line per photo, then per budget: mean change of each model, and agreement."""
    head = "| photo | default before | " + " | ".join(f"{n}" for n, _, _ in VARIANTS)
    head += " | EfficientNet before | " + " | ".join(f"{n}" for n, _, _ in VARIANTS) + " |"
    lines = [head, "|" + "---|" * (2 * len(VARIANTS) + 3)]
    for r in rows:
        d, s = r["default"], r["second"]
        lines.append(f"| {r['photo']} ({r['domain']}) | {d[0]:.3f} | "
                     + " | ".join(f"{v - d[0]:+.3f}" for v in d[1:]) + f" | {s[0]:.3f} | "
                     + " | ".join(f"{v - s[0]:+.4f}" for v in s[1:]) + " |")  # fmt: skip
    lines += ["", "| budget | default: mean change (min, max) | EfficientNet-Lite2: mean "
              "change (min, max) | EfficientNet agrees on the direction |",
              "|---|---|---|---|"]  # fmt: skip
    for k, (name, _, sign) in enumerate(VARIANTS, start=1):
        dd = np.array([r["default"][k] - r["default"][0] for r in rows])
        ds = np.array([r["second"][k] - r["second"][0] for r in rows])
        agree = int((np.sign(ds) == sign).sum())
        lines.append(f"| {name} | {dd.mean():+.3f} ({dd.min():+.3f}, {dd.max():+.3f}) | "
                     f"{ds.mean():+.4f} ({ds.min():+.4f}, {ds.max():+.4f}) | "
                     f"{agree} of {len(rows)} |")  # fmt: skip
    for k, e in enumerate(NOISE):
        if all("noise_default" in r for r in rows):
            dd = np.array([r["noise_default"][k] - r["default"][0] for r in rows])
            ds = np.array([r["noise_second"][k] - r["second"][0] for r in rows])
            lines.append(f"| random ±{e}/255 (control) | {dd.mean():+.3f} ({dd.min():+.3f}, "
                         f"{dd.max():+.3f}) | {ds.mean():+.4f} ({ds.min():+.4f}, "
                         f"{ds.max():+.4f}) | - |")  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lnsim", type=int, default=2, help="photos from LNSIM (2)")
    ap.add_argument("--pool", type=int, default=2, help="everyday photos from the pool (2)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="default")
    ap.add_argument("--second", default=SECOND, help="the independent judge")
    ap.add_argument("--out", default="runs/guidance")
    ap.add_argument("--controls-only", action="store_true", help="add the control to --out's run")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.controls_only:
        done = json.loads((out / "results.json").read_text())
        args, rows = argparse.Namespace(**done["args"]), done["rows"]
    else:
        photos = [("lnsim", p) for p in sample_photos("lnsim", args.lnsim, args.seed)]
        photos += [("pool", p) for p in sample_photos("pool", args.pool, args.seed)]
        rows = run(photos, out, args.steps, args.model, args.second)
    controls(rows, out, args.model, args.second, args.seed)
    table = tables(rows)
    (out / "results.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    (out / "table.md").write_text(table + "\n")
    print(table)
    print(f"\n{len(rows)} photos, {args.steps} steps, {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
