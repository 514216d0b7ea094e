"""Video in, a memorability timeline out: frames decoded with PyAV (``amnet[video]``; its wheels
bundle FFmpeg), sampled every N seconds, scored in batches by a Predictor, streamed.

A sample at time ``t`` is the frame on screen at ``t`` (the last one whose timestamp is <= t).
Frames are decoded in a background thread and never held beyond a bounded window, so memory
is flat for a video of any length. A frame that fails to decode is a row with an ``error``;
the rest go on. A file that is not a readable video raises :class:`VideoError` (one line).

>>> p = amnet.load()                                                   # doctest: +SKIP
>>> for row in predict_video(p, "clip.mp4", every=2.0, smooth=6.0):     # doctest: +SKIP
...     print(row.time_s, row.score, row.smoothed)
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

MAX_SIDE = 1920  # larger frames (4K) are shrunk (area average) before scoring: bounded memory
_STILL_FORMATS = ("image2", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "tiff_pipe")


class VideoError(ValueError):
    """A file that cannot be read as a video; the message is one line for users."""


@dataclass(frozen=True)
class FrameRow:
    """One sampled frame of a video: its score, or an ``error`` when it could not be scored."""

    path: str
    time_s: float | None  # None: the file could not be opened at all
    score: float | None = None
    step_scores: tuple[float, ...] = ()
    attention: np.ndarray | None = None  # (T, H, W)
    smoothed: float | None = None  # centred moving average of ``score`` (with ``smooth``)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _av():
    try:
        import av
    except ImportError:
        raise VideoError("video needs PyAV: pip install 'amnet[video]'") from None
    return av


def _line(e: BaseException) -> str:
    """One line for an error; FFmpeg's own reason, without its errno and the file name."""
    msg = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return msg.splitlines()[0]


def open_video(path: str | os.PathLike):
    """Open ``path`` with PyAV: returns ``(container, video stream)`` or raises VideoError."""
    av = _av()
    path = os.fspath(path)
    if not os.path.exists(path):
        raise VideoError("file not found")
    if os.path.isdir(path):
        raise VideoError("is a directory, not a video file")
    if os.path.getsize(path) == 0:
        raise VideoError("empty file (0 bytes)")
    try:
        container = av.open(path, metadata_errors="ignore")
    except PermissionError:
        raise VideoError("permission denied: cannot read the file") from None
    except (av.FFmpegError, OSError, ValueError) as e:
        raise VideoError(
            f"not a video: unrecognised, corrupt or truncated file ({_line(e)})"
        ) from None
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["nothing"]
        container.close()
        raise VideoError(f"no video stream (the file holds {', '.join(kinds)} only)")
    if container.format.name in _STILL_FORMATS:
        container.close()
        raise VideoError("a still image, not a video: score it with `amnet predict`")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame and slice threads in the decoder
    return container, stream


