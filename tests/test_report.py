"""``amnet report``: the page it writes, read as HTML and driven in Debian's Chromium (Playwright,
headless; never ``playwright install``), on real LNSIM photos and a tiny random model."""

from __future__ import annotations

import csv as csv_module
import io
import os
import shutil
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from conftest import LNSIM, TINY_CFG

from amnet.apps.predict import PredictJob, run_predict
from amnet.checkpoint import save_checkpoint
from amnet.cli.main import main
from amnet.model.head import AMNetHead

PHOTOS = sorted((LNSIM / "images").glob("*.jpg"))[:9]
CHROMIUM = "/usr/lib/chromium/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]  # fmt: skip
ODD = '<b>&"odd.jpg'  # a file name that must not become markup


@pytest.fixture(scope="module")
def model(tmp_path_factory, tiny_trunk_name) -> Path:
    """The tiny random head, its scores spread 40x wider (target_scale 0.05) for a readable
    order."""
    torch.manual_seed(0)
    head = AMNetHead(replace(TINY_CFG, target_scale=0.05)).eval()
    path = tmp_path_factory.mktemp("model") / "sensitive.safetensors"
    return save_checkpoint(path, head, trunk=tiny_trunk_name)


def cli(argv: list[str]) -> int:
    return main(argv)  # the real command, in-process


@pytest.fixture(scope="module")
def report(tmp_path_factory, model) -> tuple[Path, list[str]]:
    """report.html for 9 photos + a photo with an odd name, a text file and a missing file."""
    d = tmp_path_factory.mktemp("report")
    photos = d / "photos"
    photos.mkdir()
    for p in PHOTOS:
        os.symlink(p, photos / p.name)
    shutil.copy(PHOTOS[0], photos / ODD)  # the same photo, so the same score
    (photos / "notes.jpg").write_text("not a photo")
    paths = [str(photos), str(d / "missing.png")]
    argv = ["report", *paths, "--out", str(d / "out" / "report.html"), "--model", str(model),
            "--top", "2", "--page-size", "4", "--workers", "1"]  # fmt: skip
    assert cli(argv) == 1  # two files failed
    return d / "out" / "report.html", paths


class Items(HTMLParser):
    """The gallery's items (their attributes) in document order, and every src/href."""

    def __init__(self) -> None:
        super().__init__()
        self.items: list[dict] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "li" and "data-path" in a:
            self.items.append(a)
        self.links += [v for k, v in attrs if k in ("src", "href") and v]


def test_page_lists_every_photo_by_score_with_the_predict_csv(report, model, capsys):
    page, paths = report
    csv = page.with_suffix(".csv")
    expected = page.parent / "predict.csv"
    run_predict(PredictJob(tuple(paths), model=str(model), out=str(expected), workers=1))
    assert csv.read_text() == expected.read_text()  # the same rows as `amnet predict`
    rows = list(csv_module.DictReader(io.StringIO(csv.read_text())))
    csv_scores = {r["path"]: float(r["score"]) for r in rows if r["score"]}

    parser = Items()
    parser.feed(page.read_text(encoding="utf-8"))
    scored = [a for a in parser.items if a["data-score"]]
    failed = [a for a in parser.items if not a["data-score"]]
    scores = [float(a["data-score"]) for a in scored]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) > 5
    assert {a["data-path"]: float(a["data-score"]) for a in scored} == pytest.approx(csv_scores)
    assert ODD in {os.path.basename(a["data-path"]) for a in scored}  # escaped, read back
    assert "<b>&" not in page.read_text(encoding="utf-8")
    assert [os.path.basename(a["data-path"]) for a in failed] == ["notes.jpg", "missing.png"]
    assert all(a["data-steps"].count(" ") == 2 for a in scored)
    # self-contained: nothing is fetched; the CSV is linked beside it
    assert all(u.startswith(("data:", "#")) or u == "report.csv" for u in parser.links)
    assert "report.csv" in parser.links
    kb = page.stat().st_size / len(parser.items) / 1000
    assert kb < 10, f"{kb:.1f} kB per photo"


