"""Writing predictions as they stream: CSV, JSON Lines, JSON, or a readable table.

Files are written to a temporary file beside the target and renamed into place when the run
ends, so a crash never leaves a half-written result where a complete one is expected.

CSV columns are exactly ``path,score,step_scores,error``: ``step_scores`` is space-separated
and ``error`` is empty when the image was scored. JSON Lines and JSON objects have the keys
``path``, ``score``, ``step_scores`` and ``error`` (``null`` score and error when absent)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from collections.abc import Callable, Iterator
from typing import IO, Protocol

from amnet.fileio import atomic_write
from amnet.types import Prediction

CSV_HEADER = ("path", "score", "step_scores", "error")
FORMATS = (".csv", ".jsonl", ".json")


class Writer(Protocol):
    def write(self, pred: Prediction) -> None: ...

    def close(self) -> None: ...


def output_format(path: str | os.PathLike) -> str:
    """The format of an output file from its suffix; ValueError for anything else."""
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix not in FORMATS:
        raise ValueError(
            f"cannot tell the output format of {os.fspath(path)!r}: "
            f"the file name must end in {', '.join(FORMATS)}"
        )
    return suffix


def text(s: str | None) -> str:
    """A string safe to write as UTF-8: file names that are not valid UTF-8 (held by Python
    as surrogate escapes) get their odd bytes written as ``\\xNN``."""
    if not s:
        return ""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def record(pred: Prediction) -> dict:
    """One prediction as a plain dict with the output keys (scores rounded to 6 decimals)."""
    return {
        "path": None if pred.path is None else text(pred.path),
        "score": None if pred.score is None else round(pred.score, 6),
        "step_scores": [round(s, 6) for s in pred.step_scores],
        "error": None if pred.error is None else text(pred.error),
    }


class CsvWriter:
    def __init__(self, f: IO[str]) -> None:
        self._w = csv.writer(f, lineterminator="\n")
        self._w.writerow(CSV_HEADER)

    def write(self, pred: Prediction) -> None:
        score = "" if pred.score is None else f"{pred.score:.6f}"
        steps = " ".join(f"{s:.6f}" for s in pred.step_scores)
        self._w.writerow((text(pred.path), score, steps, text(pred.error)))

    def close(self) -> None:
        pass


class JsonLinesWriter:
    def __init__(self, f: IO[str]) -> None:
        self._f = f

    def write(self, pred: Prediction) -> None:
        self._f.write(json.dumps(record(pred), ensure_ascii=False) + "\n")

    def close(self) -> None:
        pass


class JsonWriter:
    """A JSON array, streamed one object at a time (never held in memory as a whole)."""

    def __init__(self, f: IO[str]) -> None:
        self._f = f
        self._n = 0
        f.write("[")

    def write(self, pred: Prediction) -> None:
        self._f.write(
            ("," if self._n else "") + "\n  " + json.dumps(record(pred), ensure_ascii=False)
        )
        self._n += 1

    def close(self) -> None:
        self._f.write("\n]\n" if self._n else "]\n")


class TableWriter:
    """A table for people: score, per-step scores and path; failures as ``error`` lines.

    ``emit`` prints one line (the CLI passes one that keeps a progress bar intact)."""

    def __init__(self, emit: Callable[[str], None], steps: int) -> None:
        self._emit = emit
        self._width = max(len("step scores"), 7 * steps - 1)
        self._header = False

    def write(self, pred: Prediction) -> None:
        if not self._header:
            self._emit(f"{'score':<6}  {'step scores':<{self._width}}  path")
            self._header = True
        if pred.ok:
            steps = " ".join(f"{s:.4f}" for s in pred.step_scores)
            self._emit(f"{pred.score:.4f}  {steps:<{self._width}}  {text(pred.path)}")
        else:
            self._emit(f"{'error':<6}  {text(pred.path)}: {text(pred.error)}")

    def close(self) -> None:
        pass


_FILE_WRITERS = {".csv": CsvWriter, ".jsonl": JsonLinesWriter, ".json": JsonWriter}


@contextlib.contextmanager
def open_writer(
    out: str | os.PathLike | None, *, steps: int = 3, emit: Callable[[str], None] = print
) -> Iterator[Writer]:
    """A writer for ``out`` (by suffix), or a table printed with ``emit`` when ``out`` is None.

    The file appears (atomically) only when the ``with`` block ends without an exception."""
    if out is None:
        table = TableWriter(emit, steps)
        yield table
        table.close()
        return
    cls = _FILE_WRITERS[output_format(out)]
    with atomic_write(out, "wb") as raw:
        f = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        writer = cls(f)
        yield writer
        writer.close()
        f.flush()
        f.detach()  # the raw file is synced, closed and renamed by atomic_write
