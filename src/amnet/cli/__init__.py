"""The ``amnet`` command: a thin shell over the library (``main(argv) -> int``)."""

from amnet.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
