"""The web page in a real browser: Debian's Chromium driven by Playwright, against uvicorn on
127.0.0.1 (tiny trunk). Chromium comes from apt (``.ci/run`` installs it), never from
``playwright install``."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from conftest import LNSIM
from playwright.sync_api import expect, sync_playwright

import amnet
from amnet.apps.serve.app import ServeConfig, create_app

CHROMIUM = ("/usr/bin/chromium", "/usr/lib/chromium/chromium")
PHOTOS = sorted((LNSIM / "images").glob("*.jpg"))[:2]


def chromium() -> str:
    for path in CHROMIUM:
        if os.path.exists(path):
            return path
    pytest.fail("Chromium is missing: apt-get install -y chromium (see .ci/run)")


@pytest.fixture
def live_server(tiny_checkpoint) -> Iterator[str]:
    app = create_app(amnet.load(tiny_checkpoint, workers=0), ServeConfig())
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # a free port, held until uvicorn takes it over
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    t0 = time.monotonic()
    while not server.started:
        assert thread.is_alive() and time.monotonic() - t0 < 30, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    sock.close()


def test_page_scores_photos_like_the_api(live_server: str, tmp_path: Path):
    bad = tmp_path / "notes.txt"
    bad.write_text("this is not a photo")
    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium(), headless=True, args=["--no-sandbox"]
        )
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("console", lambda m: m.type == "error" and problems.append(m.text))
        choosers = []  # listening before the page loads: the chooser is intercepted reliably
        page.on("filechooser", lambda fc: choosers.append(fc))
        page.goto(live_server + "/")
        expect(page.locator("#model")).to_contain_text("tiny-test")  # no eval: the page's CSP

        # keyboard only: Tab past the skip link to the picker button, Enter opens the chooser
        page.keyboard.press("Tab")
        page.keyboard.press("Tab")
        expect(page.locator("#pick")).to_be_focused()
        page.keyboard.press("Enter")
        for _ in range(100):
            if choosers:
                break
            page.wait_for_timeout(100)
        assert choosers, "Enter on 'Choose photos' opened no file chooser"
        choosers[0].set_files([str(PHOTOS[0]), str(bad), str(PHOTOS[1])])

        status = "Scored 2 of 3 photos. 1 could not be scored."
        expect(page.locator("#status")).to_have_text(status, timeout=60_000)
        assert page.get_attribute("#bar", "value") == "3"

        shown = float(page.get_attribute("#card-0", "data-score"))
        text = page.text_content("#card-0 .score-value")
        with httpx.Client(base_url=live_server) as c:
            files = [("files", (PHOTOS[0].name, PHOTOS[0].read_bytes(), "image/jpeg"))]
            api = c.post("/v1/predict", files=files).json()["results"][0]["score"]
        assert shown == pytest.approx(api, abs=1e-9)
        assert text == f"{api:.3f}"
        assert page.get_attribute("#card-0 .gauge", "aria-valuenow") == f"{api:.3f}"

        assert "not an image" in page.text_content("#card-1 .problem-title")
        assert "not an image" in page.text_content("#card-1 .problem-text")

        # step overlays: Photo + 3 steps, each with its score; Enter on a step shows its overlay
        steps = page.locator("#card-0 .step")
        assert steps.count() == 4
        assert steps.nth(2).locator(".step-label").text_content() == "Step 2"
        steps.nth(2).focus()
        page.keyboard.press("Enter")
        assert steps.nth(2).get_attribute("aria-pressed") == "true"
        assert page.get_attribute("#card-0 .photo img", "src").startswith("data:image/png;base64,")

        # gallery sorted by score, and its CSV
        scores = [float(s) for s in page.locator("#gallery .g-score").all_text_contents()]
        assert len(scores) == 2 and scores == sorted(scores, reverse=True)
        with page.expect_download() as download:
            page.keyboard.press("Shift+Tab")  # any focus move; then the CSV button by keyboard
            page.focus("#csv")
            page.keyboard.press("Enter")
        lines = Path(download.value.path()).read_text().splitlines()
        assert lines[0] == "rank,filename,score,step_1,step_2,step_3,width,height,error"
        assert len(lines) == 4 and lines[3].startswith(",notes.txt,")
        assert float(lines[1].split(",")[2]) == pytest.approx(max(scores), abs=5e-4)

        shot = tmp_path / "serve.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        browser.close()
    # a console error would be e.g. a CSP violation or a broken script; only the 200s are fine
    assert not problems, problems
