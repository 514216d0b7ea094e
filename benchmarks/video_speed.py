"""``amnet video`` speed and memory on a generated 10-minute 720p clip: frames scored per second,
seconds of video per second, peak RSS, and whether memory grows along the video.

The clip is a slideshow of LNSIM photos (5 s each, slowly zooming, so every frame differs) at
25 fps, H.264 (x264 'veryfast', crf 23), 1280x720. It is made once and kept (``--clip``).

    python benchmarks/video_speed.py --model default --every 5      # the real model
    python benchmarks/video_speed.py --trunk tiny --every 1          # decoding + head only
    python benchmarks/video_speed.py --decode-only                   # PyAV alone
    python benchmarks/video_speed.py --trunk tiny --every 0.5 --trace 100   # RSS along the video

Memory columns as in predict_10k.py: the peak RSS, and the highest RSS sampled every 50 ms in
the first and in the second half of the run (the same when nothing accumulates).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from _speed_common import rss_mb, sampling_rss
from predict_10k import make_checkpoint, register_tiny_trunk

LNSIM_IMAGES = Path(__file__).resolve().parents[1].parent / "shared/datasets/lnsim/images"
W, H, FPS = 1280, 720, 25


def make_clip(path: Path, minutes: float, seconds_per_photo: float = 5.0) -> Path:
    """A slideshow: each photo fills the 16:9 frame and zooms in by 10% while it is shown."""
    import av
    from PIL import Image

    photos = sorted(LNSIM_IMAGES.glob("*.jpg"))
    per = int(seconds_per_photo * FPS)
    n = int(minutes * 60 * FPS)
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(tmp), "w") as c:
        s = c.add_stream("libx264", rate=FPS, options={"crf": "23", "preset": "veryfast"})
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        for k in range(n):
            if k % per == 0:
                img = Image.open(photos[(k // per) % len(photos)]).convert("RGB")
                scale = max(W / img.width, H / img.height) * 1.1
                img = img.resize((round(img.width * scale), round(img.height * scale)))
            z = 1.0 - 0.1 * (k % per) / per  # the crop shrinks: a slow zoom in
            cw, ch = min(img.width, W * 1.1 * z), min(img.height, H * 1.1 * z)
            x0, y0 = (img.width - cw) / 2, (img.height - ch) / 2
            frame = img.resize((W, H), Image.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))
            for packet in s.encode(av.VideoFrame.from_image(frame)):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    os.replace(tmp, path)
    return path


def measure(fn) -> dict:
    """Run ``fn()`` (returns a count) while sampling RSS; time, count and memory."""
    count, seconds, m = sampling_rss(fn)
    return {"count": count, "seconds": seconds, "peak": m["peak_rss_mb"],
            "first": m["first_half_max_mb"], "second": m["second_half_max_mb"]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", default=os.path.join(tempfile.gettempdir(), "amnet-720p-10min.mp4"))
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--model", default="default", help="model name or checkpoint")
    ap.add_argument("--trunk", help="'tiny': a random trunk with a full-size head instead")
    ap.add_argument("--every", type=float, default=5.0)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--decode-only", action="store_true", help="PyAV sampling, no model")
    ap.add_argument("--trace", type=int, default=0, metavar="N", help="print RSS every N frames")
    args = ap.parse_args()
    clip = Path(args.clip)
    if not clip.exists():
        t0 = time.perf_counter()
        make_clip(clip, args.minutes)
        print(
            f"made {clip} ({clip.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.0f} s"
        )
    import amnet
    from amnet.inference.video import iter_frames, predict_video

    start_rss = rss_mb()
    if args.decode_only:
        what = "decode only"
        r = measure(lambda: sum(1 for _ in iter_frames(clip, args.every)))
    else:
        model = args.model
        if args.trunk == "tiny":
            register_tiny_trunk()
            model = str(make_checkpoint(Path(tempfile.mkdtemp()) / "tiny.safetensors",
                                        "bench-tiny"))  # fmt: skip
        p = amnet.load(model, batch_size=args.batch_size)
        what = f"model {'tiny trunk' if args.trunk == 'tiny' else args.model}, views={p.views}"
        start_rss = rss_mb()

        def score() -> int:
            n = 0
            for k, row in enumerate(predict_video(p, clip, args.every)):
                n += row.ok
                if args.trace and k % args.trace == 0:
                    print(f"  at {row.time_s:6.0f} s of video: RSS {rss_mb():.0f} MB", flush=True)
            return n

        r = measure(score)
    length = args.minutes * 60
    print(
        f"{clip.name}: {W}x{H} {FPS} fps, {length:.0f} s; every {args.every} s; {what}; "
        f"cpus={os.cpu_count()} batch_size={args.batch_size}"
    )
    print(
        f"frames {r['count']}  {r['seconds']:.1f} s  {r['count'] / r['seconds']:.2f} frames/s  "
        f"{length / r['seconds']:.1f} s of video per s  RSS before {start_rss:.0f} MB, "
        f"peak {r['peak']:.0f} MB, 1st/2nd half {r['first']:.0f}/{r['second']:.0f} MB"
    )


if __name__ == "__main__":
    main()