def _duration(container, stream) -> float | None:
    """The video stream's length from the file's header (Matroska: its DURATION tag); the
    container's only when the video is its only stream (an audio track may run longer)."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION", "")  # "00:00:12.000000000"
    try:
        h, m, sec = tag.split(":")
        return int(h) * 3600 + int(m) * 60 + float(sec)
    except ValueError:
        pass
    if container.duration and len(container.streams) == 1:
        return container.duration / 1_000_000
    return None


def _start(stream) -> float:
    """The stream's first timestamp (MPEG-TS streams often start at 1.4 s, not 0): times in
    a timeline count from it."""
    return float(stream.start_time * stream.time_base) if stream.start_time else 0.0


def _image(frame) -> Image.Image:
    w, h = frame.width, frame.height
    s = MAX_SIDE / max(w, h)
    if s < 1.0:  # even sizes: the converters prefer them
        size = max(2, round(w * s / 2) * 2), max(2, round(h * s / 2) * 2)
        return frame.to_image(width=size[0], height=size[1], interpolation="AREA")
    return frame.to_image()


def _decoded(container, stream) -> Iterator[tuple[float, object, str | None]]:
    """``(time, frame or None, error)`` in decoding order: one entry per frame, and one per
    packet that fails to decode (at the packet's time), then the flushed frames."""
    av = _av()
    rate = float(stream.guessed_rate or stream.average_rate or 25)
    start = _start(stream)
    n = 0
    last = 0.0
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except (av.FFmpegError, OSError) as e:  # the file ends in the middle of a packet
            yield last, None, f"read error after {last:.2f} s: {_line(e)}"
            return
        try:
            frames = packet.decode()
        except (av.FFmpegError, ValueError) as e:
            t = float(packet.pts * packet.time_base) - start if packet.pts is not None else last
            yield t, None, f"frame at {t:.2f} s could not be decoded: {_line(e)}"
            continue
        for frame in frames:
            t = frame.time - start if frame.time is not None else n / rate
            n += 1
            last = max(last, t)
            yield t, frame, None


def iter_frames(
    path: str | os.PathLike, every: float = 1.0
) -> Iterator[tuple[float, Image.Image | None, str | None]]:
    """Sample a video every ``every`` seconds: ``(time_s, RGB image, None)`` or, for a frame
    that cannot be decoded or converted, ``(time_s, None, error)``. A stream that ends well
    before the length its header gives ends with one error (truncated file)."""
    if not every > 0:
        raise ValueError(f"the sampling interval must be positive, got {every}")
    container, stream = open_video(path)
    with container:
        duration = _duration(container, stream)
        frame_s = 1.0 / float(stream.guessed_rate or stream.average_rate or 25)
        target, k = 0.0, 0
        shown: tuple[float, object, str | None] | None = None  # what is on screen now
        for t, frame, err in _decoded(container, stream):
            if shown is not None and t <= shown[0]:
                continue  # out-of-order or duplicate timestamp: keep what is on screen
            while shown is not None and target < t - 1e-6:
                yield _sample(target, shown)
                k += 1
                target = round(k * every, 9)
            shown = (t, frame, err)
        if shown is None:
            raise VideoError("no frame could be decoded (empty or corrupt video stream)")
        end = shown[0] + frame_s
        while target < end - 1e-6:
            yield _sample(target, shown)
            k += 1
            target = round(k * every, 9)
        if duration and end < duration - max(1.0, 2 * frame_s):
            yield target, None, (f"stream ends at {end:.2f} s of {duration:.2f} s: "
                                 "truncated or corrupt file")  # fmt: skip


def _sample(t: float, shown: tuple[float, object, str | None]):
    _, frame, err = shown
    if err is not None:
        return t, None, err
    try:
        return t, _image(frame), None
    except Exception as e:  # noqa: BLE001 - one bad frame never stops the video
        return t, None, f"frame at {t:.2f} s could not be converted: {_line(e)}"


def frames_at(
    path: str | os.PathLike, times: Iterable[float]
) -> Iterator[tuple[float, Image.Image]]:
    """The frames on screen at ``times`` (seconds), found by seeking: one decode from the
    keyframe before each time, not a pass over the whole video. Times that cannot be reached
    are skipped."""
    container, stream = open_video(path)
    with container:
        for target in sorted(times):
            try:
                pts = int((target + _start(stream)) / stream.time_base)
                container.seek(pts, stream=stream, backward=True)
                best = None
                for t, frame, err in _decoded(container, stream):
                    if err is None and t <= target + 1e-6:
                        best = frame
                    elif t > target + 1e-6:
                        break
            except Exception:  # noqa: BLE001 - a frame we cannot reach is left out
                continue
            if best is not None:
                yield target, _image(best)


def _prefetch(it: Iterator, size: int) -> Iterator:
    """Run ``it`` in a background thread, at most ``size`` items ahead (PyAV releases the GIL
    while decoding, so decoding overlaps the model). Exceptions are re-raised here."""
    q: queue.Queue = queue.Queue(size)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for x in it:
                if not put(("item", x)):
                    return
            put(("done", None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            put(("error", e))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()  # a generator is closed in the thread that ran it

    thread = threading.Thread(target=work, name="amnet-video", daemon=True)
    thread.start()
    try:
        while True:
            kind, x = q.get()
            if kind == "done":
                return
            if kind == "error":
                raise x
            yield x
    finally:
        stop.set()
        thread.join()


def smooth_rows(rows: Iterable[FrameRow], seconds: float) -> Iterator[FrameRow]:
    """Give each row ``smoothed``: the mean score of the scored rows within ``seconds / 2`` of
    it (a centred moving average; failed rows are left out). Holds one window of rows."""
    half = seconds / 2
    window: deque[FrameRow] = deque()  # rows not yet emitted, and those still in a window
    pending = 0  # how many rows at the right of ``window`` are not yet emitted

    def emit(row: FrameRow) -> FrameRow:
        near = [r.score for r in window if r.ok and abs(r.time_s - row.time_s) <= half + 1e-9]
        return replace(row, smoothed=float(np.mean(near)) if near and row.ok else None)

    for row in rows:
        window.append(row)
        pending += 1
        while pending and window[len(window) - pending].time_s + half < row.time_s - 1e-9:
            yield emit(window[len(window) - pending])
            pending -= 1
        while len(window) > pending and window[0].time_s < row.time_s - seconds - 1e-9:
            window.popleft()
    while pending:
        yield emit(window[len(window) - pending])
        pending -= 1


def predict_video(
    predictor, path: str | os.PathLike, every: float = 1.0, *, batch_size: int | None = None,
    smooth: float | None = None, workers: int | None = None,
) -> Iterator[FrameRow]:  # fmt: skip
    """Score ``path`` every ``every`` seconds with ``predictor`` (an :class:`amnet.Predictor`),
    yielding one :class:`FrameRow` per sample in time order; with ``smooth`` (seconds), each
    row also has a centred moving average. Raises VideoError when the file is not a video."""
    if smooth is not None and not smooth > 0:
        raise ValueError(f"the smoothing window must be positive, got {smooth}")
    name = os.fspath(path)
    bs = batch_size or predictor.batch_size
    rows = _score(predictor, name, _prefetch(iter_frames(path, every), bs), bs, workers)
    return smooth_rows(rows, smooth) if smooth else rows


def _score(predictor, name: str, frames: Iterator, bs: int, workers: int | None):
    pending: deque[tuple[float, str | None]] = deque()  # samples handed on, in order

    def images() -> Iterator[Image.Image]:
        for t, img, err in frames:
            pending.append((t, err))
            if err is None:
                yield img

    for pred in predictor.predict_iter(images(), batch_size=bs, workers=workers):
        t, err = pending.popleft()
        while err is not None:
            yield FrameRow(name, t, error=err)
            t, err = pending.popleft()
        yield FrameRow(name, t, pred.score, pred.step_scores, pred.attention, error=pred.error)
    while pending:
        t, err = pending.popleft()
        yield FrameRow(name, t, error=err)
