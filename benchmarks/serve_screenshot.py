"""Screenshot of the web demo for the README: ``amnet serve`` on 127.0.0.1, Debian's Chromium
(headless, via Playwright) uploads a few LNSIM photos and one text file, then captures the page.

    python benchmarks/serve_screenshot.py                     # -> docs/serve.png
    python benchmarks/serve_screenshot.py --model my.safetensors --photos 6

Without --model it serves the registered "default" model, or else an untrained head on the real
ResNet-152 trunk (then the scores shown mean nothing; the page is what is pictured).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from _serve_common import LNSIM_IMAGES, model_or_untrained, serving
from playwright.sync_api import expect, sync_playwright

CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/lib/chromium/chromium")
                 if os.path.exists(p)), "/usr/bin/chromium")  # fmt: skip
PICKS = ["0004.jpg", "0010.jpg", "0033.jpg", "0021.jpg", "0026.jpg"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model name or checkpoint (default: see above)")
    ap.add_argument("--out", default="docs/serve.png")
    ap.add_argument("--photos", type=int, default=len(PICKS))
    ap.add_argument("--height", type=int, default=1500, help="pixels of the page captured")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model, about = model_or_untrained(args.model, Path(tmp))
        photos = [LNSIM_IMAGES / n for n in PICKS][: args.photos]
        note = Path(tmp) / "notes.txt"
        note.write_text("a text file, not a photo")
        with serving(model) as url, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1200, "height": args.height})
            page.goto(url + "/")
            expect(page.locator("#model")).not_to_have_text("Loading model…")
            page.set_input_files(
                "#files", [*map(str, photos[:2]), str(note), *map(str, photos[2:])]
            )
            expect(page.locator("#status")).to_contain_text("Scored", timeout=300_000)
            page.locator("#card-0 .step").nth(2).click()  # show step 2's overlay on the first
            page.locator("#card-0 .step").nth(2).blur()
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=args.out)
            browser.close()
        print(f"model: {about}\nwrote {args.out}")


if __name__ == "__main__":
    main()
