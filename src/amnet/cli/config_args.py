"""Command-line flags generated from config dataclasses: every field is a flag (``--field-name``;
booleans get ``--name/--no-name``), so a new field is a new flag with no hand mapping; flags
left out keep the config's (or the --config file's) value. Help comes from the field's
``metadata["help"]`` or from its comment in the class source."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
from functools import cache
from typing import Any


@cache
def _comments(cls: type) -> dict[str, str]:
    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    return dict(re.findall(r"^\s+(\w+): [^#\n]*#\s*(.+)$", src, flags=re.M))


def add_config_args(
    p: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type, prefix: str,
    skip: tuple[str, ...] = (),
) -> None:  # fmt: skip
    """One flag per field of the dataclass ``cls`` (dest ``{prefix}.{field}``, default None)."""
    notes = _comments(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        flag, dest = f"--{f.name.replace('_', '-')}", f"{prefix}.{f.name}"
        text = f.metadata.get("help") or notes.get(f.name, "")
        text = f"{text} (default: {default})".strip().replace("%", "%%")
        if isinstance(default, bool):
            p.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction,
                           default=None, help=text)  # fmt: skip
        else:
            kind = type(default) if default is not None else str
            p.add_argument(flag, dest=dest, type=kind, default=None, metavar=kind.__name__.upper(),
                           help=text)  # fmt: skip


def config_changes(args: argparse.Namespace, prefix: str) -> dict[str, Any]:
    """The fields given on the command line for ``prefix`` (as ``add_config_args`` named them)."""
    head = f"{prefix}."
    return {
        k[len(head) :]: v for k, v in vars(args).items() if k.startswith(head) and v is not None
    }


def read_config(path: str | None) -> dict:
    """A job's JSON file: the same schema for ``amnet train`` and ``amnet cv`` (sections
    ``model`` and ``train``; ``amnet train`` also reads a ``data`` section and job fields such
    as ``out`` and ``trunk``, as it writes them to OUT/config.json)."""
    if not path:
        return {}
    with open(path) as f:
        d = json.load(f)
    if not isinstance(d, dict):
        raise ValueError(f"{path}: a config file holds a JSON object")
    return d
