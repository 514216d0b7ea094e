"""Score many images on a Ray cluster: Ray Data ``map_batches`` over a pool of actors, each
holding one :class:`~amnet.predict.Predictor` (the model is loaded once per actor).

Needs the ``ray`` extra (``pip install 'amnet[ray]'``); Ray is imported only when called.

Inputs are named as for the local ``amnet predict`` (files, folders, globs, ``.txt`` lists) or
as a Parquet/CSV table with a column of paths. The output's name picks the format:

- ``scores.parquet``, ``scores.csv``, ``scores.jsonl``, ``scores.json``: one file, in input
  order, written by the driver (CSV/JSON byte for byte as the local ``predict`` writes them);
- ``scores/`` (a trailing slash, an existing folder or a name without a suffix): a folder of
  Parquet shards, or of CSV shards for ``scores.csv/``, written by the actors in parallel.

Columns are ``path, score, step_scores, error``: a bad image is a row with an ``error`` (and no
score), never a failed job. Ray restarts a killed actor and retries its batches; each shard's
name is fixed by its task, so a retried task rewrites its own shard and no image is lost or
written twice.

>>> predict_ray("photos/", "scores.parquet", model="default", num_actors=2)  # doctest: +SKIP
RayRunSummary(rows=1000, failed=0, seconds=41.2, out='scores.parquet')
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .inputs import iter_inputs
from .predict import Prediction
from .writers import FORMATS, open_writer, record

if TYPE_CHECKING:
    import pyarrow as pa

TABLE_SUFFIXES = (".parquet", ".csv")  # an input with these suffixes is a table of paths
FILE_SUFFIXES = (".parquet", *FORMATS)  # outputs written as one file
SHARD_SUFFIXES = (".parquet", ".csv")  # outputs written as a folder of shards
_FILE_COLUMN = "_file"  # the path the actor opens (made absolute); ``path`` is kept as given


@dataclass(frozen=True)
class RayPredictConfig:
    """How to score with Ray. Every field can be passed to :func:`predict_ray` by name."""

    model: str = "default"  # registry name or .safetensors checkpoint (readable on every node)
    address: str | None = None  # None: start a local Ray; "auto" or "ray://host:port": join one
    num_actors: int = 1  # size of the actor pool (each holds one model)
    batch_size: int = 16  # images per model call (and per Ray Data batch)
    use_gpu: bool = False  # one GPU per actor, model on "cuda"
    cpus_per_actor: float = 1.0  # CPUs reserved by each actor (also its torch threads)
    column: str = "path"  # the column of paths in a Parquet/CSV input
    recursive: bool = False  # also list sub-folders of folder inputs
    progress: bool = False  # Ray Data's progress output

    def __post_init__(self) -> None:
        if self.num_actors < 1 or self.batch_size < 1 or self.cpus_per_actor <= 0:
            raise ValueError("num_actors and batch_size must be >= 1, cpus_per_actor > 0")


@dataclass(frozen=True)
class RayRunSummary:
    rows: int  # images written (scored or failed)
    failed: int  # rows with an error
    seconds: float  # wall time of the Ray job, from submitting to the last row written
    out: str

    @property
    def images_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else math.nan


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
    :func:`amnet.inputs.iter_inputs` takes (files, folders, globs, ``.txt`` lists)."""
    for arg in inputs:
        arg = os.fspath(arg)
        if arg.lower().endswith(TABLE_SUFFIXES) and os.path.isfile(arg):
            yield from read_path_table(arg, column)
        else:
            yield from iter_inputs([arg], recursive=recursive)


def _absolute(path: str) -> str:
    """Workers run in other folders (or on other machines): they get absolute paths."""
    return path if "://" in path else os.path.abspath(path)


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

    from .writers import CSV_HEADER

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


# -- the actor ----------------------------------------------------------------------------


class PredictorActor:
    """A Ray Data callable class: one Predictor per actor, a batch of paths in, rows out."""

    def __init__(self, cfg: RayPredictConfig) -> None:
        import torch

        if not cfg.use_gpu:
            torch.set_num_threads(max(1, round(cfg.cpus_per_actor)))
        from .predict import load

        device = "cuda" if cfg.use_gpu else "cpu"
        self.predictor = load(cfg.model, device=device, batch_size=cfg.batch_size)

    def __call__(self, batch: pa.Table) -> pa.Table:
        import pyarrow as pa

        paths = batch.column("path").to_pylist()
        preds = self.predictor.predict_iter(batch.column(_FILE_COLUMN).to_pylist())
        rows = [
            record(dataclasses.replace(p, path=path)) for path, p in zip(paths, preds, strict=True)
        ]
        return pa.Table.from_pylist(rows, schema=result_schema())


