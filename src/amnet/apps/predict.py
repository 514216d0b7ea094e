"""Scoring files in bulk: what ``amnet predict`` does, as one library function.

Paths are expanded lazily (:mod:`amnet.apps.files`), decoded in parallel with the model
(:class:`amnet.inference.predictor.Predictor`), and each result is written as soon as it is ready
(:mod:`amnet.apps.writers`), with optional attention figures (:mod:`amnet.apps.figures`).
Memory stays bounded whatever the number of images.

>>> job = PredictJob(("photos/",), model="my.safetensors", out="scores.csv")
>>> summary = run_predict(job)       # doctest: +SKIP
>>> summary.scored, summary.failed   # doctest: +SKIP
(120, 2)
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO

import torch

from amnet.apps.files import iter_inputs
from amnet.apps.writers import open_writer, output_format, text
from amnet.inference.engine import RunOptions
from amnet.inference.predictor import Predictor
from amnet.types import Prediction

MAX_SHOWN_ERRORS = 10  # failures echoed on stderr; all of them are in the output


@dataclass(frozen=True)
class PredictJob:
    """Everything ``amnet predict`` needs; validated on creation (ValueError = usage error)."""

    paths: tuple[str, ...]
    model: str = "default"
    out: str | None = None  # .csv, .jsonl or .json; None: a table on stdout
    maps: str | None = None  # folder for one attention figure per image
    score_maps: bool = True  # the figures add the whole score's sensitivity (a backward pass)
    batch_size: int = 16
    workers: int = 2  # decoding threads (0: decode in the main thread)
    device: str = "cpu"
    recursive: bool = False
    progress: bool | None = None  # None: a progress bar only when stderr is a terminal
    options: RunOptions = RunOptions()  # how the model runs (runtime, bfloat16, compile)

    def __post_init__(self) -> None:
        if not self.paths:
            raise ValueError("no PATH given: name image files, folders, patterns or .txt lists")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.workers < 0:
            raise ValueError(f"--workers must be 0 or more, got {self.workers}")
        if self.out is not None:
            output_format(self.out)
            if os.path.isdir(self.out):
                raise ValueError(f"--out {self.out!r} is a folder; give a file name")
        if self.maps is not None and os.path.exists(self.maps) and not os.path.isdir(self.maps):
            raise ValueError(f"--maps {self.maps!r} exists and is not a folder")


@dataclass(frozen=True)
class PredictSummary:
    total: int
    failed: int
    seconds: float
    out: str | None = None
    maps_written: int = 0

    @property
    def scored(self) -> int:
        return self.total - self.failed

    @property
    def images_per_second(self) -> float:
        return self.total / self.seconds if self.seconds > 0 else 0.0


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``, checked against what this machine has."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine; use cpu")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {name!r}; use cpu or cuda")
    return device


def load_predictor(job: PredictJob) -> Predictor:
    """The job's model as a Predictor, with errors that tell the user what to do."""
    return load_model(job.model, device=job.device, batch_size=job.batch_size,
                      workers=job.workers, options=job.options)  # fmt: skip


def load_model(
    model: str, *, device: str = "cpu", batch_size: int = 16, workers: int = 2,
    options: RunOptions | None = None,
) -> Predictor:  # fmt: skip
    """``model`` (a name or a checkpoint file) as a Predictor, for any job that scores images
    (predict, report, video), with errors that tell the user what to do."""
    from amnet.checkpoint import get_model_entry

    if model == "default" and not os.path.exists(model):
        try:
            get_model_entry("default")
        except KeyError:
            raise ValueError(
                "no default model is installed yet; pass --model FILE.safetensors "
                "(an amnet checkpoint) or a name listed by `amnet models`"
            ) from None
    return Predictor.from_checkpoint(
        model,
        device=resolve_device(device),
        batch_size=batch_size,
        workers=workers,
        options=options or RunOptions(),
    )


def _render(pred: Prediction, folder: str, score_map=None, share: float | None = None):
    """Write one figure; returns an error line instead of raising."""
    from amnet.apps.figures import save_map

    try:
        save_map(pred, folder, score_map=score_map, heads_share=share)
        return None
    except Exception as e:  # noqa: BLE001 - a failed figure never stops the batch
        return f"{text(pred.path)}: map not written: {str(e).splitlines()[0] if str(e) else e}"


