"""How far a video frame's score is from its photo's own score: the tolerance that H.264
compression causes, measured for a model on a slideshow of real LNSIM photos.

Each 640x480 photo is shown for 2 s at 10 fps (x264, crf 23 unless --crf); the timeline is
sampled every second and each sample is compared with ``predict`` on the photo file itself.

    python benchmarks/video_tolerance.py --model default --photos 8
    python benchmarks/video_tolerance.py --model my.safetensors --crf 35
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

LNSIM_IMAGES = Path(__file__).resolve().parents[1].parent / "shared/datasets/lnsim/images"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--photos", type=int, default=8)
    ap.add_argument("--crf", default="23")
    args = ap.parse_args()
    import av
    from PIL import Image

    import amnet
    from amnet.inference.video import predict_video

    photos = [p for p in sorted(LNSIM_IMAGES.glob("*.jpg")) if Image.open(p).size == (640, 480)]
    photos = photos[: args.photos]
    p = amnet.load(args.model)
    own = np.array([r.score for r in p.predict(photos)])
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "slides.mp4"
        with av.open(str(clip), "w") as c:
            s = c.add_stream("libx264", rate=10, options={"crf": args.crf})
            s.width, s.height, s.pix_fmt = 640, 480, "yuv420p"
            for photo in photos:
                frame = av.VideoFrame.from_image(Image.open(photo).convert("RGB"))
                for _ in range(20):
                    for packet in s.encode(frame):
                        c.mux(packet)
            for packet in s.encode():
                c.mux(packet)
        rows = list(predict_video(p, clip, every=1.0))
    diff = np.array([abs(r.score - own[int(r.time_s // 2)]) for r in rows])
    gaps = np.diff(np.sort(own))
    print(
        f"model {args.model} (views={p.views}); {len(photos)} photos 640x480, x264 crf {args.crf}, "
        f"{len(rows)} frames"
    )
    print(
        f"|frame - photo|: max {diff.max():.2e}, median {np.median(diff):.2e}, "
        f"mean {diff.mean():.2e}"
    )
    print(
        f"photo scores {own.min():.4f}-{own.max():.4f} (SD {own.std():.4f}), smallest gap "
        f"between two photos {gaps.min():.2e}"
    )


if __name__ == "__main__":
    main()
