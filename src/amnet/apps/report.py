"""What ``amnet report`` does, as one library function: score a folder of photos and write one
self-contained HTML page (and, beside it, the CSV of ``amnet predict``).

The page: a summary (counts, failures with their errors, histograms of the scores on the
model's reference scale), the most and least memorable photos side by side, filters, and a
gallery from most to least memorable, paged, each photo opening its attention steps. Photos
stream through the model; each scored one leaves a small record (thumbnail, attention bytes)
in a temporary spool file, so memory stays bounded whatever their number.

>>> job = ReportJob(("photos/",), out="report.html")
>>> summary = write_report(job)     # doctest: +SKIP
>>> summary.scored, summary.failed  # doctest: +SKIP
(120, 2)
"""

from __future__ import annotations

import base64
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import IO

import numpy as np
from PIL import Image

from amnet.apps import report_page as page
from amnet.apps.files import iter_inputs
from amnet.apps.writers import open_writer, text
from amnet.fileio import atomic_write
from amnet.inference.images import load_image

THUMB = 160  # thumbnail side, pixels (JPEG quality 70: ~4 kB for a photo)
MAX_SHOWN_ERRORS = 10  # failures echoed on stderr; all of them are in the page and the CSV


@dataclass(frozen=True)
class ReportJob:
    """Everything ``amnet report`` needs; validated on creation (ValueError = usage error)."""

    paths: tuple[str, ...]
    out: str = "report.html"  # the CSV is written beside it: report.csv
    model: str = "default"
    top: int = 8  # most and least memorable photos shown side by side
    page_size: int = 120  # gallery photos per page
    batch_size: int = 16
    workers: int = 2
    device: str = "cpu"
    views: bool | None = None  # test-time views; None: as the model was measured
    recursive: bool = False

    def __post_init__(self) -> None:
        if not self.paths:
            raise ValueError("no PATH given: name image files, folders, patterns or .txt lists")
        if not self.out.lower().endswith((".html", ".htm")) or os.path.isdir(self.out):
            raise ValueError(f"--out {self.out!r}: give a file name ending in .html")
        if min(self.top, self.page_size, self.batch_size) < 1 or self.workers < 0:
            raise ValueError("--top, --page-size and --batch-size must be at least 1")

    @property
    def csv(self) -> str:
        return os.path.splitext(self.out)[0] + ".csv"


@dataclass(frozen=True)
class ReportSummary:
    total: int
    failed: int
    seconds: float
    out: str
    csv: str
    bytes: int

    @property
    def scored(self) -> int:
        return self.total - self.failed


def thumbnail(path: str, attention: np.ndarray) -> list[str]:
    """``[JPEG thumbnail, attention bytes]``, both base64: each step's map stretched to 0..255
    (the page only needs where it is high and low)."""
    img = load_image(path, draft_size=THUMB)
    img.thumbnail((THUMB, THUMB), Image.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=70, optimize=True)
    a = np.asarray(attention, dtype=np.float32)  # (T, h, w)
    lo = a.min(axis=(1, 2), keepdims=True)
    span = np.maximum(a.max(axis=(1, 2), keepdims=True) - lo, 1e-12)
    q = np.round(255 * (a - lo) / span).astype(np.uint8)  # (T, h, w)
    return [base64.b64encode(buf.getvalue()).decode(), base64.b64encode(q.tobytes()).decode()]


def _load(job: ReportJob):
    from amnet.apps.predict import load_model
    from amnet.inference.engine import RunOptions

    return load_model(job.model, device=job.device, batch_size=job.batch_size,
                      workers=job.workers, options=RunOptions(views=job.views))  # fmt: skip