def _score_mapper(predictor: Predictor):
    """A function path -> the whole score's sensitivity map (``amnet.inference.maps``), or
    None when the model has no torch modules (an .onnx file)."""
    from amnet.inference.maps import file_score_map

    if predictor.trunk is None or predictor.head is None:
        return None
    module = predictor.as_module()
    return lambda path: file_score_map(module, path)


def run_predict(
    job: PredictJob, *, stdout: IO[str] | None = None, stderr: IO[str] | None = None
) -> PredictSummary:
    """Score every image the job names, write the results and a one-line summary (stderr)."""
    from tqdm import tqdm

    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    predictor = load_predictor(job)
    steps = predictor.steps
    show = job.progress if job.progress is not None else stderr.isatty()
    bar = tqdm(
        unit=" images",
        file=stderr,
        disable=not show,
        dynamic_ncols=True,
        mininterval=0.5,
        smoothing=0.05,
    )

    def say(line: str, stream: IO[str]) -> None:
        if show:
            bar.write(line, file=stream)  # keeps the bar below the text
        else:
            print(line, file=stream)

    maps_pool = ThreadPoolExecutor(max(1, job.workers)) if job.maps else None
    score_map = _score_mapper(predictor) if job.maps and job.score_maps else None
    share = 1.0 - float(getattr(predictor.head, "prior_mix", predictor.meta.get("prior_mix", 0)))
    maps_pending: deque[Future] = deque()
    total = failed = maps_written = 0

    def collect_map(f: Future) -> None:
        nonlocal maps_written
        err = f.result()
        if err:
            say(f"amnet predict: {err}", stderr)
        else:
            maps_written += 1

    start = time.perf_counter()
    try:
        if job.maps:
            os.makedirs(job.maps, exist_ok=True)
        sources = iter_inputs(job.paths, recursive=job.recursive)
        with open_writer(job.out, steps=steps, emit=lambda s: say(s, stdout)) as writer:
            for pred in predictor.predict_iter(sources):
                writer.write(pred)
                total += 1
                bar.update(1)
                if not pred.ok:
                    failed += 1
                    if failed <= MAX_SHOWN_ERRORS and job.out is not None:
                        say(f"amnet predict: {text(pred.path)}: {pred.error}", stderr)
                elif maps_pool is not None and job.maps is not None:
                    smap = None
                    if score_map is not None:  # the model's own thread: not beside the decoding
                        try:
                            smap = score_map(pred.path)
                        except Exception as e:  # noqa: BLE001 - the figure goes on without it
                            why = str(e).splitlines()[0] if str(e) else type(e).__name__
                            say(f"amnet predict: {text(pred.path)}: no whole-score map: {why}",
                                stderr)  # fmt: skip
                    maps_pending.append(maps_pool.submit(_render, pred, job.maps, smap, share))
                    while len(maps_pending) > 2 * max(1, job.workers):  # bounded memory
                        collect_map(maps_pending.popleft())
            while maps_pending:
                collect_map(maps_pending.popleft())
    finally:
        bar.close()
        if maps_pool is not None:
            maps_pool.shutdown(wait=True, cancel_futures=True)
    summary = PredictSummary(total, failed, time.perf_counter() - start, job.out, maps_written)
    _report(summary, job, stderr)
    return summary


def _report(s: PredictSummary, job: PredictJob, stderr: IO[str]) -> None:
    if s.total == 0:
        print("amnet predict: no images found in the given paths", file=stderr)
        return
    line = f"amnet predict: scored {s.scored} of {s.total} images"
    line += f" ({s.failed} failed)" if s.failed else ""
    line += f" in {s.seconds:.1f} s ({s.images_per_second:.1f} images/s)"
    if job.out:
        line += f"; wrote {job.out}"
        if s.failed > MAX_SHOWN_ERRORS:
            line += f" (with all {s.failed} errors; the first {MAX_SHOWN_ERRORS} are above)"
    if job.maps:
        line += f"; {s.maps_written} maps in {job.maps}"
    print(line, file=stderr)