def test_report_in_chromium(report):
    sync_api = pytest.importorskip("playwright.sync_api")
    page_file, _ = report
    problems: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("console", lambda m: m.type in ("error", "warning") and problems.append(m.text))
        page.goto(page_file.as_uri())
        expect = sync_api.expect
        visible = page.locator("#gallery li.item:visible")
        expect(visible).to_have_count(4)  # the first page
        expect(page.locator("#count")).to_have_text("Showing 1–4 of 10")
        ranks = lambda: [int(r) for r in visible.evaluate_all("e => e.map(x => x.dataset.rank)")]  # noqa: E731
        assert ranks() == [1, 2, 3, 4]
        assert visible.first.locator("img").get_attribute("src").startswith("data:image/jpeg")
        page.click("#next")
        expect(page.locator("#page")).to_have_text("Page 2 of 3")
        assert ranks() == [5, 6, 7, 8]

        # filters: failed files; a score range
        page.select_option("#show", "failed")
        expect(visible).to_have_count(2)
        assert "not an image" in visible.first.text_content()
        assert "file not found" in visible.nth(1).text_content()
        scores = [float(s) for s in page.locator("#gallery li.item:not(.failed)").evaluate_all(
            "e => e.map(x => x.dataset.score)")]  # fmt: skip
        cut = scores[6]
        page.select_option("#show", "scored")
        page.fill("#min", f"{cut:.6f}")
        n = sum(s >= float(f"{cut:.6f}") for s in scores)
        assert 4 < n < 10
        expect(page.locator("#count")).to_have_text(f"Showing 1–4 of {n}")
        page.click("#reset")
        expect(page.locator("#count")).to_have_text("Showing 1–4 of 10")

        # a photo opens its attention steps; the thumbnail is not one of them
        first = visible.first
        thumb = first.locator("img").get_attribute("src")
        steps = first.get_attribute("data-steps").split()
        first.locator("button").click()
        expect(page.locator("#viewer")).to_be_visible()
        expect(page.locator("#viewer")).to_have_attribute("data-ready", "0", timeout=10_000)
        panels = page.locator("#v-panels img")
        expect(panels).to_have_count(4)
        srcs = [panels.nth(k).get_attribute("src") for k in range(4)]
        assert srcs[0] == thumb and all(s.startswith("data:image/") for s in srcs)
        assert len(set(srcs)) == 4
        captions = page.locator("#v-panels figcaption").all_text_contents()
        assert captions == ["image"] + [f"step {t + 1}: {float(s):.3f}" for t, s in
                                         enumerate(steps)]  # fmt: skip
        page.keyboard.press("Escape")
        expect(page.locator("#viewer")).to_be_hidden()

        # hovering a photo lays its attention on the thumbnail
        second = visible.nth(1).locator("img")
        plain = second.get_attribute("src")
        second.hover()
        expect(second).not_to_have_attribute("src", plain)
        page.mouse.move(5, 5)
        expect(second).to_have_attribute("src", plain)

        # most and least memorable side by side: the gallery's two ends
        most = page.locator(".compare ol").nth(0).locator("button")
        least = page.locator(".compare ol").nth(1).locator("button")
        assert [most.nth(k).get_attribute("data-i") for k in range(2)] == ["0", "1"]
        assert [least.nth(k).get_attribute("data-i") for k in range(2)] == ["9", "8"]
        least.first.click()
        expect(page.locator("#v-title")).to_have_text(
            page.locator('#gallery li[data-i="9"]').get_attribute("data-path"))  # fmt: skip
        browser.close()
    assert problems == []


def test_exit_status_and_one_line_errors(model, tmp_path, capsys):
    out = str(tmp_path / "r.html")
    assert cli(["report", str(PHOTOS[0]), "--out", out, "--model", str(model)]) == 0
    assert Path(out).with_suffix(".csv").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli(["report", str(empty), "--out", out, "--model", str(model)]) == 1
    assert cli(["report", str(PHOTOS[0]), "--out", str(tmp_path / "r.txt")]) == 2
    assert cli(["report", str(PHOTOS[0]), "--out", out, "--model", "nope.safetensors"]) == 2
    err = capsys.readouterr().err
    assert "no images found" in err and "Traceback" not in err
    assert "amnet report: error: --out" in err and "checkpoint not found" in err


def test_views_flag_scores_as_predict_with_and_without_views(model, tmp_path):
    """``amnet report --views`` / ``--no-views`` score as the library does with
    ``RunOptions(views=True / False)`` (the mirror view changes the tiny model's scores)."""
    import amnet
    from amnet.inference.engine import RunOptions

    got = {}
    for flag in ("--views", "--no-views"):
        out = tmp_path / f"r{flag}.html"
        assert cli(["report", *map(str, PHOTOS[:3]), "--out", str(out), "--model", str(model),
                    flag]) == 0  # fmt: skip
        rows = csv_module.DictReader(open(out.with_suffix(".csv")))
        scores = {r["path"]: float(r["score"]) for r in rows}
        got[flag] = [scores[str(p)] for p in PHOTOS[:3]]
    for flag, views in (("--views", True), ("--no-views", False)):
        want = amnet.load(model, workers=0, options=RunOptions(views=views)).predict(PHOTOS[:3])
        assert got[flag] == pytest.approx([p.score for p in want], abs=1e-6)
    assert max(abs(a - b) for a, b in zip(got["--views"], got["--no-views"], strict=True)) > 1e-4
