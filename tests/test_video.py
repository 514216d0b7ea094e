"""``amnet video`` and ``predict_video`` on clips made here with PyAV: slideshows of real LNSIM
photos, each shown for a known time, so every sampled frame's score is known in advance (the
photo's own score, within what H.264 compression changes)."""

from __future__ import annotations

import csv
import io
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import LNSIM, TINY_CFG
from PIL import Image

import amnet
from amnet.apps.video import pick_peaks
from amnet.checkpoint import save_checkpoint
from amnet.cli.main import main
from amnet.inference.video import (
    FrameRow,
    _prefetch,
    frames_at,
    iter_frames,
    predict_video,
    smooth_rows,
)
from amnet.model.head import AMNetHead

av = pytest.importorskip("av")

# 640x480 LNSIM photos whose scores (sensitive tiny head below) are far apart: 0.2352, 0.2296,
# 0.2415, 0.2262; the most memorable is third, in the middle of the clip.
PHOTOS = [LNSIM / "images" / n for n in ("0087.jpg", "0061.jpg", "0334.jpg", "0194.jpg")]
SECONDS = 3  # each photo is on screen this long
# |frame score - photo score| measured for these clips (mp4, mkv and ts alike): max 3.4e-4,
# median 4.4e-5, for this head, whose photo scores are 3.4e-3 apart at least (crf 35: 4.7e-4
# on 12 photos). The default model: max 1.5e-2 (benchmarks/video_tolerance.py).
TOL = 1e-3


@pytest.fixture(scope="module")
def model(tmp_path_factory, tiny_trunk_name) -> Path:
    """The tiny head with its scores spread 40x wider (target_scale 0.05, not 2): the same
    random network, so differences between photos stand well above compression noise."""
    torch.manual_seed(0)
    head = AMNetHead(replace(TINY_CFG, target_scale=0.05)).eval()
    path = tmp_path_factory.mktemp("model") / "sensitive.safetensors"
    return save_checkpoint(path, head, trunk=tiny_trunk_name)


@pytest.fixture(scope="module")
def predictor(model):
    return amnet.load(model, workers=0)


def slideshow(path: Path, photos=PHOTOS, seconds: float = SECONDS, fps: int = 10) -> Path:
    """An H.264 clip showing each photo for ``seconds`` (crf 23, the x264 default)."""
    w, h = Image.open(photos[0]).size
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps, options={"crf": "23"})
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for p in photos:
            frame = av.VideoFrame.from_image(Image.open(p).convert("RGB"))
            for _ in range(int(seconds * fps)):
                for packet in s.encode(frame):
                    c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return slideshow(tmp_path_factory.mktemp("clips") / "slides.mp4")


def cli(argv: list[str]) -> int:
    return main(argv)  # the real command, in-process


