"""What ``amnet video`` does, as one library function: score videos every N seconds and write a
CSV timeline, a plot with the top-K frames marked, and those frames as JPEGs.

The CSV streams (one row per sampled frame, in time order; header
``time_s,score,step_scores,smoothed,path,error``), and is renamed into place when the run
ends. Only the (time, score) pairs are kept per video, for the peaks and the plot; the frames
of the peaks are found again by seeking, so memory stays flat for an hour-long video.

>>> job = VideoJob(("clip.mp4",), out="timeline.csv", every=2.0, frames="top/", top=3)
>>> summary = run_video(job)      # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from PIL import Image

from amnet.apps.figures import map_filename
from amnet.apps.writers import text
from amnet.fileio import atomic_write
from amnet.inference.video import FrameRow, VideoError, frames_at, predict_video

CSV_HEADER = ("time_s", "score", "step_scores", "smoothed", "path", "error")
EDGE_S = 1.0  # the first and last second are never a peak (fades, titles, black frames)
THUMB = 160  # thumbnails in the plot, pixels on the longer side


@dataclass(frozen=True)
class VideoJob:
    """Everything ``amnet video`` needs; validated on creation (ValueError = usage error)."""

    paths: tuple[str, ...]
    out: str | None = None  # CSV file; None: CSV on stdout
    every: float = 1.0  # seconds between sampled frames
    smooth: float | None = None  # centred moving average over this many seconds
    plot: str | None = None  # PNG: the score over time, the top-K frames marked
    frames: str | None = None  # folder for the top-K frames as JPEGs
    top: int = 5
    gap: float = 3.0  # seconds between two peaks, at least
    model: str = "default"
    batch_size: int = 16
    workers: int = 2
    device: str = "cpu"
    views: bool | None = None  # test-time views; None: as the model was measured

    def __post_init__(self) -> None:
        if not self.paths:
            raise ValueError("no FILE given: name one or more video files")
        if not self.every > 0:
            raise ValueError(f"--every must be a positive number of seconds, got {self.every}")
        if self.smooth is not None and not self.smooth > 0:
            raise ValueError(f"--smooth must be a positive number of seconds, got {self.smooth}")
        if self.top < 1 or self.gap < 0 or self.batch_size < 1 or self.workers < 0:
            raise ValueError("--top and --batch-size must be at least 1, --gap and --workers 0+")
        if self.out is not None and (os.path.isdir(self.out) or not self.out.endswith(".csv")):
            raise ValueError(f"--out {self.out!r}: give a file name ending in .csv")
        if self.plot is not None and not self.plot.lower().endswith(".png"):
            raise ValueError(f"--plot {self.plot!r}: give a file name ending in .png")
        if (
            self.frames is not None
            and os.path.exists(self.frames)
            and not os.path.isdir(self.frames)
        ):
            raise ValueError(f"--frames {self.frames!r} exists and is not a folder")


@dataclass
class Timeline:
    """One video's sampled times and scores (smoothed when asked), and its chosen peaks."""

    path: str
    times: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)  # smoothed, with --smooth
    raw: list[float] = field(default_factory=list)  # the frames' own scores
    peaks: list[tuple[float, float]] = field(default_factory=list)  # (time, score), best first
    thumbs: dict[float, Image.Image] = field(default_factory=dict)  # peak time -> thumbnail
    opened: bool = True  # False: not a readable video


@dataclass(frozen=True)
class VideoSummary:
    videos: int
    failed_videos: int  # not readable as videos
    frames: int
    failed_frames: int
    seconds: float
    frames_written: int = 0

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def pick_peaks(
    times: list[float], scores: list[float], k: int, gap: float, edge: float = EDGE_S
) -> list[tuple[float, float]]:
    """The ``k`` highest samples at least ``gap`` seconds apart, skipping the first and last
    ``edge`` seconds (all of them when the video is too short to skip): best first."""
    if not times:
        return []
    lo, hi = times[0] + edge, times[-1] - edge
    order = sorted(range(len(times)), key=lambda i: -scores[i])
    inside = [i for i in order if lo <= times[i] <= hi] or order
    chosen: list[int] = []
    for i in inside:
        if all(abs(times[i] - times[j]) >= gap - 1e-9 for j in chosen):
            chosen.append(i)
            if len(chosen) == k:
                break
    return [(times[i], scores[i]) for i in chosen]


