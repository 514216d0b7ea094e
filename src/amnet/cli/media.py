"""``amnet report`` and ``amnet video``: the subcommands that show results instead of listing
them. ``register(sub)`` adds both to the ``amnet`` parser; each ``run(args) -> int`` builds a
job and calls one library function (:mod:`amnet.apps.report`, :mod:`amnet.apps.video`).

Exit status: 0 all scored, 1 some inputs failed (the rest are still written), 2 usage errors."""

from __future__ import annotations

import argparse
import sys

_REPORT_EXAMPLES = """examples:
  amnet report photos/ --out report.html              # then open report.html in a browser
  amnet report 'shots/**/*.jpg' --recursive --out shots.html --top 12
  amnet report list.txt --model my-model.safetensors --out mine.html

Writes one self-contained HTML page (thumbnails inline, no network needed) and, beside it,
the CSV of `amnet predict` (report.csv for report.html). Exit status: 0 all scored, 1 some
files failed (they are listed in the page), 2 usage error."""

_VIDEO_EXAMPLES = """examples:
  amnet video clip.mp4 --out timeline.csv                 # a score every second
  amnet video clip.mp4 --every 2 --smooth 6 --plot timeline.png --frames top/ --top 5
  amnet video a.mp4 b.mkv --every 5 --out timeline.csv    # several videos, one CSV

CSV columns: time_s,score,step_scores,smoothed,path,error (one row per sampled frame, in time
order; smoothed is empty without --smooth; a file that is not a video is one row with an
error). Top frames are at least --gap seconds apart and never in the first or last second.
Needs PyAV: pip install 'amnet[video]'. Exit status: 0 all scored, 1 some file or frame
failed, 2 usage error."""


def _number(kind: type, low: float, *, strict: bool = False):
    def parse(s: str):
        try:
            v = kind(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
        if v < low or (strict and v == low):
            raise argparse.ArgumentTypeError(f"must be {'above' if strict else 'at least'} "
                                             f"{low}, got {s}")  # fmt: skip
        return v

    return parse


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", metavar="NAME|FILE",
                   help="registered model or .safetensors file (default: %(default)s)")  # fmt: skip
    p.add_argument("--batch-size", type=_number(int, 1), default=16, metavar="N")
    p.add_argument("--workers", type=_number(int, 0), default=2, metavar="N",
                   help="decoding threads (default: %(default)s)")  # fmt: skip
    p.add_argument("--device", default="cpu", metavar="cpu|cuda")
    p.add_argument("--views", action=argparse.BooleanOptionalAction, default=None,
                   help="test-time views, as in amnet predict (--no-views: one trunk pass "
                   "per image, ~4x faster with the default; default: as the model was "
                   "measured)")  # fmt: skip


def _fail(command: str, e: BaseException) -> int:
    msg = str(e.args[0] if isinstance(e, KeyError) and e.args else e)
    line = msg.splitlines()[0] if msg else repr(e)
    print(f"amnet {command}: error: {line}", file=sys.stderr)
    return 2


def _report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="score photos into one HTML page (gallery, attention, summary)",
        description="Score photos and write a self-contained HTML report: summary and "
        "histogram, most vs least memorable, a gallery sorted by score with each photo's "
        "attention steps, filters, and the CSV beside it.",
        epilog=_REPORT_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="image file, folder, glob pattern, or .txt file listing paths")  # fmt: skip
    p.add_argument("--out", default="report.html", metavar="FILE.html",
                   help="the page to write (default: %(default)s)")  # fmt: skip
    p.add_argument(
        "--top",
        type=_number(int, 1),
        default=8,
        metavar="N",
        help="most and least memorable photos side by side (default: %(default)s)",
    )
    p.add_argument("--page-size", type=_number(int, 1), default=120, metavar="N",
                   help="gallery photos per page (default: %(default)s)")  # fmt: skip
    p.add_argument("--recursive", action="store_true", help="also look inside sub-folders")
    _common(p)

    def run(args: argparse.Namespace) -> int:
        from amnet.apps.report import ReportJob, write_report

        try:
            job = ReportJob(tuple(args.paths), out=args.out, model=args.model, top=args.top,
                            page_size=args.page_size, batch_size=args.batch_size,
                            workers=args.workers, device=args.device,
                            recursive=args.recursive, views=args.views)  # fmt: skip
            s = write_report(job)
        except (OSError, RuntimeError, KeyError, ValueError) as e:
            return _fail("report", e)
        return 0 if s.total and not s.failed else 1

    p.set_defaults(func=run)


def _video(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "video", help="memorability over time for videos (CSV, plot, top frames)",
        description="Score the frames of videos every N seconds: a CSV timeline, a plot with "
        "the most memorable moments marked, and those frames as JPEGs.",
        epilog=_VIDEO_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("files", nargs="+", metavar="FILE", help="video files (any FFmpeg format)")
    p.add_argument("--every", type=_number(float, 0, strict=True), default=1.0, metavar="SECONDS",
                   help="seconds between sampled frames (default: %(default)s)")  # fmt: skip
    p.add_argument("--out", metavar="FILE.csv", help="the timeline CSV (default: stdout)")
    p.add_argument("--plot", metavar="FILE.png", help="plot of the score over time")
    p.add_argument("--frames", metavar="DIR", help="write the top frames as JPEGs")
    p.add_argument("--top", type=_number(int, 1), default=5, metavar="K",
                   help="how many top frames (default: %(default)s)")  # fmt: skip
    p.add_argument("--gap", type=_number(float, 0), default=3.0, metavar="SECONDS",
                   help="top frames at least this far apart (default: %(default)s)")  # fmt: skip
    p.add_argument("--smooth", type=_number(float, 0, strict=True), metavar="SECONDS",
                   help="centred moving average over this window (peaks use it)")  # fmt: skip
    _common(p)

    def run(args: argparse.Namespace) -> int:
        from amnet.apps.video import VideoJob, run_video

        try:
            import av  # noqa: F401
        except ImportError:
            return _fail("video", RuntimeError("needs PyAV: pip install 'amnet[video]'"))
        try:
            job = VideoJob(tuple(args.files), out=args.out, every=args.every,
                           smooth=args.smooth, plot=args.plot, frames=args.frames,
                           top=args.top, gap=args.gap, model=args.model,
                           batch_size=args.batch_size, workers=args.workers,
                           device=args.device, views=args.views)  # fmt: skip
            s = run_video(job)
        except (OSError, RuntimeError, KeyError, ValueError) as e:
            return _fail("video", e)
        return 0 if s.frames and not (s.failed_videos or s.failed_frames) else 1

    p.set_defaults(func=run)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``report`` and ``video`` to the ``amnet`` command's subparsers."""
    _report(sub)
    _video(sub)
