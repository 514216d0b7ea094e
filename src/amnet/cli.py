"""The ``amnet`` command: verb subcommands, each building a config and calling one library
function. ``main(argv) -> int`` so tests call it in-process.

Exit status: 0 success, 1 when some inputs failed (the rest are still written), 2 usage errors."""

from __future__ import annotations

import argparse
import sys

# Each subcommand is one function that adds its parser and sets ``func``: add new ones to
# SUBCOMMANDS (keep the bodies small; the work is done in the library).


def _models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list pretrained models and trunks")

    def run(args: argparse.Namespace) -> int:
        from .backbone import get_trunk_spec, list_trunks
        from .weights import get_model_entry, list_models

        print("models:")
        for name in list_models():
            e = get_model_entry(name)
            print(f"  {name:32s} trunk={e.trunk:20s} {e.description}")
        print("trunks:")
        for name in list_trunks():
            s = get_trunk_spec(name)
            print(f"  {name:20s} {s.channels}x14x14  licence: {s.licence}")
        return 0

    p.set_defaults(func=run)


SUBCOMMANDS = [_models]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="amnet",
        description="Image memorability estimation with attention (AMNet).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from . import __version__

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