def frame_filename(path: str, rank: int, t: float) -> str:
    """``clip_1a2b3c4d_top1_12.0s.jpg``: stem and a hash of the video's path, rank and time."""
    return f"{map_filename(path)[:-4]}_top{rank}_{t:.1f}s.jpg"


def _csv_row(row: FrameRow) -> tuple:
    def num(v: float | None) -> str:
        return "" if v is None else f"{v:.6f}"

    t = "" if row.time_s is None else f"{row.time_s:.3f}"
    steps = " ".join(f"{s:.6f}" for s in row.step_scores)
    return t, num(row.score), steps, num(row.smoothed), text(row.path), text(row.error)


def _load(job: VideoJob):
    from amnet.apps.predict import load_model
    from amnet.inference.engine import RunOptions

    return load_model(job.model, device=job.device, batch_size=job.batch_size,
                      workers=job.workers, options=RunOptions(views=job.views))  # fmt: skip


def run_video(
    job: VideoJob, *, predictor=None, stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> VideoSummary:  # fmt: skip
    """Score every video of the job and write what it asks; one line per failure on stderr
    and a one-line summary at the end. ``predictor`` replaces loading ``job.model``."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    predictor = predictor or _load(job)
    start = time.perf_counter()
    timelines: list[Timeline] = []
    frames = failed_frames = failed_videos = written = 0
    with _open_csv(job.out, stdout) as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(CSV_HEADER)
        for path in job.paths:
            tl, n, bad, err = _one(predictor, path, job, w)
            frames, failed_frames = frames + n, failed_frames + bad
            failed_videos += not tl.opened
            if err:
                print(f"amnet video: {text(path)}: {err}", file=stderr)
            if tl.times and (job.frames or job.plot):
                written += _peak_frames(tl, job, stderr)
            timelines.append(tl)
    if job.plot and any(t.times for t in timelines):
        plot_timelines([t for t in timelines if t.times], job.plot, smoothed=bool(job.smooth))
    s = VideoSummary(len(job.paths), failed_videos, frames, failed_frames,
                     time.perf_counter() - start, written)  # fmt: skip
    _say(s, job, stderr)
    return s


@contextlib.contextmanager
def _open_csv(out: str | None, stdout: IO[str]) -> Iterator[IO[str]]:
    """``out`` written atomically (it appears when the block ends without an exception), or
    ``stdout`` when ``out`` is None."""
    if out is None:
        yield stdout
        stdout.flush()
        return
    with atomic_write(out, "wb") as raw:
        f = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        yield f
        f.flush()
        f.detach()  # the raw file is synced, closed and renamed by atomic_write


def _one(predictor, path: str, job: VideoJob, w) -> tuple[Timeline, int, int, str | None]:
    """Score one video into the CSV: (timeline, frames, failed frames, error of the file)."""
    tl = Timeline(path)
    n = bad = 0
    first_error = None
    try:
        rows = predict_video(predictor, path, job.every, batch_size=job.batch_size,
                             smooth=job.smooth, workers=job.workers)  # fmt: skip
        for row in rows:
            w.writerow(_csv_row(row))
            n += 1
            if row.ok:
                tl.times.append(row.time_s)
                tl.scores.append(row.smoothed if job.smooth else row.score)
                tl.raw.append(row.score)
            else:
                bad += 1
                first_error = first_error or row.error
    except VideoError as e:
        w.writerow(_csv_row(FrameRow(path, None, error=str(e))))
        tl.opened = False
        return tl, n, bad, str(e)
    if first_error:  # the frames that could be scored are in the CSV
        more = f" (and {bad - 1} more)" if bad > 1 else ""
        return tl, n, bad, f"{first_error}{more}"
    return tl, n, bad, None


def _peak_frames(tl: Timeline, job: VideoJob, stderr: IO[str]) -> int:
    """Choose the peaks; write their frames (``--frames``) and keep thumbnails (``--plot``)."""
    tl.peaks = pick_peaks(tl.times, tl.scores, job.top, job.gap)
    written = 0
    ranks = {t: r for r, (t, _) in enumerate(tl.peaks, 1)}
    try:
        for t, img in frames_at(tl.path, ranks):
            if job.frames:
                dest = Path(job.frames) / frame_filename(tl.path, ranks[t], t)
                with atomic_write(dest) as out:
                    img.save(out, format="JPEG", quality=90)
                written += 1
            img.thumbnail((THUMB, THUMB))
            tl.thumbs[t] = img
    except (OSError, VideoError) as e:
        print(f"amnet video: {text(tl.path)}: top frames not written: {e}", file=stderr)
    return written


def _n(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _say(s: VideoSummary, job: VideoJob, stderr: IO[str]) -> None:
    line = f"amnet video: scored {_n(s.frames - s.failed_frames, 'frame')} of "
    line += _n(s.videos, "video")
    if s.failed_videos or s.failed_frames:
        line += f" ({s.failed_videos} unreadable, {_n(s.failed_frames, 'frame')} failed)"
    line += f" in {s.seconds:.1f} s ({s.frames_per_second:.1f} frames/s)"
    for what, where in (("wrote", job.out), ("plot", job.plot)):
        line += f"; {what} {where}" if where else ""
    if job.frames:
        line += f"; {s.frames_written} frames in {job.frames}"
    print(line, file=stderr)


def plot_timelines(timelines: list[Timeline], dest: str, *, smoothed: bool = False) -> None:
    """One panel per video: the score over time with each peak marked by its rank, and above
    it a strip of the peaks' frames (staggered when close). Written atomically as PNG
    (matplotlib, imported here, without pyplot: no global state, no GUI backend)."""
    import numpy as np
    from matplotlib.figure import Figure
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    fig = Figure(figsize=(11, 4.2 * len(timelines)), layout="constrained")
    outer = fig.add_gridspec(len(timelines), 1)
    for k, tl in enumerate(timelines):
        strip, ax = (fig.add_subplot(g) for g in outer[k].subgridspec(2, 1, height_ratios=[1, 2]))
        span = max(tl.times[-1] - tl.times[0], 1e-3)
        for a in (strip, ax):
            a.set_xlim(tl.times[0] - 0.02 * span, tl.times[-1] + 0.02 * span)
        if smoothed:
            ax.plot(tl.times, tl.raw, color="#9bb4d3", lw=0.8, label="score of the frame")
        ax.plot(tl.times, tl.scores, color="#1f5fa8", lw=1.4,
                label="smoothed score" if smoothed else "score")  # fmt: skip
        levels, last = {}, -np.inf
        for t in sorted(tl.thumbs):  # stagger close neighbours on two levels
            levels[t] = 1 - levels.get(last, 1) if t - last < 0.14 * span else 0
            last = t
        for t, level in levels.items():
            y = 0.27 + 0.46 * level if any(levels.values()) else 0.5
            box = OffsetImage(np.asarray(tl.thumbs[t]), zoom=0.3)
            strip.add_artist(AnnotationBbox(box, (t, y), frameon=True, pad=0.1))
        strip.set_ylim(0, 1)
        strip.axis("off")
        for rank, (t, s) in enumerate(tl.peaks, 1):
            ax.axvline(t, color="#c0392b", lw=0.8, ls=":", alpha=0.7)
            ax.plot([t], [s], "o", color="#c0392b", ms=6, zorder=3)
            ax.annotate(f"{rank}", (t, s), xytext=(5, 4), textcoords="offset points",
                        fontsize=9, color="#c0392b")  # fmt: skip
        strip.set_title(os.path.basename(text(tl.path)), fontsize=10, loc="left")
        ax.set_xlabel("time (s)")
        ax.set_ylabel("memorability")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    with atomic_write(dest) as f:
        fig.savefig(f, format="png", dpi=100)