def write_report(job: ReportJob, *, predictor=None, stderr: IO[str] | None = None) -> ReportSummary:
    """Score every photo the job names; write the CSV and the page (both atomically) and a
    one-line summary on stderr. ``predictor`` replaces loading ``job.model``."""
    stderr = stderr or sys.stderr
    predictor = predictor or _load(job)
    start = time.perf_counter()
    scored: list[tuple[float, int, int, str, tuple[float, ...]]] = []  # spool index
    failed: list[tuple[str, str]] = []
    att_shape: tuple[int, ...] = (predictor.steps, 0, 0)
    pool = ThreadPoolExecutor(max(1, job.workers), thread_name_prefix="amnet-thumb")
    pending: deque[tuple[object, Future]] = deque()
    with tempfile.TemporaryFile() as spool:

        def collect(pred, fut: Future) -> None:
            try:
                record = fut.result()
            except Exception as e:  # noqa: BLE001 - scored, but no thumbnail: still listed
                print(f"amnet report: {text(pred.path)}: no thumbnail: {e}", file=stderr)
                record = ["", ""]
            line = json.dumps(record).encode() + b"\n"
            scored.append((pred.score, spool.tell(), len(line), text(pred.path), pred.step_scores))
            spool.write(line)

        try:
            with open_writer(job.csv, steps=predictor.steps) as csv:
                for pred in predictor.predict_iter(iter_inputs(job.paths, recursive=job.recursive)):
                    csv.write(pred)
                    if not pred.ok:
                        failed.append((text(pred.path), text(pred.error)))
                        if len(failed) <= MAX_SHOWN_ERRORS:
                            print(f"amnet report: {text(pred.path)}: {pred.error}", file=stderr)
                        continue
                    att_shape = pred.attention.shape
                    pending.append((pred, pool.submit(thumbnail, pred.path, pred.attention)))
                    while len(pending) > 4 * max(1, job.workers):  # bounded memory
                        collect(*pending.popleft())
                while pending:
                    collect(*pending.popleft())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        scored.sort(key=lambda r: -r[0])  # most memorable first; ties keep the input order
        with atomic_write(job.out, "wb") as raw:
            f = io.TextIOWrapper(raw, encoding="utf-8", newline="\n")
            _write_page(f, job, predictor, scored, failed, att_shape, spool)
            f.flush()
            f.detach()
    size = os.path.getsize(job.out)
    total = len(scored) + len(failed)
    s = ReportSummary(total, len(failed), time.perf_counter() - start, job.out, job.csv, size)
    _say(s, stderr)
    return s


def _reference(meta: dict) -> tuple[float, float] | None:
    """(mean, SD) of the model's training scores, from its checkpoint (heads are trained on
    ``(y - target_mean) * target_scale`` with ``target_scale = 1 / SD``)."""
    m = meta.get("model") or {}
    if "target_mean" in m and m.get("target_scale"):
        return float(m["target_mean"]), 1.0 / float(m["target_scale"])
    return None


