"""Tables with pyarrow for :mod:`amnet.apps.ray.engine`: Parquet/CSV tables of image paths in, the
result rows (``path, score, step_scores, error``) out, as one file or read back from shards.

Needs pyarrow (the ``ray`` extra); it is imported only when called."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from amnet.apps.files import iter_inputs
from amnet.apps.writers import FORMATS, open_writer
from amnet.types import Prediction

if TYPE_CHECKING:
    import pyarrow as pa

TABLE_SUFFIXES = (".parquet", ".csv")  # an input with these suffixes is a table of paths
FILE_SUFFIXES = (".parquet", *FORMATS)  # outputs written as one file
SHARD_SUFFIXES = (".parquet", ".csv")  # outputs written as a folder of shards


# -- inputs -------------------------------------------------------------------------------


def read_path_table(path: str, column: str = "path") -> list[str]:
    """The paths in ``column`` of a Parquet or CSV file; relative ones are taken relative to the
    table's folder (as in ``.txt`` lists)."""
    if path.lower().endswith(".parquet"):
        import pyarrow.parquet as pq

        schema = pq.read_schema(path)
        if column not in schema.names:
            raise ValueError(f"{path} has no column {column!r} (columns: {schema.names})")
        table = pq.read_table(path, columns=[column])
    else:
        import pyarrow as pa
        from pyarrow import csv

        opts = csv.ConvertOptions(include_columns=[column], column_types={column: pa.string()})
        try:
            table = csv.read_csv(path, convert_options=opts)
        except pa.ArrowInvalid as e:
            raise ValueError(f"{path}: cannot read column {column!r}: {e}") from None
    base = os.path.dirname(path)
    return [
        p if os.path.isabs(p) or "://" in p else os.path.join(base, p)
        for p in table.column(column).to_pylist()
        if p
    ]


def iter_paths(
    inputs: Iterable[str | os.PathLike], column: str = "path", *, recursive: bool = False
) -> Iterator[str]:
    """Image paths from command-line style inputs: Parquet/CSV tables of paths, and everything
    :func:`amnet.apps.files.iter_inputs` takes (files, folders, globs, ``.txt`` lists)."""
    for arg in inputs:
        arg = os.fspath(arg)
        if arg.lower().endswith(TABLE_SUFFIXES) and os.path.isfile(arg):
            yield from read_path_table(arg, column)
        else:
            yield from iter_inputs([arg], recursive=recursive)


# -- outputs ------------------------------------------------------------------------------


def output_layout(out: str | os.PathLike) -> tuple[str, bool]:
    """``(suffix, is_folder)`` for an output name; ValueError when it names no known format."""
    s = os.fspath(out)
    folder = s.endswith(("/", os.sep)) or os.path.isdir(s)
    suffix = os.path.splitext(s.rstrip("/" + os.sep))[1].lower()
    if folder or not suffix:
        if suffix and suffix not in SHARD_SUFFIXES:
            raise ValueError(f"a folder of shards is Parquet or CSV, not {suffix!r}: {s}")
        return suffix or ".parquet", True
    if suffix not in FILE_SUFFIXES:
        raise ValueError(
            f"cannot tell the output format of {s!r}: end it in {', '.join(FILE_SUFFIXES)} for "
            "one file, or '/' for a folder of Parquet shards ('.csv/' for CSV shards)"
        )
    return suffix, False


def result_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema([
        ("path", pa.string()), ("score", pa.float64()),
        ("step_scores", pa.list_(pa.float64())), ("error", pa.string()),
    ])  # fmt: skip


def csv_columns(batch: pa.Table) -> pa.Table:
    """Rows as the local CSV writes them: scores with 6 decimals, steps space-separated, no
    error as an empty string."""
    import pyarrow as pa

    from amnet.apps.writers import CSV_HEADER

    rows = [_prediction(r) for r in batch.to_pylist()]
    return pa.table({
        "path": [p.path or "" for p in rows],
        "score": ["" if p.score is None else f"{p.score:.6f}" for p in rows],
        "step_scores": [" ".join(f"{s:.6f}" for s in p.step_scores) for p in rows],
        "error": [p.error or "" for p in rows],
    }).select(list(CSV_HEADER))  # fmt: skip


def _prediction(row: dict) -> Prediction:
    return Prediction(
        row["path"], row["score"], tuple(row["step_scores"] or ()), error=row["error"]
    )


def count_rows(out: str, suffix: str) -> tuple[int, int]:
    """Rows and failures in a written folder of shards (read back from its error column)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as pds
    from pyarrow import csv

    fmt: Any = "parquet"
    if suffix == ".csv":  # every column as text: a shard without errors has an empty column
        opts = csv.ConvertOptions(column_types={c: pa.string() for c in result_schema().names})
        fmt = pds.CsvFileFormat(convert_options=opts)
    err = pds.dataset(out, format=fmt).to_table(columns=["error"]).column("error")
    failed = pc.sum(pc.and_(pc.is_valid(err), pc.not_equal(err, ""))).as_py() or 0
    return len(err), int(failed)


def write_one_file(batches: Iterable[pa.Table], out: str, suffix: str) -> tuple[int, int]:
    """Write result tables, as they come, to one file (atomically); returns (rows, failed).
    CSV and JSON are written by :mod:`amnet.apps.writers`, exactly as the local ``predict``."""
    rows = failed = 0
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        from amnet.fileio import atomic_write

        with atomic_write(out, "wb") as f, pq.ParquetWriter(f, result_schema()) as w:
            for b in batches:
                w.write_table(b.cast(result_schema()))
                rows += b.num_rows
                failed += b.num_rows - b.column("error").null_count
        return rows, failed
    with open_writer(out) as w:
        for b in batches:
            for row in b.to_pylist():
                w.write(_prediction(row))
                rows += 1
                failed += row["error"] is not None
    return rows, failed
