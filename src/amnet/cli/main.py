"""The ``amnet`` command: verb subcommands, each building a config and calling one library
function. ``main(argv) -> int`` so tests call it in-process.

Exit status: 0 success, 1 when some inputs failed (the rest are still written), 2 usage errors."""

from __future__ import annotations

import argparse
import sys

from amnet.cli import media as cli_media
from amnet.cli import train as cli_train

# Each subcommand is one function that adds its parser and sets ``func``: add new ones to
# SUBCOMMANDS (keep the bodies small; the work is done in the library).


def _models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list pretrained models and trunks")

    def run(args: argparse.Namespace) -> int:
        from amnet.checkpoint import get_model_entry, list_models
        from amnet.trunks.registry import get_trunk_spec, list_trunks

        default = get_model_entry("default").name
        print(f"models (default: {default}):")
        width = max(map(len, list_models()), default=0) + 1  # names line up, however long
        for name in list_models():
            e = get_model_entry(name)
            print(f"  {name:{width}s} trunk={e.trunk:20s} {e.description}")
        print("trunks:")
        for name in list_trunks():
            s = get_trunk_spec(name)
            print(f"  {name:20s} {s.channels}x14x14  licence: {s.licence}")
        return 0

    p.set_defaults(func=run)


def _count(min_value: int):
    def parse(s: str) -> int:
        try:
            n = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {s!r}") from None
        if n < min_value:
            raise argparse.ArgumentTypeError(f"must be at least {min_value}, got {n}")
        return n

    return parse


_PREDICT_EXAMPLES = """examples:
  amnet predict photo.jpg                          # a table on the terminal
  amnet predict photos/ --out scores.csv           # every image in a folder, as CSV
  amnet predict 'shots/**/*.jpg' --recursive --out scores.jsonl
  amnet predict list.txt --maps maps/ --out scores.json   # paths listed one per line
  amnet predict photos/ --model my-model.safetensors --device cuda --batch-size 64
  amnet predict archive.parquet --engine ray --address auto --actors 8 --out scores/
  amnet predict photos/ --runtime onnx --out scores.csv   # ONNX Runtime (amnet[onnx])

CSV columns: path,score,step_scores,error (step_scores space-separated, error empty when
scored). Exit status: 0 all scored, 1 some images failed (the rest are still written),
2 usage error."""


def _predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict", help="score images (files, folders, globs, .txt lists)",
        description="Score the memorability of images with an AMNet model.",
        epilog=_PREDICT_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="image file, folder, glob pattern, or .txt file listing paths")  # fmt: skip
    p.add_argument("--model", default="default", metavar="NAME|FILE",
                   help="registered model or .safetensors file (default: %(default)s)")  # fmt: skip
    p.add_argument("--out", metavar="FILE", help="write .csv, .jsonl or .json (default: a table)")
    p.add_argument("--maps", metavar="DIR", help="write one attention figure (PNG) per image")
    p.add_argument("--score-map", action=argparse.BooleanOptionalAction, default=True,
                   help="with --maps, add the whole score's sensitivity map (heads + prior: one "
                   "backward pass per image, ~1-4 s on a CPU) (default: on)")  # fmt: skip
    p.add_argument("--batch-size", type=_count(1), default=16, metavar="N")
    p.add_argument("--workers", type=_count(0), default=2, metavar="N",
                   help="image decoding threads (default: %(default)s)")  # fmt: skip
    p.add_argument("--device", default="cpu", metavar="cpu|cuda")
    p.add_argument("--recursive", action="store_true", help="also look inside sub-folders")
    _add_speed_options(p)
    _add_ray_options(p)

    def run(args: argparse.Namespace) -> int:
        if args.engine == "ray":
            return _predict_on_ray(args)
        from amnet.apps.predict import PredictJob, run_predict

        job = PredictJob(
            tuple(args.paths), model=args.model, out=args.out, maps=args.maps,
            batch_size=args.batch_size, workers=args.workers, device=args.device,
            recursive=args.recursive, options=_run_options(args), score_maps=args.score_map,
        )  # fmt: skip
        try:
            summary = run_predict(job)
        except (OSError, RuntimeError) as e:  # unreadable checkpoint, unwritable output, ...
            print(f"amnet predict: error: {str(e).splitlines()[0] if str(e) else repr(e)}",
                  file=sys.stderr)  # fmt: skip
            return 2
        return 0 if summary.total and not summary.failed else 1

    p.set_defaults(func=run)