def read_csv(path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(Path(path).read_text())))


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".ts"])  # .ts starts at 1.4 s, not 0
def test_timeline_equals_each_photos_own_score(predictor, tmp_path, suffix):
    own = [p.score for p in predictor.predict(PHOTOS)]
    assert min(abs(a - b) for i, a in enumerate(own) for b in own[i + 1 :]) > 3 * TOL
    clip = slideshow(tmp_path / f"slides{suffix}")
    rows = list(predict_video(predictor, clip, every=0.5, batch_size=5))
    assert [r.time_s for r in rows] == [k * 0.5 for k in range(len(PHOTOS) * SECONDS * 2)]
    assert all(r.ok and len(r.step_scores) == 3 and r.attention.shape == (3, 14, 14) for r in rows)
    worst = max(abs(r.score - own[int(r.time_s // SECONDS)]) for r in rows)
    assert worst < TOL, f"frame scores differ from their photo's by up to {worst:.2e}"


def test_cli_writes_timeline_plot_and_top_frames(model, predictor, clip, tmp_path, capsys):
    out, plot, top = tmp_path / "t.csv", tmp_path / "t.png", tmp_path / "top"
    argv = ["video", str(clip), "--every", "0.5", "--out", str(out), "--plot", str(plot),
            "--frames", str(top), "--top", "3", "--gap", "2.5", "--model", str(model)]  # fmt: skip
    assert cli(argv) == 0
    assert out.read_text().splitlines()[0] == "time_s,score,step_scores,smoothed,path,error"
    rows = read_csv(out)
    assert [float(r["time_s"]) for r in rows] == [k * 0.5 for k in range(24)]
    assert all(r["path"] == str(clip) and not r["error"] and not r["smoothed"] for r in rows)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Image.open(plot).size[1] > 200
    frames = sorted(top.glob("*.jpg"), key=lambda p: p.name.split("_top")[1])
    assert len(frames) == 3 and "_top1_" in frames[0].name
    times = [float(p.stem.rsplit("_", 1)[1][:-1]) for p in frames]
    assert all(1.0 <= t <= 11.5 - 1.0 for t in times)  # first and last second skipped
    assert min(abs(a - b) for i, a in enumerate(times) for b in times[i + 1 :]) >= 2.5
    # the best frame comes from the most memorable photo, in time and in pixels
    own = [p.score for p in predictor.predict(PHOTOS)]
    best = int(np.argmax(own))
    assert best * SECONDS <= times[0] < (best + 1) * SECONDS
    got = np.asarray(Image.open(frames[0]), dtype=np.float32)
    diffs = [np.abs(got - np.asarray(Image.open(p).convert("RGB"), np.float32)).mean()
             for p in PHOTOS]  # fmt: skip
    assert int(np.argmin(diffs)) == best and min(diffs) < 6
    assert "scored 24 frames of 1 video in" in capsys.readouterr().err


def test_smoothing_is_a_centred_moving_average(model, clip, tmp_path):
    out = tmp_path / "s.csv"
    assert cli(["video", str(clip), "--every", "0.5", "--smooth", "2", "--out", str(out),
                "--model", str(model)]) == 0  # fmt: skip
    rows = read_csv(out)
    t = np.array([float(r["time_s"]) for r in rows])
    s = np.array([float(r["score"]) for r in rows])
    want = [s[np.abs(t - ti) <= 1.0 + 1e-9].mean() for ti in t]
    assert np.allclose([float(r["smoothed"]) for r in rows], want, atol=2e-6)


def test_smooth_rows_skips_failed_frames_and_keeps_order():
    rows = [FrameRow("v", float(t), score=float(t)) for t in range(10)]
    rows[4] = FrameRow("v", 4.0, error="bad frame")
    out = list(smooth_rows(iter(rows), 3.0))
    assert [r.time_s for r in out] == list(range(10)) and out[4].smoothed is None
    assert out[3].smoothed == pytest.approx((2 + 3) / 2)  # 4 failed: left out of the mean
    assert out[0].smoothed == pytest.approx(0.5) and out[9].smoothed == pytest.approx(8.5)
    assert out[6].smoothed == pytest.approx((5 + 6 + 7) / 3)


def test_pick_peaks_apart_and_away_from_the_edges():
    t = [float(k) for k in range(20)]
    s = [0.0] * 20
    s[0], s[19], s[5], s[6], s[12] = 9.0, 9.0, 3.0, 2.9, 2.0  # the edges are highest
    assert pick_peaks(t, s, 3, gap=3.0) == [(5.0, 3.0), (12.0, 2.0), (1.0, 0.0)]
    assert pick_peaks(t, s, 2, gap=0.5) == [(5.0, 3.0), (6.0, 2.9)]
    assert pick_peaks([0.0, 0.5], [1.0, 2.0], 1, gap=1.0) == [(0.5, 2.0)]  # too short to skip


def test_frames_found_by_seeking_equal_the_sampled_frames(clip):
    sampled = {t: img for t, img, _ in iter_frames(clip, every=1.5)}
    sought = dict(frames_at(clip, [10.5, 1.5, 7.5]))
    assert sorted(sought) == [1.5, 7.5, 10.5]
    for t, img in sought.items():
        assert np.array_equal(np.asarray(img), np.asarray(sampled[t]))


def test_decoding_runs_at_most_a_bounded_window_ahead():
    made = []

    def numbers():
        for k in range(1000):
            made.append(k)
            yield k

    it = _prefetch(numbers(), 4)
    assert next(it) == 0
    time.sleep(0.3)
    assert len(made) <= 4 + 2  # the queue, the item being put, the one handed out
    it.close()


def bad_inputs(tmp_path: Path, clip: Path) -> dict[str, str]:
    """Files that are not usable videos -> the start of their one-line error."""
    (tmp_path / "notes.mp4").write_text("not a video at all\n")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with av.open(str(tmp_path / "voice.m4a"), "w") as c:  # audio only
        s = c.add_stream("aac", rate=44100)
        for i in range(10):
            fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), "fltp", "mono")
            fr.sample_rate, fr.pts = 44100, i * 1024
            for packet in s.encode(fr):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    whole = clip.read_bytes()  # moov at the end: cut in half, the index is gone
    (tmp_path / "cut.mp4").write_bytes(whole[: len(whole) // 2])
    mkv = slideshow(tmp_path / "long.mkv").read_bytes()  # index first: plays until the cut
    (tmp_path / "cut.mkv").write_bytes(mkv[: len(mkv) // 2])
    return {
        "notes.mp4": "not a video", "empty.mp4": "empty file (0 bytes)",
        "voice.m4a": "no video stream (the file holds audio only)", "cut.mp4": "not a video",
        "cut.mkv": "stream ends at", "missing.mp4": "file not found",
        str(PHOTOS[0]): "a still image, not a video",
    }  # fmt: skip


def test_bad_inputs_are_one_line_errors_and_exit_1(model, clip, tmp_path, capsys):
    bad = bad_inputs(tmp_path, clip)
    paths = [str(tmp_path / n) if "/" not in n else n for n in bad]
    out = tmp_path / "t.csv"
    argv = ["video", paths[0], str(clip), *paths[1:], "--out", str(out), "--model", str(model)]
    assert cli(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    for path, msg in zip(paths, bad.values(), strict=True):
        lines = [e for e in err if e.startswith(f"amnet video: {path}: ")]
        assert len(lines) == 1 and lines[0].split(": ", 2)[2].startswith(msg), (path, err)
    rows = read_csv(out)
    assert sum(r["path"] == str(clip) and not r["error"] for r in rows) == 12  # the rest go on
    cut = [r for r in rows if r["path"].endswith("cut.mkv")]
    assert cut[0]["score"] and cut[-1]["error"].startswith("stream ends at")  # scored, then cut
    assert err[-1].startswith("amnet video: scored")


@pytest.mark.parametrize(
    "args", [["--every", "0"], ["--smooth", "-1"], ["--top", "0"], ["--out", "t.txt"]]
)
def test_usage_errors_exit_2(clip, model, args, capsys):
    assert cli(["video", str(clip), "--model", str(model), *args]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_without_out_the_csv_goes_to_stdout(model, clip, capsys):
    assert cli(["video", str(clip), "--every", "3", "--model", str(model)]) == 0
    out, err = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["time_s"] for r in rows] == ["0.000", "3.000", "6.000", "9.000"]
    assert err.startswith("amnet video: scored 4 frames of 1 video in")


def test_frames_that_fail_are_rows_with_an_error_in_place(predictor, monkeypatch):
    """Failed frames (decoder errors are rare: FFmpeg conceals most damage) keep their place
    among the scored ones, across batch boundaries, and the rest are scored as photos are."""
    import amnet.inference.video as video

    images = [Image.open(p).convert("RGB") for p in PHOTOS]
    samples = [(float(k), images[k % 4], None) for k in range(9)]
    for k in (0, 4, 5, 8):
        samples[k] = (float(k), None, f"frame at {k}.00 s could not be decoded: test")
    monkeypatch.setattr(video, "iter_frames", lambda path, every: iter(samples))
    rows = list(predict_video(predictor, "fake.mp4", every=1.0, batch_size=2))
    assert [r.time_s for r in rows] == [float(k) for k in range(9)]
    assert [r.ok for r in rows] == [s[2] is None for s in samples]
    own = [p.score for p in predictor.predict(images)]
    assert all(abs(r.score - own[int(r.time_s) % 4]) < 1e-6 for r in rows if r.ok)
    assert rows[8].error.startswith("frame at 8.00 s")


def test_a_decoding_error_shows_until_the_next_good_frame(monkeypatch, clip):
    import amnet.inference.video as video

    good = next(iter(video.open_video(clip)[0].decode(video=0)))
    events = [(0.0, good, None), (1.0, None, "frame at 1.00 s could not be decoded: x"),
              (2.0, good, None), (1.9, good, None), (11.9, good, None)]  # fmt: skip
    monkeypatch.setattr(video, "_decoded", lambda container, stream: iter(events))
    got = [(t, err) for t, _, err in iter_frames(clip, every=0.5)]
    assert [t for t, _ in got] == [k * 0.5 for k in range(24)]  # the clip's header: 12 s
    assert [k for k, (_, err) in enumerate(got) if err] == [2, 3]  # 1.0 and 1.5 s
    events.pop()  # now the stream stops at 2.1 s of 12: one row says so
    got = [(t, err) for t, _, err in iter_frames(clip, every=0.5)]
    assert [t for t, _ in got] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert got[-1][1] == "stream ends at 2.10 s of 12.00 s: truncated or corrupt file"


def test_a_longer_audio_track_is_not_a_truncated_video(tmp_path):
    path = tmp_path / "with-audio.mkv"
    with av.open(str(path), "w") as c:  # 4 s of video, 8 s of sound
        v = c.add_stream("libx264", rate=10)
        v.width, v.height, v.pix_fmt = 320, 240, "yuv420p"
        a = c.add_stream("aac", rate=44100)
        frame = av.VideoFrame.from_image(Image.open(PHOTOS[0]).convert("RGB").resize((320, 240)))
        for packet in [p for _ in range(40) for p in v.encode(frame)] + list(v.encode()):
            c.mux(packet)
        for i in range(8 * 44100 // 1024):
            fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), "fltp", "mono")
            fr.sample_rate, fr.pts = 44100, i * 1024
            for packet in a.encode(fr):
                c.mux(packet)
        for packet in a.encode():
            c.mux(packet)
    assert [(t, err) for t, _, err in iter_frames(path)] == [(float(t), None) for t in range(4)]


def test_predictor_method_equals_the_function(predictor, clip):
    """``Predictor.predict_video`` is the Python API of ``amnet video``: the same rows."""
    from amnet.inference.video import predict_video

    method = list(predictor.predict_video(clip, 0.5, smooth=1.0))
    function = list(predict_video(predictor, clip, 0.5, smooth=1.0))
    key = lambda r: (r.time_s, r.score, r.step_scores, r.smoothed, r.error)  # noqa: E731
    assert len(method) > 10 and [key(r) for r in method] == [key(r) for r in function]
    pairs = zip(method, function, strict=True)
    assert all(np.array_equal(a.attention, b.attention) for a, b in pairs)
    assert [r.time_s for r in method] == sorted(r.time_s for r in method)


def test_views_flag_scores_frames_as_the_library(model, clip, tmp_path):
    """``amnet video --views`` / ``--no-views`` score as the library does with
    ``RunOptions(views=True / False)`` (the mirror view changes the tiny model's scores)."""
    from amnet.inference.engine import RunOptions

    got = {}
    for flag, views in (("--views", True), ("--no-views", False)):
        out = tmp_path / f"t{flag}.csv"
        assert cli(["video", str(clip), "--every", "2", flag, "--out", str(out),
                    "--model", str(model)]) == 0  # fmt: skip
        got[flag] = [float(r["score"]) for r in read_csv(out)]
        runner = amnet.load(model, workers=0, options=RunOptions(views=views))
        want = [r.score for r in predict_video(runner, clip, every=2)]
        assert got[flag] == pytest.approx(want, abs=1e-6)
    assert max(abs(a - b) for a, b in zip(got["--views"], got["--no-views"], strict=True)) > 1e-4
