"""Score 10,000 generated images through ``amnet predict`` and report images/s and peak RSS.

Each run is a fresh process calling ``amnet.cli.main`` (the code path of the command), so its
peak resident memory is measured on its own; running with 1,000 and with 10,000 images shows
whether memory grows with the number of images (it must not).

    python benchmarks/predict_10k.py                          # tiny random trunk, 1k and 10k
    python benchmarks/predict_10k.py --trunk resnet152 --n 500 --rss-at 100

Memory columns: ``peak`` is the process's peak RSS (getrusage); ``1st half`` and ``2nd half``
are the highest RSS sampled (every 50 ms) in each half of the run, the same when nothing
accumulates; ``at end`` is the RSS when the command returns.

``--trunk tiny`` (the default) is a small random convolution standing in for the ImageNet trunk,
so the figure measures decoding, batching, the full-size AMNet head and writing; ``--trunk
resnet152`` measures the real model. The head is untrained: the scores mean nothing here.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _speed_common import rss_mb, sampling_rss  # noqa: E402

TINY = "bench-tiny"


def register_tiny_trunk() -> None:
    """A random stride-16 trunk with 1024 channels, so the head has its real size."""
    import torch
    from torch import nn

    from amnet.trunks.registry import Preprocess, TrunkSpec, get_trunk_spec, register_trunk

    class TinyTrunk(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            with torch.random.fork_rng():
                torch.manual_seed(0)
                self.conv1 = nn.Conv2d(3, 32, 8, stride=8)
                self.conv2 = nn.Conv2d(32, 1024, 2, stride=2)

        def forward_features(self, x: torch.Tensor, stop: str = "out") -> torch.Tensor:
            return self.conv2(torch.relu(self.conv1(x)))  # (B, 1024, H/16, W/16)

    try:
        get_trunk_spec(TINY)
    except KeyError:
        register_trunk(TrunkSpec(TINY, TinyTrunk, "out", 1024, Preprocess(), None, "benchmark"))


def make_images(folder: Path, n: int, seed: int = 0) -> None:
    """n small images of varied sizes (64-512 px a side): smooth random colour fields
    (a random 8x8 image upsampled), 3/4 JPEG and 1/4 PNG."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        w, h = (int(v) for v in rng.integers(64, 513, size=2))
        base = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        ext = "png" if i % 4 == 3 else "jpg"
        base.resize((w, h), Image.BILINEAR).save(folder / f"{i:05d}.{ext}", quality=85)


def make_checkpoint(path: Path, trunk: str) -> Path:
    import torch

    from amnet.checkpoint import save_checkpoint
    from amnet.model.head import AMNetConfig, AMNetHead
    from amnet.trunks.registry import get_trunk_spec

    torch.manual_seed(0)
    head = AMNetHead(AMNetConfig(in_channels=get_trunk_spec(trunk).channels))  # untrained
    return save_checkpoint(path, head, trunk=trunk)


def child(argv: list[str], tiny: bool) -> None:
    """Inside the measured process: the command itself, timed, while a thread samples the
    resident memory every 50 ms; then the peak RSS, the RSS at the end, and the highest RSS
    in the first and in the second half of the run (the same when memory does not accumulate)."""
    if tiny:
        register_tiny_trunk()
    from amnet.cli.main import main

    rc, seconds, memory = sampling_rss(lambda: main(argv))
    print(json.dumps({"rc": rc, "seconds": seconds, **memory, "end_rss_mb": rss_mb()}))


def measure(argv: list[str], tiny: bool) -> dict:
    """Run one command in a fresh process, so each peak RSS is that run's own."""
    cmd = [sys.executable, __file__, "--child", *(["--tiny"] if tiny else []), "--", *argv]
    p = subprocess.run(cmd, capture_output=True, text=True)
    result = json.loads(p.stdout.strip().splitlines()[-1])
    result["stderr_tail"] = p.stderr.strip().splitlines()[-1:]
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000, help="images in the big run")
    ap.add_argument("--rss-at", type=int, default=1_000, help="images in the small run")
    ap.add_argument("--trunk", default="tiny", help="tiny (random) or a registered trunk")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dir", type=Path, help="keep the images here (default: a temp folder)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.rest, args.tiny)
        return 0

    tiny = args.trunk == "tiny"
    if tiny:
        register_tiny_trunk()
    trunk = TINY if tiny else args.trunk
    with tempfile.TemporaryDirectory(prefix="amnet-bench-") as tmp:
        root = args.dir or Path(tmp)
        images = root / "images"
        have = len(list(images.glob("*"))) if images.is_dir() else 0
        if have < args.n:
            t = time.perf_counter()
            make_images(images, args.n)
            print(f"generated {args.n} images in {time.perf_counter() - t:.1f} s", flush=True)
        names = sorted(images.iterdir())[: args.n]
        ckpt = make_checkpoint(Path(tmp) / "model.safetensors", trunk)
        print(
            f"trunk={args.trunk} batch_size={args.batch_size} workers={args.workers} "
            f"device={args.device} cpus={os.cpu_count()} torch_threads=default",
            flush=True,
        )
        print(f"{'':27}|---------- RSS, MB ----------|")
        header = ("images", "seconds", "images/s", "peak", "1st half", "2nd half", "at end")
        print("{:>7} {:>8} {:>9} {:>7} {:>9} {:>9} {:>7}".format(*header), flush=True)
        for n in sorted({min(args.rss_at, args.n), args.n}):
            listing = Path(tmp) / f"first_{n}.txt"
            listing.write_text("".join(f"{p}\n" for p in names[:n]))
            out = Path(tmp) / f"scores_{n}.csv"
            argv = ["predict", str(listing), "--model", str(ckpt), "--out", str(out)]
            argv += ["--batch-size", str(args.batch_size), "--workers", str(args.workers)]
            argv += ["--device", args.device]
            r = measure(argv, tiny)
            if r["rc"] != 0:
                print(f"run failed (exit {r['rc']}): {r['stderr_tail']}", file=sys.stderr)
                return 1
            with open(out) as f:
                rows = sum(1 for _ in f) - 1
            assert rows == n, f"{rows} rows for {n} images"
            mb = [r[k] for k in ("peak_rss_mb", "first_half_max_mb", "second_half_max_mb")]
            row = (n, r["seconds"], n / r["seconds"], *mb, r["end_rss_mb"])
            print("{:>7} {:>8.1f} {:>9.1f} {:>7.0f} {:>9.0f} {:>9.0f} {:>7.0f}".format(*row),
                  flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
