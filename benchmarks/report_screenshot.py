"""Screenshots of ``amnet report`` for the docs: real LNSIM photos (and one text file, to show a
failure) scored into a report, opened in Debian's Chromium (headless, via Playwright).

    python benchmarks/report_screenshot.py                  # the default model, 36 photos
    python benchmarks/report_screenshot.py --trunk tiny     # quick: a random trunk (scores mean
                                                            # nothing; the page is what is shown)

Writes docs/report.png (the top of the page) and docs/report-attention.png (a photo opened on
its attention steps).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from predict_10k import make_checkpoint, register_tiny_trunk
from report_10k import ARGS, CHROMIUM, LNSIM_IMAGES


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--trunk", help="'tiny': a random trunk with a full-size head instead")
    ap.add_argument("--photos", type=int, default=36)
    ap.add_argument("--out", default="docs/report.png")
    ap.add_argument("--height", type=int, default=1500, help="pixels of the page captured")
    args = ap.parse_args()
    from playwright.sync_api import expect, sync_playwright

    from amnet.apps.report import ReportJob, write_report

    with tempfile.TemporaryDirectory() as tmp:
        photos = Path(tmp) / "photos"
        photos.mkdir()
        every = sorted(LNSIM_IMAGES.glob("*.jpg"))
        step = len(every) // args.photos  # spread over the dataset
        for p in every[::step][: args.photos]:
            os.symlink(p, photos / p.name)
        (photos / "notes.jpg").write_text("a text file, not a photo")
        model = args.model
        if args.trunk == "tiny":
            register_tiny_trunk()
            model = str(make_checkpoint(Path(tmp) / "tiny.safetensors", "bench-tiny"))
        page_file = Path(tmp) / "report.html"
        write_report(ReportJob((str(photos),), out=str(page_file), model=model, top=6))
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": args.height})
            page.goto(page_file.as_uri())
            expect(page.locator("#count")).to_contain_text("Showing 1–")
            page.wait_for_timeout(300)  # thumbnails decoded
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=args.out)
            page.set_viewport_size({"width": 1280, "height": 720})
            page.locator("#gallery li.item:visible button").first.click()
            expect(page.locator("#viewer")).to_have_attribute("data-ready", "0")
            attention = str(Path(args.out).with_name("report-attention.png"))
            page.locator("#viewer").screenshot(path=attention)
            browser.close()
    print(f"model: {model}\nwrote {args.out} and {attention}")


if __name__ == "__main__":
    main()