def _add_speed_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("speed (figures in the README's 'Speed' section)")
    g.add_argument("--runtime", choices=("torch", "onnx"), default="torch",
                   help="onnx: ONNX Runtime, needs amnet[onnx]; the model is exported once "
                   "into the cache (default: %(default)s)")  # fmt: skip
    g.add_argument("--bfloat16", action="store_true",
                   help="trunk in bfloat16 (fast only on CPUs/GPUs with bf16 units)")  # fmt: skip
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the trunk (needs a C++ compiler; slow start)")  # fmt: skip
    g.add_argument("--views", "--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="test-time views: also score each image's mirror image (and, for a "
                   "kernel prior fitted so, centre crops) and average; default: as the model "
                   "was measured (on for the shipped default)")  # fmt: skip


def _run_options(args: argparse.Namespace):
    from amnet.inference.engine import RunOptions

    return RunOptions(runtime=args.runtime, bfloat16=args.bfloat16, compile=args.compile,
                      views=args.views)  # fmt: skip


def _add_ray_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "on Ray (needs amnet[ray])",
        "--engine ray scores with a pool of Ray actors, one model each. PATH may also be a\n"
        ".parquet/.csv table with a column of paths. --out names one .parquet/.csv/.jsonl/.json\n"
        "file, or a folder of Parquet shards ('scores/'; 'scores.csv/' for CSV shards).",
    )
    g.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="where to score (default: %(default)s)")  # fmt: skip
    g.add_argument("--address", metavar="auto|ray://HOST:PORT",
                   help="join this Ray cluster (default: start a local Ray)")  # fmt: skip
    g.add_argument("--actors", type=_count(1), default=1, metavar="N",
                   help="actors, each holding one model (default: %(default)s)")  # fmt: skip
    g.add_argument("--cpus-per-actor", type=float, default=1.0, metavar="N",
                   help="CPUs (and torch threads) per actor (default: %(default)s)")  # fmt: skip
    g.add_argument("--column", default="path",
                   help="the column of paths in a table PATH (default: %(default)s)")  # fmt: skip


def _predict_on_ray(args: argparse.Namespace) -> int:
    from amnet.apps.ray.engine import predict_ray

    if not args.out or args.maps:
        raise ValueError("--engine ray needs --out (a file or a folder/) and has no --maps")
    try:
        s = predict_ray(
            args.paths, args.out, model=args.model, address=args.address,
            num_actors=args.actors, cpus_per_actor=args.cpus_per_actor,
            batch_size=args.batch_size, column=args.column,
            use_gpu=args.device.startswith("cuda"), recursive=args.recursive,
            progress=sys.stderr.isatty(),
        )  # fmt: skip
    except (ImportError, OSError, RuntimeError) as e:  # no Ray, Ray unreachable, unwritable out
        msg = str(e).splitlines()[0] if str(e) else repr(e)
        print(f"amnet predict: error: {msg}", file=sys.stderr)
        return 2
    print(f"{s.rows} images, {s.failed} failed, {s.images_per_second:.1f} images/s -> {s.out}",
          file=sys.stderr)  # fmt: skip
    return 0 if s.rows and not s.failed else 1


SUBCOMMANDS = [_models, _predict]


_SERVE_EXAMPLES = """examples:
  amnet serve                                   # http://127.0.0.1:8000 (page, API, /docs)
  amnet serve --model my-model.safetensors --port 8080
  amnet serve --host 0.0.0.0 --workers 2 --max-queue 128   # reachable from other machines

Every limit answers with JSON {"error": code, "message": text}: 413 for bytes and pixels,
422 for too many files, 503 + Retry-After when the queue is full, 504 on timeout."""


