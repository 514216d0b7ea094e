"""The timeline plot in docs/report-video.md: ``amnet video`` on a slideshow of 12 LNSIM photos
(4 s each, 640x480, 10 fps, H.264), scored every second and smoothed over 3 s.

    python benchmarks/video_example.py                      # the default model -> docs/
    python benchmarks/video_example.py --model my.safetensors --out /tmp/timeline.png
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from report_10k import LNSIM_IMAGES


def slideshow(path: Path, photos: list[Path], seconds: int = 4, fps: int = 10) -> Path:
    import av
    from PIL import Image

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps, options={"crf": "23"})
        s.width, s.height, s.pix_fmt = 640, 480, "yuv420p"
        for p in photos:
            frame = av.VideoFrame.from_image(Image.open(p).convert("RGB"))
            for _ in range(seconds * fps):
                for packet in s.encode(frame):
                    c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--out", default="docs/video-timeline.png")
    args = ap.parse_args()
    from PIL import Image

    from amnet.apps.video import VideoJob, run_video

    photos = [p for p in sorted(LNSIM_IMAGES.glob("*.jpg")) if Image.open(p).size == (640, 480)]
    with tempfile.TemporaryDirectory() as tmp:
        clip = slideshow(Path(tmp) / "lnsim-slideshow.mp4", photos[8:20])
        job = VideoJob((str(clip),), out=str(Path(tmp) / "t.csv"), every=1.0, smooth=3.0,
                       plot=args.out, top=3, gap=4.0, model=args.model)  # fmt: skip
        run_video(job)
        print(Path(tmp, "t.csv").read_text())


if __name__ == "__main__":
    main()
