"""``amnet report`` at 10,000 photos: time and peak memory to write it, file size per photo, and
how the page behaves in Debian's Chromium (load, page turn, filter, opening a photo).

The photos are LNSIM's 2,000 real photos listed 5 times in a .txt file (10,000 entries). The
model is the benchmark's tiny random trunk with a full-size AMNet head (as predict_10k.py), so
the figures measure decoding, thumbnails, the head and the page, not the ImageNet trunk.

    python benchmarks/report_10k.py                  # 1,000 then 10,000 photos
    python benchmarks/report_10k.py --n 2000 --keep out/   # keep the pages to look at them
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _speed_common import sampling_rss
from predict_10k import make_checkpoint, register_tiny_trunk

LNSIM_IMAGES = Path(__file__).resolve().parents[1].parent / "shared/datasets/lnsim/images"
CHROMIUM = "/usr/lib/chromium/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]  # fmt: skip


def child(listing: str, model: str, out: str) -> None:
    """In a fresh process: write the report, sampling RSS every 50 ms."""
    register_tiny_trunk()
    from amnet.apps.report import ReportJob, write_report

    job = ReportJob((listing,), out=out, model=model, batch_size=32)
    s, seconds, memory = sampling_rss(lambda: write_report(job))
    print(json.dumps({"photos": s.total, "failed": s.failed, "seconds": seconds,
                      "bytes": s.bytes, **memory}))  # fmt: skip


def browse(page_file: Path) -> dict:
    """Seconds for the page to load and show its first page, to turn a page, to filter, and
    to open a photo with its attention steps; the JS heap after all that."""
    from playwright.sync_api import expect, sync_playwright

    times = {}
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        t0 = time.perf_counter()
        page.goto(page_file.as_uri(), timeout=300_000)
        expect(page.locator("#count")).to_contain_text("Showing 1–", timeout=300_000)
        times["load_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        page.click("#next")
        expect(page.locator("#page")).to_contain_text("Page 2 of")
        times["next_page_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        page.fill("#min", "0.5")
        expect(page.locator("#page")).to_contain_text("Page 1 of")
        times["filter_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        page.locator("#gallery li.item:visible button").first.click()
        expect(page.locator("#viewer")).to_have_attribute("data-ready", "0", timeout=60_000)
        times["open_photo_s"] = time.perf_counter() - t0
        heap = page.evaluate("performance.memory ? performance.memory.usedJSHeapSize : 0")
        times["js_heap_mb"] = heap / 1e6
        browser.close()
    times["errors"] = errors
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="*", default=[1000, 10000])
    ap.add_argument("--keep", help="folder to keep the pages in")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(*args.child)
    photos = sorted(LNSIM_IMAGES.glob("*.jpg"))
    register_tiny_trunk()
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(args.keep or tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        model = make_checkpoint(Path(tmp) / "tiny.safetensors", "bench-tiny")
        print(f"cpus={os.cpu_count()} photos: LNSIM listed in a .txt, trunk: tiny random")
        print(f"{'photos':>7} {'write s':>8} {'photos/s':>8} {'MB':>7} {'kB/photo':>8} "
              f"{'peak RSS':>8} {'1st/2nd half RSS':>17} | {'load s':>6} {'next s':>6} "
              f"{'filter s':>8} {'open s':>6} {'JS heap':>7}")  # fmt: skip
        for n in args.n:
            listing = Path(tmp) / f"list{n}.txt"
            listing.write_text("".join(f"{photos[i % len(photos)]}\n" for i in range(n)))
            page_file = out_dir / f"report{n}.html"
            cmd = [sys.executable, __file__, "--child", str(listing), str(model), str(page_file)]
            r = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True)
                           .stdout.strip().splitlines()[-1])  # fmt: skip
            b = browse(page_file)
            cells = [f"{n:>7}", f"{r['seconds']:>8.1f}", f"{n / r['seconds']:>8.1f}",
                     f"{r['bytes'] / 1e6:>7.1f}", f"{r['bytes'] / n / 1e3:>8.2f}",
                     f"{r['peak_rss_mb']:>7.0f}M",
                     f"{r['first_half_max_mb']:>8.0f}M/{r['second_half_max_mb']:.0f}M |",
                     f"{b['load_s']:>6.2f}", f"{b['next_page_s']:>6.2f}",
                     f"{b['filter_s']:>8.2f}", f"{b['open_photo_s']:>6.2f}",
                     f"{b['js_heap_mb']:>6.0f}M"]  # fmt: skip
            errors = f"  console errors: {b['errors']}" if b["errors"] else ""
            print(" ".join(cells) + errors)


if __name__ == "__main__":
    main()
