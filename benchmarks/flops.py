"""The physical limit: FLOPs per image of the trunk, the head (and ResMem), this machine's
sustained float32 FLOP rate for a large matmul and for the trunk's own convolutions, and the
fraction of it the trunk reaches, all measured in the same run, interleaved round by round.

    python benchmarks/flops.py --rounds 3 --batch 32 --onnx --whole

FLOPs are counted by torch.utils.flop_counter (convolutions, matmuls, bmm; 2 per multiply-add);
BatchNorm, ReLU, additions and pooling are not counted (they are memory-bound and small).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _speed_common import Timer, header, load, model_path  # noqa: E402

from amnet.inference.engine import RunOptions, fold_batchnorm  # noqa: E402
from amnet.model.amnet import AMNet, model_views  # noqa: E402
from amnet.trunks.registry import create_trunk  # noqa: E402

ZEN3_FP32_FLOP_PER_CYCLE = 32  # 2 FMA pipes x 8 float32 lanes (AVX2) x 2 FLOPs


def count_flops(fn, *args) -> int:
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        fn(*args)
    return counter.get_total_flops()


def conv_shapes(trunk: nn.Module, size: int) -> list[tuple[nn.Conv2d, tuple[int, ...], int]]:
    """Each distinct convolution of the trunk: (module, input shape for batch 1, how many)."""
    seen: dict[tuple, list] = {}

    def hook(m: nn.Conv2d, inp, _out) -> None:
        shape = tuple(inp[0].shape[1:])  # (C, H, W)
        key = (m.in_channels, m.out_channels, m.kernel_size, m.stride, m.groups, shape)
        seen.setdefault(key, [m, shape, 0])[2] += 1

    hooks = [m.register_forward_hook(hook) for m in trunk.modules() if isinstance(m, nn.Conv2d)]
    with torch.inference_mode():
        trunk(torch.rand(1, 3, size, size))
    for h in hooks:
        h.remove()
    return [tuple(v) for v in seen.values()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32, help="images per trunk call")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--onnx", action="store_true", help="also time the trunk in ONNX Runtime")
    ap.add_argument("--matmul-s", type=float, default=5.0, help="seconds of matmul per round")
    ap.add_argument("--ghz", type=float, default=2.45, help="clock for the theoretical peak")
    ap.add_argument("--whole", action="store_true", help="also time the whole model (all its "
                    "test-time views) as amnet runs it")  # fmt: skip
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    header(f"FLOPs and the FLOP limit, batch {args.batch}, {args.rounds} rounds")

    size = 224
    trunk = create_trunk("resnet152")
    from amnet.checkpoint import load_checkpoint, resolve_model

    model, trained = model_path()
    head, _ = load_checkpoint(resolve_model(model))  # the default model's head (or ensemble)
    print(f"# head: {model} ({'trained' if trained else 'untrained, same size'})")
    x1 = torch.rand(1, 3, size, size)
    f_trunk = count_flops(trunk, x1)
    views = model_views(head, True)
    f_model = count_flops(lambda x: AMNet(trunk, head, model_views(head, True))(x), x1)
    f_notta = count_flops(lambda x: AMNet(trunk, head, model_views(head, False))(x), x1)
    from speed_resmem import load_resmem

    f_resmem = count_flops(load_resmem(), torch.rand(1, 3, 227, 227))
    print(f"FLOPs per image: trunk {f_trunk / 1e9:.2f} G per view; the whole model with its "
          f"{len(views)} views {views} {f_model / 1e9:.2f} G (heads, descriptors and kernel "
          f"{(f_model - len(views) * f_trunk) / 1e9:.2f} G), without test-time views "
          f"{f_notta / 1e9:.2f} G; ResMem {f_resmem / 1e9:.2f} G (ResMem / ours = "
          f"{f_resmem / f_model:.2f})")  # fmt: skip

    convs = conv_shapes(trunk, size)  # before folding: the same shapes either way
    fold_batchnorm(trunk)
    trunk.to(memory_format=torch.channels_last)
    cl, chunk = torch.channels_last, RunOptions().trunk_batch

    def default(
        x: torch.Tensor,
    ) -> list[torch.Tensor]:  # as amnet.inference.engine.torch_engine runs it
        return [trunk(c) for c in x.contiguous(memory_format=cl).split(chunk)]

    engines = {f"torch (default options: chunks of {chunk})": default}
    if args.onnx:
        engines["onnxruntime"] = onnx_trunk(trunk, size, args.threads)
    whole = {}  # the whole model, all its views, as amnet.load runs it: (FLOPs per image, fn)
    if args.whole:
        import amnet

        for rt in ("torch", *(["onnx"] if args.onnx else [])):
            p = amnet.load(model, options=RunOptions(runtime=rt))
            whole[f"whole model, {rt}"] = lambda x, p=p: p.engine(x)
    print(f"theoretical peak at {args.ghz} GHz: "
          f"{ZEN3_FP32_FLOP_PER_CYCLE * args.ghz * args.threads:.0f} GFLOP/s "
          f"({args.threads} cores x {ZEN3_FP32_FLOP_PER_CYCLE} FLOP/cycle)")  # fmt: skip

    n = 2048
    a, b = torch.rand(n, n), torch.rand(n, n)
    a_np, b_np = a.numpy(), b.numpy()
    ort_mm = onnx_matmul(args.threads) if args.onnx else None  # MLAS's sgemm
    xb = torch.rand(args.batch, 3, size, size)
    conv_in = {i: torch.rand(args.batch, *s).contiguous(memory_format=torch.channels_last)
               for i, (_, s, _) in enumerate(convs)}  # fmt: skip
    conv_flops = sum(  # per image
        2 * c.weight[0].numel() * c.out_channels * _out_hw(c, s) * k for c, s, k in convs
    )
    with torch.inference_mode():
        for e in (*engines.values(), *whole.values()):
            e(xb[:2])
        torch.mm(a, b)
        rows = []
        for r in range(args.rounds):
            row = {}  # (FLOPs per wall second, FLOPs per CPU-second) of each part of the round
            mm = Timer()
            while mm.wall < args.matmul_s:  # as long a window as a trunk call, roughly
                mm.time(lambda: torch.mm(a, b), 1)
            row["matmul"] = (2 * n**3 * mm.rate, 2 * n**3 * mm.cpu_rate)
            if ort_mm is not None:
                om = Timer()
                while om.wall < args.matmul_s:
                    om.time(lambda: ort_mm.run(None, {"a": a_np, "b": b_np}), 1)
                row["matmul ORT"] = (2 * n**3 * om.rate, 2 * n**3 * om.cpu_rate)
            cv = Timer()
            for i, (c, _s, k) in enumerate(convs):
                for _ in range(k):  # as many calls as the trunk makes (weights stay in cache)
                    cv.time(lambda c=c, i=i: c(conv_in[i]), 1)
            row["convs"] = (conv_flops / cv.wall * args.batch, conv_flops / cv.cpu * args.batch)
            for name, e in engines.items():
                t = Timer()
                t.time(lambda e=e: e(xb), args.batch)
                row[name] = (f_trunk * t.rate, f_trunk * t.cpu_rate)
            for name, e in whole.items():
                t = Timer()
                t.time(lambda e=e: e(xb), args.batch)
                row[name] = (f_model * t.rate, f_model * t.cpu_rate)
            rows.append((row, load()))
            print(f"round {r + 1}, load {load():.1f}: " + ", ".join(
                f"{k} {w / 1e9:.1f} GFLOP/s ({c / 1e9:.1f} per CPU-s)"
                for k, (w, c) in row.items()), flush=True)  # fmt: skip
    print(f"\nmedian over {args.rounds} rounds (each fraction taken within one round; "
          "wall-clock, and in brackets per CPU-second):")  # fmt: skip

    def med(name: str, j: int, over: str | None = None) -> float:
        return statistics.median(r[name][j] / (r[over][j] if over else 1) for r, _ in rows)

    best = max(("matmul", "matmul ORT", "convs"), key=lambda k: med(k, 0) if k in rows[0][0] else 0)
    peak = ZEN3_FP32_FLOP_PER_CYCLE * args.ghz * 1e9  # per core = per CPU-second
    for name in whole:
        print(f"  {name}: {med(name, 0) / 1e9:.1f} GFLOP/s = {med(name, 0) / f_model:.2f} "
              f"images/s; {100 * med(name, 0, best):.0f}% ({100 * med(name, 1, best):.0f}%) of "
              f"the best sustained rate ({best})")  # fmt: skip
    for name in engines:
        print(f"  trunk, {name}: {100 * med(name, 0, best):.0f}% "
              f"({100 * med(name, 1, best):.0f}%) of the best sustained rate ({best}); per "
              f"CPU-second {100 * med(name, 1) / peak:.0f}% of one core's theoretical peak at "
              f"{args.ghz} GHz")  # fmt: skip
    for name in engines:
        print(f"  trunk, {name}: {med(name, 0) / 1e9:.1f} GFLOP/s = "
              f"{med(name, 0) / f_trunk:.2f} images/s; {100 * med(name, 0, 'matmul'):.0f}% "
              f"({100 * med(name, 1, 'matmul'):.0f}%) of the matmul rate, "
              f"{100 * med(name, 0, 'convs'):.0f}% ({100 * med(name, 1, 'convs'):.0f}%) of its own "
              "convolutions run one by one")  # fmt: skip
    loads = [lo for _, lo in rows]
    print(f"  sustained: matmul {n}^3 {med('matmul', 0) / 1e9:.1f} GFLOP/s "
          f"({med('matmul', 1) / 1e9:.1f} per CPU-s), the trunk's convolutions (batch "
          f"{args.batch}, channels-last, one by one) {med('convs', 0) / 1e9:.1f} GFLOP/s "
          f"({med('convs', 1) / 1e9:.1f} per CPU-s); load {min(loads):.1f}-{max(loads):.1f}"
          )  # fmt: skip
    return 0


def _out_hw(c: nn.Conv2d, shape: tuple[int, ...]) -> int:
    _, h, w = shape
    oh = (h + 2 * c.padding[0] - c.kernel_size[0]) // c.stride[0] + 1
    ow = (w + 2 * c.padding[1] - c.kernel_size[1]) // c.stride[1] + 1
    return oh * ow


def onnx_matmul(threads: int):
    """An ONNX Runtime session computing a @ b (float32), to measure MLAS's sgemm."""
    import onnx
    from onnx import TensorProto, helper

    from amnet.inference.onnx import open_session

    path = Path(tempfile.gettempdir()) / "amnet-bench-matmul.onnx"
    if not path.is_file():
        inputs = [helper.make_tensor_value_info(k, TensorProto.FLOAT, [None, None]) for k in "ab"]
        out = helper.make_tensor_value_info("c", TensorProto.FLOAT, [None, None])
        graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "mm", inputs,
                                  [out])  # fmt: skip
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return open_session(path, threads)


def onnx_trunk(trunk: nn.Module, size: int, threads: int):
    from amnet.inference.onnx import open_session

    path = Path(tempfile.gettempdir()) / "amnet-bench-trunk.onnx"
    if not path.is_file():
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(trunk, (torch.rand(1, 3, size, size),), str(path), dynamo=False,
                              input_names=["x"], dynamic_axes={"x": {0: "b"}})  # fmt: skip
    session = open_session(path, threads)
    return lambda x: session.run(None, {"x": x.numpy()})[0]


if __name__ == "__main__":
    t0 = time.perf_counter()
    rc = main()
    print(f"# {time.perf_counter() - t0:.0f} s")
    sys.exit(rc)
