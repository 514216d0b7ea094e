"""Would a second, small trunk fit in issue 16's budget? The forward time per image, batch 32,
of ResMem (as its package runs it), of the one-pass default (ResNet-152 to layer3 + the kernel
prior's descriptor: layer4 and the classifier), and of EfficientNet-Lite2 as a second trunk
(its image descriptor: head features and log-probabilities), interleaved batch by batch on
random input. amnet's nets are folded and laid out as its torch engine runs them.

At 1.5x ResMem's images/s, an image may take 1 / 1.5 of ResMem's time: the budget line says
what is left for a second trunk once the one-pass default has run.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/second_trunk_cost.py --rounds 6
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _speed_common import default_trunk_and_descriptor, engine_layout, header  # noqa: E402
from speed_resmem import RESMEM_CROP, load_resmem  # noqa: E402

from amnet.builders import build_image_descriptor  # noqa: E402
from amnet.trunks.registry import get_trunk_spec  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=6, help="timed rounds (after one warm-up)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    header(f"forward ms per image, batch {args.batch}, {args.rounds} rounds interleaved")
    main_pp = get_trunk_spec("resnet152").preprocess
    ours = torch.nn.Sequential(*default_trunk_and_descriptor())
    (extra,) = engine_layout(
        build_image_descriptor("efficientnet_lite2", ("tail_mean", "tail_logprob"), main_pp)
    )
    cl = torch.channels_last
    resmem = load_resmem()
    torch.manual_seed(0)
    x = torch.rand(args.batch, 3, main_pp.size, main_pp.size).contiguous(memory_format=cl)
    xr = torch.rand(args.batch, 3, RESMEM_CROP, RESMEM_CROP)
    ONE, LITE = "one-pass default (ResNet-152 + descriptor)", "EfficientNet-Lite2 second trunk"
    nets = {"ResMem": (resmem, xr), ONE: (ours, x), LITE: (extra, x)}
    times = {k: [] for k in nets}
    for r in range(args.rounds + 1):
        for k, (net, inp) in nets.items():
            t = time.perf_counter()
            net(inp)
            if r:  # round 0 warms up
                times[k].append((time.perf_counter() - t) / args.batch * 1e3)
    ms = {k: statistics.median(v) for k, v in times.items()}
    for k, v in ms.items():
        print(f"{k}: {v:.1f} ms/img (median; {min(times[k]):.1f}-{max(times[k]):.1f})")
    budget = ms["ResMem"] / 1.5
    one, lite = (
        ms["one-pass default (ResNet-152 + descriptor)"],
        ms["EfficientNet-Lite2 second trunk"],
    )
    print(f"1.5x ResMem allows {budget:.1f} ms/img: {budget - one:.1f} ms left after the "
          f"one-pass default; with one Lite2 view {ms['ResMem'] / (one + lite):.2f}x ResMem, "
          f"with four {ms['ResMem'] / (one + 4 * lite):.2f}x (forward only)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