def _write_page(f, job, predictor, scored, failed, att_shape, spool) -> None:
    meta = predictor.meta
    scores = [r[0] for r in scored]
    ref = _reference(meta)
    model = meta.get("name", job.model)
    f.write(page.head(f"Memorability report · {len(scores)} photos"))
    f.write('<header><h1>How memorable are these photos?</h1><p class="muted">'
            f"Model <code>{page.esc(model)}</code> · trunk {page.esc(meta.get('trunk', '?'))} · "
            f"{predictor.steps} attention steps · made {datetime.now():%Y-%m-%d %H:%M} · "
            f'scores also in <a href="{page.esc(os.path.basename(job.csv))}">'
            f"{page.esc(os.path.basename(job.csv))}</a></p></header><main>\n")  # fmt: skip
    f.write(_summary(scores, failed, ref, meta))
    if scored:
        n = min(job.top, (len(scored) + 1) // 2)
        most = [(i, scored[i][3], scored[i][0]) for i in range(n)]
        least = [(i, scored[i][3], scored[i][0]) for i in range(len(scored) - n, len(scored))]
        pair = page.strip(f"Most memorable {n}", most) + page.strip(
            f"Least memorable {n}", least[::-1]
        )
        f.write('<section><h2>Most and least memorable</h2><div class="compare">')
        f.write(pair + "</div></section>\n")
    f.write(f'<section><h2 id="gallery-title">All photos, most memorable first</h2>{page.FILTERS}'
            f'<ol id="gallery" data-page-size="{job.page_size}">\n')  # fmt: skip
    for i, (score, _, _, path, steps) in enumerate(scored):
        f.write(page.gallery_item(i, path, score, steps, visible=i < job.page_size))
    for path, error in failed:
        f.write(page.failed_item(path, error))
    f.write(f"</ol></section></main>\n{page.VIEWER}")
    T, h, w = att_shape
    f.write('<script type="application/json" id="data">{"att": ' + json.dumps([T, h, w]))
    f.write(', "items": [\n')
    for i, (_, offset, length, _, _) in enumerate(scored):
        spool.seek(offset)
        f.write(("," if i else "") + spool.read(length).decode().replace("<", "\\u003c"))
    f.write("]}</script>\n")
    f.write(page.script())


def _summary(scores: list[float], failed: list[tuple[str, str]], ref, meta: dict) -> str:
    total = len(scores) + len(failed)
    stats = [("photos", f"{total:,}"), ("scored", f"{len(scores):,}"),
             ("failed", f"{len(failed):,}")]  # fmt: skip
    if scores:
        d = max(3, page.decimals(max(scores) - min(scores)))
        stats += [("mean score", f"{statistics.fmean(scores):.3f}"),
                  ("median", f"{statistics.median(scores):.3f}"),
                  ("range", f"{min(scores):.{d}f}–{max(scores):.{d}f}")]  # fmt: skip
    out = ['<section><h2>Summary</h2><div class="stats">']
    out += [f"<div><b>{v}</b><span class='muted'>{k}</span></div>" for k, v in stats]
    out.append("</div>")
    if scores:
        data = (meta.get("training") or {}).get("data")
        data = f" ({page.esc(data)})" if data else ""
        note = (f"The shaded band is the model's reference scale: its training photos{data} "
                f"scored {ref[0]:.3f} ± {ref[1]:.3f} (mean ± 1 SD), the dashed line their "
                "mean." if ref else "")  # fmt: skip
        lo, hi = min(scores), max(scores)
        pad = max(hi - lo, 0.01) * 0.05
        out.append('<div class="hists"><figure>'
                   + page.histogram_svg(scores, 0.0, 1.0, bins=50, ref=ref)
                   + "<figcaption>Scores on the whole scale, 0 (forgettable) to 1</figcaption>"
                   "</figure><figure>"
                   + page.histogram_svg(scores, lo - pad, hi + pad, bins=30, ref=ref)
                   + "<figcaption>Zoomed to these photos' range</figcaption></figure></div>"
                   f'<p class="muted">{note}</p>')  # fmt: skip
    if failed:
        items = "".join(f"<li><code>{page.esc(p)}</code>: <span class='err'>{page.esc(e)}</span>"
                        "</li>" for p, e in failed)  # fmt: skip
        out.append(f'<details class="failures" open><summary>{len(failed)} file'
                   f"{'s' if len(failed) > 1 else ''} could not be scored</summary>"
                   f"<ul>{items}</ul></details>")  # fmt: skip
    return "".join(out) + "</section>\n"


def _say(s: ReportSummary, stderr: IO[str]) -> None:
    if s.total == 0:
        print("amnet report: no images found in the given paths", file=stderr)
    line = f"amnet report: scored {s.scored} of {s.total} photos"
    line += f" ({s.failed} failed)" if s.failed else ""
    per = f", {s.bytes / max(1, s.total) / 1000:.1f} kB per photo" if s.total else ""
    line += f" in {s.seconds:.1f} s; wrote {s.out} ({s.bytes / 1e6:.1f} MB{per}) and {s.csv}"
    print(line, file=stderr)