def _serve(sub: argparse._SubParsersAction) -> None:
    from dataclasses import fields

    from amnet.apps.serve.app import ServeConfig

    p = sub.add_parser(
        "serve", help="web page and HTTP API (needs amnet[serve])",
        description="Serve the web demo at / and the HTTP API (/v1/predict, /docs).",
        epilog=_SERVE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: %(default)s)")
    p.add_argument("--port", type=_count(1), default=8000, help="(default: %(default)s)")
    p.add_argument("--model", default="default", metavar="NAME|FILE",
                   help="registered model or .safetensors file (default: %(default)s)")  # fmt: skip
    p.add_argument("--workers", type=_count(1), default=1, metavar="N",
                   help="server processes, each with the model (default: 1)")  # fmt: skip
    p.add_argument("--device", default="cpu", metavar="cpu|cuda")
    limits = p.add_argument_group("limits and batching")
    for f in fields(ServeConfig):
        flag = f"--{f.name.replace('_', '-')}"
        limits.add_argument(flag, type=type(f.default), default=f.default, metavar="N",
                            help=f"{f.metadata['help']} (default: %(default)s)")  # fmt: skip

    def run(args: argparse.Namespace) -> int:
        from amnet.apps.serve.app import run as serve

        cfg = ServeConfig(**{f.name: getattr(args, f.name) for f in fields(ServeConfig)})
        serve(args.model, host=args.host, port=args.port, workers=args.workers,
              device=args.device, config=cfg)  # fmt: skip
        return 0

    p.set_defaults(func=run)


SUBCOMMANDS.append(_serve)


def _export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="write a model as one ONNX file (needs amnet[onnx])",
        description="Export trunk + head as one ONNX graph: images (B, 3, S, S) -> score, "
        "step_scores, attention. The checkpoint's metadata is stored in the file.",
        epilog="examples:\n  amnet export --onnx amnet.onnx\n"
        "  amnet export --onnx mine.onnx --model my-model.safetensors\n"
        "  amnet predict photos/ --model amnet.onnx --out scores.csv",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("--onnx", required=True, metavar="FILE", help="the .onnx file to write")
    p.add_argument("--model", default="default", metavar="NAME|FILE",
                   help="registered model or .safetensors file (default: %(default)s)")  # fmt: skip
    p.add_argument("--no-check", action="store_true",
                   help="do not compare ONNX Runtime with PyTorch on 2 random images")  # fmt: skip

    def run(args: argparse.Namespace) -> int:
        from amnet.checkpoint import read_metadata, resolve_model
        from amnet.inference.onnx import export_checkpoint
        from amnet.trunks.registry import get_trunk_spec

        trunk = read_metadata(resolve_model(args.model))["trunk"]
        try:
            path, diff = export_checkpoint(args.model, args.onnx, check=not args.no_check)
        except (ImportError, OSError, RuntimeError) as e:
            print(f"amnet export: error: {str(e).splitlines()[0]}", file=sys.stderr)
            return 2
        check = "" if diff is None else f"; |score ONNX - torch| <= {diff:.1e}"
        print(f"wrote {path} ({path.stat().st_size / 1e6:.0f} MB){check}", file=sys.stderr)
        print(f"it contains the {trunk} trunk's weights; licence: {get_trunk_spec(trunk).licence}",
              file=sys.stderr)  # fmt: skip
        return 0

    p.set_defaults(func=run)


SUBCOMMANDS.append(_export)
SUBCOMMANDS.extend(cli_train.SUBCOMMANDS)  # cache, train, evaluate, cv
SUBCOMMANDS.append(cli_media.register)  # report, video


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="amnet",
        description="Image memorability estimation with attention (AMNet).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from amnet import __version__

    parser.add_argument("--version", action="version", version=f"amnet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on usage errors, 0 on --help
        return int(e.code or 0)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, KeyError, ValueError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"amnet {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
