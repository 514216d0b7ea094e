"""Speed options (amnet.inference.engine.RunOptions): images/s of each, interleaved batch by
batch, and each one's effect on the scores of LNSIM photos (Spearman with the plain float32
scores, and with the human scores when the trained default model is installed).

    python benchmarks/options.py speed --variants plain,channels_last,fold,default,onnx
    python benchmarks/options.py speed --variants default,bfloat16 --batches 1
    python benchmarks/options.py speed --variants default,compile --batches 2
    python benchmarks/options.py sizes --variants default,onnx --sizes 1,8,32
    python benchmarks/options.py scores --variant plain --n 300     # the reference, first
    python benchmarks/options.py scores --variant onnx --n 300

Scores are written to $TMPDIR/amnet-bench-scores/<variant>-<n>.npy, so each variant is a
separate short run and is compared with the reference written earlier.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _speed_common import Timer, header, human_scores, model_path, photos  # noqa: E402

import amnet  # noqa: E402
from amnet.inference.engine import RunOptions  # noqa: E402
from amnet.inference.images import iter_images  # noqa: E402

VARIANTS = {  # whole batches through the trunk unless said otherwise
    "plain": RunOptions(channels_last=False, fold_bn=False, trunk_batch=0),
    "channels_last": RunOptions(fold_bn=False, trunk_batch=0),
    "fold": RunOptions(channels_last=False, trunk_batch=0),
    "cl+fold": RunOptions(trunk_batch=0),
    "default": RunOptions(),  # channels-last + folded BatchNorm + the trunk on chunks of 8
    "notta": RunOptions(views=False),  # the default without test-time flips
    "onnx": RunOptions(runtime="onnx"),
    "bfloat16": RunOptions(bfloat16=True),
    "compile": RunOptions(compile=True),
}
SCORES = Path(tempfile.gettempdir()) / "amnet-bench-scores"


def tensors(paths: list[Path], pp) -> torch.Tensor:
    return torch.stack([i.tensor for i in iter_images(paths, pp, workers=2)])  # (N, 3, S, S)


def predictor(variant: str, model: str) -> amnet.Predictor:
    t = time.perf_counter()
    if variant == "onnx-spin":  # ONNX Runtime threads busy-wait when idle (ORT's default)
        from amnet.inference.onnx import cached_export, onnx_engine, open_session

        p = amnet.load(model, options=RunOptions(fold_bn=False))
        path = cached_export(p.trunk, p.head, p.preprocess.size)
        p.engine = onnx_engine(session=open_session(path, spin=True))
    else:
        p = amnet.load(model, options=VARIANTS[variant])
    print(f"# {variant}: ready in {time.perf_counter() - t:.1f} s", flush=True)
    return p


def speed(args: argparse.Namespace, model: str) -> None:
    names = args.variants.split(",")
    preds = {v: predictor(v, model) for v in names}
    x = tensors(photos(args.batch * args.batches), preds[names[0]].preprocess)
    with torch.inference_mode():
        for v in names:
            t = time.perf_counter()
            warm = x[: args.batch] if v == "compile" else x[:2]  # compile: for this shape
            preds[v].predict_tensors(warm)  # first call: kernels, memory, or compilation
            print(f"# {v}: first batch {time.perf_counter() - t:.1f} s", flush=True)
        timers = {v: Timer() for v in names}
        got: dict[str, list[float]] = {v: [] for v in names}
        for i in range(args.batches):
            xb = x[i * args.batch : (i + 1) * args.batch]
            for v in names[i % len(names) :] + names[: i % len(names)]:  # rotate the order
                out = timers[v].time(lambda v=v, xb=xb: preds[v].predict_tensors(xb), len(xb))
                got[v] += [r.score for r in out]
    from scipy.stats import spearmanr

    base = names[0]
    print(f"\nbatch {args.batch}, {args.batches} batches each; speed-up over {base}: median of "
          f"per-batch wall-clock ratios, and the ratio of images per CPU-second; scores of the "
          f"{len(x)} images compared with {base}'s")  # fmt: skip
    for v in names:
        ratio = statistics.median(
            b / s for s, b in zip(timers[v].samples, timers[base].samples, strict=True)
        )
        a, ref = np.array(got[v]), np.array(got[base])
        print(f"  {v:14s} {timers[v].rate:6.2f} images/s  {timers[v].cpu_rate:6.3f} per CPU-s  "
              f"x{ratio:.2f} (cpu x{timers[v].cpu_rate / timers[base].cpu_rate:.2f})  "
              f"Spearman {spearmanr(a, ref).statistic:.5f}  max|diff| {np.abs(a - ref).max():.1e}"
              f"  load {timers[v].load}", flush=True)  # fmt: skip


def sizes(args: argparse.Namespace, model: str) -> None:
    """The same images in chunks of each batch size, interleaved: is a big batch worth it?"""
    names, bss = args.variants.split(","), [int(b) for b in args.sizes.split(",")]
    preds = {v: predictor(v, model) for v in names}
    x = tensors(photos(args.images), preds[names[0]].preprocess)  # (N, 3, S, S)
    timers = {(v, b): Timer() for v in names for b in bss}
    with torch.inference_mode():
        for v in names:
            for b in bss:
                preds[v].predict_tensors(x[:b])  # first call for this shape
        for r in range(args.rounds):
            for v in names:
                for b in bss if r % 2 == 0 else bss[::-1]:
                    timers[v, b].time(
                        lambda v=v, b=b: [preds[v].predict_tensors(c) for c in x.split(b)], len(x)
                    )
    print(f"\n{args.images} images in chunks of each batch size, {args.rounds} rounds:")
    for (v, b), t in timers.items():
        print(f"  {v:10s} batch {b:3d}: {t.rate:6.2f} images/s  {t.cpu_rate:6.3f} per CPU-s  "
              f"load {t.load}", flush=True)  # fmt: skip


def scores(args: argparse.Namespace, model: str, trained: bool) -> None:
    from scipy.stats import spearmanr

    paths = photos(args.n)
    p = predictor(args.variant, model)
    t = Timer()
    out = []
    with torch.inference_mode():
        for i in range(0, args.n, args.batch):
            x = tensors(paths[i : i + args.batch], p.preprocess)
            out += [r.score for r in t.time(lambda x=x: p.predict_tensors(x), len(x))]
    got = np.array(out)
    SCORES.mkdir(exist_ok=True)
    tag = "trained" if trained else "untrained"
    np.save(SCORES / f"{args.variant}-{tag}-{args.n}.npy", got)
    line = f"{args.variant}: {args.n} photos at {t.rate:.2f} images/s (load {t.load})"
    refs = sorted(SCORES.glob(f"plain-{tag}-*.npy"), key=lambda f: int(f.stem.split("-")[-1]))
    refs = [f for f in refs if int(f.stem.split("-")[-1]) >= args.n]
    if args.variant != "plain" and refs:
        ref = np.load(refs[0])[: args.n]  # the reference's first n photos are these n
        rho = spearmanr(got, ref).statistic
        line += f"; vs plain: Spearman {rho:.6f}, max |score diff| {np.abs(got - ref).max():.2e}"
        if trained:
            humans = human_scores()
            truth = [humans[q.name] for q in paths]
            r_opt, r_ref = spearmanr(got, truth).statistic, spearmanr(ref, truth).statistic
            line += f"; rho vs humans {r_opt:.4f} (plain {r_ref:.4f}, change {r_opt - r_ref:+.4f})"
    print(line, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--variants", default="plain,channels_last,fold,default,onnx")
    s.add_argument("--batches", type=int, default=3)
    s.add_argument("--batch", type=int, default=32)
    z = sub.add_parser("sizes")
    z.add_argument("--variants", default="default,onnx")
    z.add_argument("--sizes", default="1,4,8,16,32")
    z.add_argument("--images", type=int, default=32)
    z.add_argument("--rounds", type=int, default=1)
    c = sub.add_parser("scores")
    c.add_argument("--variant", choices=[*VARIANTS, "onnx-spin"], required=True)
    c.add_argument("--n", type=int, default=300)
    c.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, trained = model_path()
    header(f"options {args.mode}; model {model} ({'trained' if trained else 'untrained head'})")
    if args.mode == "scores":
        scores(args, model, trained)
    else:
        (speed if args.mode == "speed" else sizes)(args, model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
