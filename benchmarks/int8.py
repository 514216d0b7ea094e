"""int8 ONNX Runtime against float32 ONNX Runtime for the shipped default model (issue #6):
static quantisation of the trunk's convolutions (int8 weights per channel, uint8
activations, min/max calibration on LNSIM photos that are not among the measured ones),
then speed (interleaved batch by batch) and the effect on the scores.

    python benchmarks/int8.py --calib 32 --n 64 --batch 32 --scores 300

Quantisation is an experiment here, not an amnet option: it needs calibration photos, and
its effect on the ranking is what this script measures.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _speed_common import Timer, header, human_scores, photos  # noqa: E402

import amnet  # noqa: E402
from amnet.checkpoint import load_checkpoint, resolve_model  # noqa: E402
from amnet.inference.images import iter_images  # noqa: E402
from amnet.inference.onnx import INPUT, cached_export, open_session  # noqa: E402
from amnet.training.metrics import spearman  # noqa: E402
from amnet.trunks.registry import create_trunk  # noqa: E402

CALIB_OFFSET = 1000  # calibration photos come from here on; measured photos from 0


def batches(paths, pp, bs):
    for i in range(0, len(paths), bs):
        yield np.stack([t.tensor.numpy() for t in iter_images(paths[i : i + bs], pp)])


def quantise(fp32: Path, out: Path, calib: list[Path], pp, bs: int) -> float:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(batches(calib, pp, bs))

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {INPUT: x}

    t0 = time.time()
    pre = out.with_name(out.stem + "-pre.onnx")
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    import onnx

    convs = [n.name for n in onnx.load(str(pre)).graph.node
             if n.op_type == "Conv" and n.name.startswith("/trunk/")]  # fmt: skip
    quantize_static(
        str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
        reduce_range=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        op_types_to_quantize=["Conv"], nodes_to_quantize=convs,
    )  # fmt: skip
    print(f"# quantised {len(convs)} convolutions (the trunk's, every view; the descriptor's "
          f"layer4, the classifier and the heads stay float32) in {time.time() - t0:.0f}s: {out} "
          f"({out.stat().st_size / 1e6:.0f} MB)", flush=True)  # fmt: skip
    return time.time() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calib", type=int, default=32, help="calibration photos")
    ap.add_argument("--n", type=int, default=64, help="photos timed")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--scores", type=int, default=300, help="photos scored by both")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    header(f"int8 vs float32 ONNX Runtime, default model, batch {args.batch}")
    path = resolve_model("default")
    head, meta = load_checkpoint(path)
    trunk = create_trunk(meta["trunk"])
    pp = amnet.load("default").preprocess
    fp32 = cached_export(trunk, head, int(meta["preprocess"]["size"]), bool(meta.get("tta")))
    int8 = Path(tempfile.gettempdir()) / f"amnet-int8t-{fp32.stem}-{args.calib}.onnx"
    if not int8.is_file():
        quantise(fp32, int8, photos(args.calib, CALIB_OFFSET), pp, 8)
    sessions = {
        "float32": open_session(fp32, args.threads),
        "int8": open_session(int8, args.threads),
    }

    def run(name, x):
        return sessions[name].run(["score"], {INPUT: x})[0]

    xs = list(batches(photos(args.n), pp, args.batch))
    for name in sessions:  # warm-up
        run(name, xs[0][:2])
    timers = {k: Timer() for k in sessions}
    for i, x in enumerate(xs):
        for name in list(sessions) if i % 2 == 0 else list(sessions)[::-1]:
            timers[name].time(lambda n=name, x=x: run(n, x), len(x))
    print("\nvariant   images/s  per CPU-s  load")
    for k, t in timers.items():
        print(f"{k:8s} {t.rate:9.2f} {t.cpu_rate:10.3f}  {t.load}")
    print(f"int8 / float32: {timers['int8'].rate / timers['float32'].rate:.2f}x (wall), "
          f"{timers['int8'].cpu_rate / timers['float32'].cpu_rate:.2f}x (per CPU-s)")  # fmt: skip

    paths = photos(args.scores)
    human = human_scores()
    y = np.array([human[p.name] for p in paths])
    s = {k: np.concatenate([run(k, x) for x in batches(paths, pp, args.batch)]) for k in sessions}
    d = np.abs(s["int8"] - s["float32"])
    print(
        f"\nscores of {len(paths)} photos: Spearman int8 vs float32 "
        f"{spearman(s['int8'], s['float32']):.5f}, max |diff| {d.max():.4f}, mean {d.mean():.4f}"
    )
    print(f"Spearman with humans (training images of the shipped model: only the change "
          f"matters): float32 {spearman(s['float32'], y):.4f}, int8 {spearman(s['int8'], y):.4f}, "
          f"change {spearman(s['int8'], y) - spearman(s['float32'], y):+.4f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
