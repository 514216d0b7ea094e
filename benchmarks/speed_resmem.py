"""Our default model against ResMem (Needell & Bainbridge), interleaved batch by batch on the
same real photos: images/s for decoding, for the model and end to end, and the ratio.

ResMem is rebuilt here from its published architecture without torchvision and without
importing ``resmem``: its weights (``resmem/model.pt`` in the pip wheel) are loaded with
``torch.load(weights_only=True)`` into a ResNet-152 (``amnet.trunks.resnet``, torchvision's layout)
plus ResMem's AlexNet-like branch (conv1..conv5, fc6..fc12; sizes read from the state dict).
Its preprocessing is its own: resize to 256x256, centre crop 227, [0, 1] RGB, no normalisation.
Both sides decode with the same 2 threads and run with the same torch threads; ResMem runs as
its package runs it (float32, NCHW, eager), ours with amnet's default options.

    python benchmarks/speed_resmem.py --n 256 --batch-sizes 32,1
    python benchmarks/speed_resmem.py --n 128 --batch-sizes 32 --ours torch,onnx
    python benchmarks/speed_resmem.py --model amnet-lnsim-efficientnet_lite2 --ours torch,onnx
    python benchmarks/speed_resmem.py --check 300   # ResMem sanity: range, rho vs humans

Until the trained default model is registered, ours is an untrained head of the default's size
on the same trunk: the speed is the same, the scores mean nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _speed_common import Timer, header, human_scores, load, model_path, photos  # noqa: E402

from amnet.builders import build_resmem_head, resmem_state  # noqa: E402
from amnet.trunks.resnet import resnet152  # noqa: E402

RESMEM_RESIZE, RESMEM_CROP = 256, 227


class ResMem(nn.Module):
    """ResMem's forward: ResNet-152 logits (1000) concatenated with a grouped AlexNet-style
    branch (256 x 6 x 6), then seven fully connected layers and a sigmoid (``ResMemHead``)."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.features = resnet152()
        self.head = build_resmem_head(state)

    def forward_with_activations(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        return self.head.forward_with_activations(x, self.features(x))  # x: (B, 3, 227, 227)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_activations(x)[0]  # (B,)


def load_resmem() -> ResMem:
    state = resmem_state()
    net = ResMem(state)
    feats = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
    net.features.load_state_dict(feats, strict=True)  # every tensor has a place
    return net.eval()


def resmem_tensor(path: Path) -> torch.Tensor:
    """ResMem's transform: Resize((256, 256)), CenterCrop(227), ToTensor -> (3, 227, 227)."""
    img = Image.open(path).convert("RGB").resize((RESMEM_RESIZE, RESMEM_RESIZE), Image.BILINEAR)
    top = int(round((RESMEM_RESIZE - RESMEM_CROP) / 2.0))  # torchvision's centre crop offset
    img = img.crop((top, top, top + RESMEM_CROP, top + RESMEM_CROP))
    return torch.from_numpy(np.asarray(img, np.float32) / 255.0).permute(2, 0, 1)


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def check_resmem(n: int, threads: int) -> None:
    """Is the rebuilt ResMem ResMem? Its scores must be sigmoid outputs spread around LaMem's
    mean, and rank LNSIM photos like people do (a wrong crop, scale or layer order would
    break the ranking long before the range)."""
    net, paths, humans = load_resmem(), photos(n), human_scores()
    with ThreadPoolExecutor(threads) as pool, torch.inference_mode():
        x = torch.stack(list(pool.map(resmem_tensor, paths)))
        got = torch.cat([net(x[i : i + 16]) for i in range(0, n, 16)]).numpy()
        x_norm = (x - torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)) / torch.tensor(
            [0.229, 0.224, 0.225]
        ).view(3, 1, 1)  # a deliberately wrong input: ImageNet-normalised
        wrong = torch.cat([net(x_norm[i : i + 16]) for i in range(0, n, 16)]).numpy()
    truth = [humans[p.name] for p in paths]
    print(f"ResMem on {n} LNSIM photos: min {got.min():.3f} max {got.max():.3f} "
          f"mean {got.mean():.3f} std {got.std():.3f}; Spearman vs humans "
          f"{spearman(got, truth):.3f}; with ImageNet-normalised input instead: "
          f"{spearman(wrong, truth):.3f}; "
          f"load {load():.1f}")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=256, help="photos (default: %(default)s)")
    ap.add_argument("--batch-sizes", default="32,1")
    ap.add_argument("--ours", default="torch", help="our runtimes, comma-separated: torch,onnx; "
                    "-notta (e.g. torch-notta) without test-time views; -bf16 (torch-bf16) the "
                    "trunk under bfloat16 autocast")  # fmt: skip
    ap.add_argument("--threads", type=int, default=2, help="torch (and ORT) threads")
    ap.add_argument("--workers", type=int, default=2, help="decoding threads, both sides")
    ap.add_argument("--check", type=int, metavar="N", help="only the ResMem sanity check")
    ap.add_argument("--model", help="our model (a registry name or a file; default: the "
                    "shipped default)")  # fmt: skip
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.check:
        check_resmem(args.check, args.workers)
        return 0

    import amnet
    from amnet.inference.engine import RunOptions
    from amnet.inference.images import iter_images

    header(f"ours vs ResMem on {args.n} LNSIM photos, batch sizes {args.batch_sizes}")
    model, trained = (args.model, True) if args.model else model_path()
    print(f"# ours: {model} ({'trained' if trained else 'untrained head, same speed'})")
    ours = {}
    for r in args.ours.split(","):  # "torch", "onnx", "torch-notta", "torch-notta-bf16", ...
        runtime, *flags = r.split("-")
        tta = False if "notta" in flags else None  # None: as the model says (views on)
        opts = RunOptions(runtime=runtime, views=tta, bfloat16="bf16" in flags)
        ours[f"ours-{r}"] = amnet.load(model, options=opts)
    net = load_resmem()
    paths = photos(args.n)
    pool = ThreadPoolExecutor(args.workers)

    def decoder(name: str):
        if name == "resmem":
            return lambda b: torch.stack(list(pool.map(resmem_tensor, b)))  # (B, 3, 227, 227)
        pp = ours[name].preprocess
        return lambda b: torch.stack([i.tensor for i in iter_images(b, pp, workers=args.workers)])

    def forward(name: str):
        if name == "resmem":
            return lambda x: net(x).numpy()
        return lambda x: np.array([p.score for p in ours[name].predict_tensors(x)])

    names = [*ours, "resmem"]
    with torch.inference_mode():
        for name in names:  # warm-up: first calls build kernels and allocate
            forward(name)(decoder(name)(paths[:2]))
        for bs in (int(b) for b in args.batch_sizes.split(",")):
            dec = {k: Timer() for k in names}
            mod = {k: Timer() for k in names}
            for i in range(0, args.n, bs):
                batch = paths[i : i + bs]
                for name in names if (i // bs) % 2 == 0 else names[::-1]:  # alternate order
                    x = dec[name].time(lambda n=name, b=batch: decoder(n)(b), len(batch))
                    mod[name].time(lambda n=name, x=x: forward(n)(x), len(batch))
            report(bs, names, dec, mod)
    pool.shutdown()
    return 0


def report(bs: int, names: list[str], dec: dict, mod: dict) -> None:
    print(f"\nbatch {bs}: images/s (wall) | model images per CPU-second | load average range")
    print(f"{'':12s} {'decode':>8s} {'model':>8s} {'end-to-end':>10s} {'model/cpu-s':>11s}  load")
    for k in names:
        e2e = dec[k].items / (dec[k].wall + mod[k].wall)
        print(f"{k:12s} {dec[k].rate:8.1f} {mod[k].rate:8.2f} {e2e:10.2f} "
              f"{mod[k].cpu_rate:11.3f}  {mod[k].load}")  # fmt: skip
    for k in names[:-1]:
        pairs = [r / o for o, r in zip(mod[k].samples, mod["resmem"].samples, strict=True)]
        e2e = [
            (rd + rm) / (od + om)
            for od, om, rd, rm in zip(dec[k].samples, mod[k].samples, dec["resmem"].samples,
                                      mod["resmem"].samples, strict=True)
        ]  # fmt: skip
        print(f"{k} / resmem: model {mod[k].rate / mod['resmem'].rate:.2f}x "
              f"(median of per-batch ratios {statistics.median(pairs):.2f}x), end-to-end "
              f"{statistics.median(e2e):.2f}x (median per batch); model images per CPU-second "
              f"{mod[k].cpu_rate / mod['resmem'].cpu_rate:.2f}x", flush=True)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
