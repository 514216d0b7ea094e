"""Whole-process time (issue 16): ``amnet predict`` run as a user runs it, a fresh process each
time, on 1 photo and on 256 photos, beside ResMem scoring the same photos in a fresh process
(its weights from its wheel, its own preprocessing; see speed_resmem.py). Also splits one
photo's time into import, model load and scoring, inside one process.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/process_time.py --repeats 3

The photos: LNSIM's first 256 (sorted). Median of ``--repeats`` runs, interleaved.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _speed_common import LNSIM  # noqa: E402

BIN = Path(sys.executable).parent
RESMEM = """
import sys, time
sys.path.insert(0, {bench!r})
import torch
from speed_resmem import load_resmem, resmem_tensor
paths = open({lst!r}).read().split()
model = load_resmem()
with torch.inference_mode():
    for i in range(0, len(paths), 32):
        x = torch.stack([resmem_tensor(p) for p in paths[i:i + 32]])
        print(*model(x).tolist(), sep="\\n")
"""

SPLIT = """
import time
t0 = time.perf_counter()
import torch, amnet
from amnet.inference.engine import RunOptions
t1 = time.perf_counter()
p = amnet.load({model!r}{opts})
t2 = time.perf_counter()
p.predict([{photo!r}])
t3 = time.perf_counter()
print(f"{{t1 - t0:.2f}} {{t2 - t1:.2f}} {{t3 - t2:.2f}}")
"""


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--variants", default="default,default --views,resmem",
                    help="comma-separated: a model name (+ predict flags), or resmem")  # fmt: skip
    args = ap.parse_args()
    photos = sorted(str(p) for p in (LNSIM / "images").iterdir())[: args.n]
    tmp = Path(tempfile.mkdtemp())
    lst = tmp / "photos.txt"
    lst.write_text("\n".join(photos))
    bench = str(Path(__file__).resolve().parent)
    variants = [v.strip() for v in args.variants.split(",")]

    def command(variant: str, paths: list[str]) -> list[str]:
        if variant == "resmem":
            (tmp / "one.txt").write_text("\n".join(paths))
            code = RESMEM.format(bench=bench, lst=str(tmp / ("one.txt" if len(paths) == 1
                                                             else "photos.txt")))  # fmt: skip
            return [sys.executable, "-c", code]
        model, *flags = variant.split()
        return [str(BIN / "amnet"), "predict", *paths, "--model", model, *flags,
                "--out", str(tmp / "out.csv"), "--batch-size", "32"]  # fmt: skip

    times: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.repeats):
        for v in variants:
            for paths in (photos[:1], photos):
                times.setdefault((v, len(paths)), []).append(timed(command(v, paths)))
    print(f"# load {os.getloadavg()[0]:.1f}, {args.repeats} runs each, median s")
    n = len(photos)
    print(f"| variant | 1 photo (s) | {n} photos (s) | {n} photos: images/s |\n|---|---|---|---|")
    for v in variants:
        one = statistics.median(times[(v, 1)])
        many = statistics.median(times[(v, len(photos))])
        print(f"| {v} | {one:.2f} | {many:.1f} | {len(photos) / many:.2f} |")
    print("\nOne photo inside one process: import torch + amnet, load the model, score (s):")
    for v in variants:
        if v == "resmem":
            continue
        model, *flags = v.split()
        opts = ""
        if "--views" in flags or "--no-views" in flags:
            opts = f", options=RunOptions(views={'--views' in flags})"
        code = SPLIT.format(model=model, opts=opts, photo=photos[0])
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                             text=True).stdout.split()  # fmt: skip
        print(f"- {v}: import {out[0]}, load {out[1]}, score {out[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
