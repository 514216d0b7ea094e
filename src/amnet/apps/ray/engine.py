"""Score many images on a Ray cluster: Ray Data ``map_batches`` over a pool of actors, each
holding one :class:`~amnet.inference.predictor.Predictor` (the model is loaded once per actor).

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

import contextlib
import dataclasses
import logging
import math
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from amnet.apps.ray.tables import (
    count_rows,
    csv_columns,
    iter_paths,
    output_layout,
    result_schema,
    write_one_file,
)
from amnet.apps.writers import record

if TYPE_CHECKING:
    import pyarrow as pa

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


def _absolute(path: str) -> str:
    """Workers run in other folders (or on other machines): they get absolute paths."""
    return path if "://" in path else os.path.abspath(path)


# -- the actor ----------------------------------------------------------------------------


class PredictorActor:
    """A Ray Data callable class: one Predictor per actor, a batch of paths in, rows out."""

    def __init__(self, cfg: RayPredictConfig) -> None:
        import torch

        if not cfg.use_gpu:
            torch.set_num_threads(max(1, round(cfg.cpus_per_actor)))
        from amnet.inference.predictor import load

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


@contextlib.contextmanager
def _data_context(progress: bool) -> Iterator[None]:
    """Ray Data settings for one run, restored afterwards: rows kept in input order; quiet
    (no progress bars, no INFO log of each run's plan) unless ``progress``."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    log = logging.getLogger("ray.data")
    saved = ctx.execution_options.preserve_order, ctx.enable_progress_bars, log.level
    ctx.execution_options.preserve_order, ctx.enable_progress_bars = True, progress
    if not progress:
        log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        ctx.execution_options.preserve_order, ctx.enable_progress_bars = saved[:2]
        log.setLevel(saved[2])


def _dataset(paths: list[str], cfg: RayPredictConfig) -> Any:
    """The paths as a Ray Dataset in blocks of about ``n / (4 * actors)`` rows (at most 64
    batches each), so every actor gets work and a retried block is small.

    Built in the driver with ``from_items``: ``from_arrow`` sends each table to a remote task
    for its metadata, and with ray 2.60 / pyarrow 26 that task now and then aborts
    (absl "Mutex corrupt"; Ray retries it, but it need not happen at all)."""
    import ray.data

    n = len(paths)
    per_block = min(64 * cfg.batch_size, max(1, math.ceil(n / (4 * cfg.num_actors))))
    rows = [{"path": p, _FILE_COLUMN: _absolute(p)} for p in paths]
    return ray.data.from_items(rows, override_num_blocks=math.ceil(n / per_block))


def _client_connected() -> bool:
    from ray.util.client import ray as client

    return client.is_connected()


def _on_the_cluster(
    inputs: Iterable[str | os.PathLike], out: str, cfg: RayPredictConfig
) -> RayRunSummary:
    """Through Ray Client (``ray://``), Ray Data cannot run its driver here: run the whole job
    as a task on the cluster instead. Inputs and ``out`` are then paths on the cluster."""
    import ray

    started = _connect(cfg.address)
    try:
        job = ray.remote(num_cpus=0)(predict_ray)
        slash = "/" if out.endswith(("/", os.sep)) else ""  # keeps "scores.csv/" a folder
        args = [_absolute(os.fspath(i)) for i in inputs], _absolute(out) + slash
        return ray.get(job.remote(*args, dataclasses.replace(cfg, address=None)))
    finally:
        if started:
            ray.shutdown()


def _check_folder(out: str) -> None:
    if "://" not in out and os.path.isdir(out) and os.listdir(out):
        raise ValueError(f"output folder {out} is not empty: remove it or name another")


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
    try:
        import ray.data
    except ImportError:
        raise ImportError("scoring on Ray needs the ray extra: pip install 'amnet[ray]'") from None
    if os.path.isfile(cfg.model):  # a checkpoint file: workers run in other folders
        cfg = dataclasses.replace(cfg, model=_absolute(cfg.model))
    out = os.fspath(out)
    suffix, folder = output_layout(out)
    if isinstance(inputs, str | os.PathLike):
        inputs = [inputs]
    if (cfg.address or "").startswith("ray://") or _client_connected():
        return _on_the_cluster(inputs, out, cfg)
    if folder:
        _check_folder(out)
    paths = list(iter_paths(inputs, cfg.column, recursive=cfg.recursive))
    if not paths:
        raise ValueError("no images found in the inputs")

    started = _connect(cfg.address)
    try:
        with _data_context(cfg.progress):
            t0 = time.perf_counter()
            ds = _dataset(paths, cfg).map_batches(
                PredictorActor,
                fn_constructor_args=(cfg,),
                batch_size=cfg.batch_size,
                batch_format="pyarrow",
                compute=ray.data.ActorPoolStrategy(size=cfg.num_actors),
                num_cpus=cfg.cpus_per_actor,
                num_gpus=1 if cfg.use_gpu else 0,
            )
            if folder and suffix == ".csv":
                ds.map_batches(csv_columns, batch_format="pyarrow", batch_size=None).write_csv(out)
            elif folder:
                ds.write_parquet(out)
            else:
                batches = ds.iter_batches(batch_format="pyarrow", batch_size=None)
                rows, failed = write_one_file(batches, out, suffix)
            seconds = time.perf_counter() - t0
    finally:
        if started:
            ray.shutdown()
    if folder:
        rows, failed = count_rows(out, suffix)
    return RayRunSummary(rows, failed, round(seconds, 3), out)