# -- the job ------------------------------------------------------------------------------


def _connect(address: str | None) -> bool:
    """Join or start Ray unless this process already did; True when we started it here."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address is None:  # a private local Ray, on loopback only
        ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="warning")
    else:
        ray.init(address=address, logging_level="warning")
    return True


def _blocks(paths: list[str], cfg: RayPredictConfig) -> list[pa.Table]:
    """Paths split into blocks: about 4 per actor, whole batches each, at most 64 batches."""
    import pyarrow as pa

    n = len(paths)
    per_block = min(64 * cfg.batch_size, max(1, math.ceil(n / (4 * cfg.num_actors))))
    return [
        pa.table({"path": paths[i : i + per_block],
                  _FILE_COLUMN: [_absolute(p) for p in paths[i : i + per_block]]})
        for i in range(0, n, per_block)
    ]  # fmt: skip


def _check_folder(out: str) -> None:
    if "://" not in out and os.path.isdir(out) and os.listdir(out):
        raise ValueError(f"output folder {out} is not empty: remove it or name another")


def _count_folder(out: str, suffix: str) -> tuple[int, int]:
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


def write_one_file(ds: Any, out: str, suffix: str) -> tuple[int, int]:
    """Stream the rows to one file through the driver, in input order; (rows, failed)."""
    rows = failed = 0
    batches = ds.iter_batches(batch_format="pyarrow", batch_size=None)
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        from .hub import atomic_write

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


def predict_ray(
    inputs: str | os.PathLike | Iterable[str | os.PathLike],
    out: str | os.PathLike,
    config: RayPredictConfig | None = None,
    **overrides: Any,
) -> RayRunSummary:
    """Score every image named by ``inputs`` on Ray and write the rows to ``out``.

    Args:
        inputs: a path or a list of them: image files, folders, globs, ``.txt`` lists, or
            Parquet/CSV tables with a column of paths (``column``). Every node must be able to
            read the images at the paths given (a shared file system on a real cluster).
        out: the output; its name picks the format and layout (see the module docstring).
        config: a :class:`RayPredictConfig`; ``overrides`` replace its fields by name
            (``model=``, ``address=``, ``num_actors=``, ``batch_size=``, ``use_gpu=`` ...).

    Uses the Ray this process is already connected to, if any; otherwise joins ``address``,
    or starts a local Ray (and stops it afterwards)."""
    cfg = dataclasses.replace(config or RayPredictConfig(), **overrides)
    out = os.fspath(out)
    suffix, folder = output_layout(out)
    if folder:
        _check_folder(out)
    if isinstance(inputs, str | os.PathLike):
        inputs = [inputs]
    paths = list(iter_paths(inputs, cfg.column, recursive=cfg.recursive))
    if not paths:
        raise ValueError("no images found in the inputs")

    import ray

    started = _connect(cfg.address)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = cfg.progress
        if not cfg.progress:  # Ray Data logs each run's plan and progress at INFO
            logging.getLogger("ray.data").setLevel(logging.WARNING)
        t0 = time.perf_counter()
        ds = ray.data.from_arrow(_blocks(paths, cfg))
        ds.context.execution_options.preserve_order = True
        ds = ds.map_batches(
            PredictorActor,
            fn_constructor_args=(cfg,),
            batch_size=cfg.batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=cfg.num_actors),
            num_cpus=cfg.cpus_per_actor,
            num_gpus=1 if cfg.use_gpu else 0,
        )
        if folder and suffix == ".csv":
            ds = ds.map_batches(csv_columns, batch_format="pyarrow", batch_size=None)
            ds.write_csv(out)
        elif folder:
            ds.write_parquet(out)
        else:
            rows, failed = write_one_file(ds, out, suffix)
        seconds = time.perf_counter() - t0
    finally:
        if started:
            ray.shutdown()
    if folder:
        rows, failed = _count_folder(out, suffix)
    return RayRunSummary(rows, failed, round(seconds, 3), out)
