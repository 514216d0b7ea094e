"""The page of ``amnet report``: its style, its script and the markup pieces (no I/O here).

The page needs no network and no server: one HTML file, thumbnails inline (JPEG data URIs in
one JSON block), attention maps as bytes that the script colours (jet, as ``amnet predict
--maps``) and lays on the thumbnail when a photo is opened or hovered. A Content-Security-
Policy allows only this script and style (by hash) and ``data:`` images."""

from __future__ import annotations

import base64
import hashlib
import html
import math

_CSS = """
:root{--fg:#1d2330;--muted:#5b6475;--line:#d9dde5;--accent:#1f5fa8;--bad:#b3261e;--bg:#f6f7f9}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
background:var(--bg)}
header,main>section{max-width:1280px;margin:0 auto;padding:12px 20px}
h1{font-size:22px;margin:12px 0 2px}h2{font-size:17px;margin:18px 0 8px}
.muted{color:var(--muted)}code{font-size:13px}
.stats{display:flex;flex-wrap:wrap;gap:8px 28px;margin:8px 0}
.stats b{display:block;font-size:20px}
.hists{display:flex;flex-wrap:wrap;gap:16px}.hists figure{margin:0}
.hists figcaption{font-size:13px;color:var(--muted)}
svg.hist{background:#fff;border:1px solid var(--line);border-radius:6px}
.failures li{margin:2px 0}.failures .err{color:var(--bad)}
.compare{display:grid;grid-template-columns:1fr 1fr;gap:20px}
.strip{display:flex;flex-wrap:wrap;gap:8px;list-style:none;padding:0;margin:0}
.strip button{width:120px}
.filters{display:flex;flex-wrap:wrap;gap:10px 18px;align-items:end;background:#fff;
border:1px solid var(--line);border-radius:8px;padding:10px 14px;position:sticky;top:0;z-index:2}
.filters label{display:flex;flex-direction:column;font-size:13px;color:var(--muted)}
.filters input{width:90px}
#gallery{list-style:none;padding:0;margin:12px 0;display:grid;gap:12px;
grid-template-columns:repeat(auto-fill,minmax(176px,1fr))}
.card{display:block;width:100%;text-align:left;font:inherit;color:inherit;background:#fff;
border:1px solid var(--line);border-radius:8px;padding:8px;cursor:pointer}
.card:hover,.card:focus-visible{border-color:var(--accent);outline:2px solid var(--accent)}
.card img{display:block;width:100%;height:120px;object-fit:contain;background:#eef0f4}
.score{font-size:18px;font-weight:600}.rank{float:right;color:var(--muted);font-size:13px}
.steps,.name{display:block;font-size:12px;color:var(--muted);overflow:hidden;
text-overflow:ellipsis;white-space:nowrap}
.failed .card{border-color:#e6b8b5}.failed .score{color:var(--bad)}
.failed .err{display:block;font-size:12px;color:var(--bad)}
.pager{display:flex;gap:12px;align-items:center}
dialog{border:none;border-radius:10px;width:min(1100px,96vw);padding:18px 20px}
dialog::backdrop{background:#0008}
.panels{display:grid;gap:10px;grid-template-columns:repeat(auto-fill,minmax(200px,240px))}
.panel{margin:0;text-align:center}
.panel img{display:block;width:100%;height:200px;object-fit:contain;background:#eef0f4}
.panel figcaption{font-size:13px}
"""

_JS = r"""
"use strict";
const DATA = JSON.parse(document.getElementById("data").textContent);
const gallery = document.getElementById("gallery");
const items = Array.from(gallery.children);
const PAGE = Number(gallery.dataset.pageSize);
const $ = (id) => document.getElementById(id);
let shown = items.filter((li) => !li.classList.contains("failed"));
let page = 0, current = [];
const cache = new Map();

const thumbURL = (i) => "data:image/jpeg;base64," + DATA.items[i][0];
const hasThumb = (i) => DATA.items[i][0] !== ""; // "" when the file changed after scoring
function jet(v) {
  const c = (x) => Math.round(255 * Math.min(1, Math.max(0, 1.5 - Math.abs(4 * v - x))));
  return [c(3), c(2), c(1)];
}
function loadImage(i) {
  return new Promise((ok, bad) => {
    const img = new Image();
    img.onload = () => ok(img);
    img.onerror = () => bad(new Error("thumbnail " + i));
    img.src = thumbURL(i);
  });
}
// Attention of step t (or the mean of the steps when t < 0), upsampled smoothly to the image,
// stretched to 0..1, coloured blue -> red and blended 50/50 on the image: a data URL.
async function overlay(i, t) {
  const key = i + ":" + t;
  if (cache.has(key)) return cache.get(key);
  const img = await loadImage(i);
  const [T, h, w] = DATA.att, bytes = atob(DATA.items[i][1]), n = h * w;
  const small = document.createElement("canvas");
  small.width = w; small.height = h;
  const sctx = small.getContext("2d"), grey = sctx.createImageData(w, h);
  let vals = new Float32Array(n);
  for (let s = t < 0 ? 0 : t; s < (t < 0 ? T : t + 1); s++)
    for (let k = 0; k < n; k++) vals[k] += bytes.charCodeAt(s * n + k);
  let lo = Infinity, hi = -Infinity;
  for (const v of vals) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  for (let k = 0; k < n; k++) {
    const g = hi > lo ? Math.round(255 * (vals[k] - lo) / (hi - lo)) : 0;
    grey.data.set([g, g, g, 255], 4 * k);
  }
  sctx.putImageData(grey, 0, 0);
  const c = document.createElement("canvas");
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const ctx = c.getContext("2d", { willReadFrequently: true });
  ctx.imageSmoothingEnabled = true; ctx.imageSmoothingQuality = "high";
  ctx.drawImage(small, 0, 0, c.width, c.height);
  const heat = ctx.getImageData(0, 0, c.width, c.height);
  ctx.drawImage(img, 0, 0);
  const base = ctx.getImageData(0, 0, c.width, c.height);
  for (let p = 0; p < heat.data.length; p += 4) {
    const rgb = jet(heat.data[p] / 255);
    for (let k = 0; k < 3; k++) base.data[p + k] = Math.round((base.data[p + k] + rgb[k]) / 2);
  }
  ctx.putImageData(base, 0, 0);
  const url = c.toDataURL("image/jpeg", 0.9);
  cache.set(key, url);
  return url;
}

function render() {
  for (const li of current) li.hidden = true;
  const pages = Math.max(1, Math.ceil(shown.length / PAGE));
  page = Math.min(Math.max(0, page), pages - 1);
  current = shown.slice(page * PAGE, (page + 1) * PAGE);
  for (const li of current) {
    li.hidden = false;
    const img = li.querySelector("img");
    const i = Number(li.dataset.i);
    if (img && !img.src && hasThumb(i)) img.src = thumbURL(i);
  }
  const a = shown.length ? page * PAGE + 1 : 0;
  $("count").textContent = `Showing ${a}–${page * PAGE + current.length} of ${shown.length}`;
  $("page").textContent = `Page ${page + 1} of ${pages}`;
  $("prev").disabled = page === 0;
  $("next").disabled = page >= pages - 1;
}
function applyFilters() {
  const lo = Number($("min").value || 0), hi = Number($("max").value || 1);
  const mode = $("show").value;
  shown = items.filter((li) => {
    const failed = li.classList.contains("failed");
    const s = Number(li.dataset.score);
    const inRange = !failed && s >= lo && s <= hi;
    return mode === "failed" ? failed : mode === "all" ? failed || inRange : inRange;
  });
  page = 0;
  render();
}

async function view(li) {
  const i = Number(li.dataset.i), steps = li.dataset.steps.split(" ");
  $("v-title").textContent = li.dataset.path;
  $("v-score").textContent = `score ${Number(li.dataset.score).toFixed(3)} (mean of ` +
    `${steps.length} steps) · rank ${li.dataset.rank}`;
  const panels = $("v-panels");
  panels.replaceChildren();
  const add = (src, caption) => {
    const fig = document.createElement("figure"), img = document.createElement("img");
    const cap = document.createElement("figcaption");
    fig.className = "panel"; img.src = src; img.alt = caption; cap.textContent = caption;
    fig.append(img, cap); panels.append(fig);
    return img;
  };
  add(hasThumb(i) ? thumbURL(i) : "", "image");
  const imgs = steps.map((s, t) => add("", `step ${t + 1}: ${Number(s).toFixed(3)}`));
  $("viewer").showModal();
  for (let t = 0; t < imgs.length && hasThumb(i); t++) imgs[t].src = await overlay(i, t);
  $("viewer").dataset.ready = String(i);
}

gallery.addEventListener("click", (e) => {
  const li = e.target.closest("li.item");
  if (li && !li.classList.contains("failed")) view(li);
});
document.querySelector(".compare").addEventListener("click", (e) => {
  const b = e.target.closest("button[data-i]");
  if (b) view(gallery.querySelector(`li[data-i="${b.dataset.i}"]`));
});
gallery.addEventListener("pointerover", async (e) => {
  const li = e.target.closest("li.item");
  if (!li || li.classList.contains("failed") || li.dataset.hover) return;
  if (!hasThumb(Number(li.dataset.i))) return;
  li.dataset.hover = "1";
  const img = li.querySelector("img"), url = await overlay(Number(li.dataset.i), -1);
  if (li.dataset.hover) img.src = url;
});
gallery.addEventListener("pointerout", (e) => {
  const li = e.target.closest("li.item");
  if (!li || !li.dataset.hover || li.contains(e.relatedTarget)) return;
  delete li.dataset.hover;
  li.querySelector("img").src = thumbURL(Number(li.dataset.i));
});
$("close").addEventListener("click", () => $("viewer").close());
$("prev").addEventListener("click", () => { page--; render(); });
$("next").addEventListener("click", () => { page++; render(); });
for (const id of ["min", "max", "show"]) $(id).addEventListener("input", applyFilters);
$("reset").addEventListener("click", () => {
  $("min").value = "0"; $("max").value = "1"; $("show").value = "scored"; applyFilters();
});
for (const b of document.querySelectorAll(".compare button[data-i]"))
  if (hasThumb(Number(b.dataset.i))) b.querySelector("img").src = thumbURL(Number(b.dataset.i));
current = items;
render();
"""


def _sha(s: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()


def esc(s: object) -> str:
    return html.escape(str(s), quote=True)


def head(title: str) -> str:
    csp = (f"default-src 'none'; img-src data:; style-src '{_sha(_CSS)}'; "
           f"script-src '{_sha(_JS)}'; base-uri 'none'; form-action 'none'")  # fmt: skip
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style></head><body>\n"
    )


def script() -> str:
    return f"<script>{_JS}</script>\n</body></html>\n"


def decimals(step: float) -> int:
    """Decimals that tell apart numbers ``step`` apart (2 at least, 6 at most)."""
    return 6 if step <= 1e-6 else min(6, max(2, 1 - math.floor(math.log10(step))))


def histogram_svg(scores: list[float], lo: float, hi: float, *, bins: int = 40,
                  ref: tuple[float, float] | None = None) -> str:  # fmt: skip
    """Bars of ``scores`` between ``lo`` and ``hi``; ``ref`` = (mean, SD) of the model's
    training scores, drawn as a shaded band with its mean dashed."""
    w, h, left, bottom, top = 440, 170, 34, 26, 10
    pw, ph = w - left - 26, h - bottom - top
    width = (hi - lo) / bins or 1.0
    counts = [0] * bins
    for s in scores:
        counts[min(bins - 1, max(0, int((s - lo) / width)))] += 1
    peak = max(counts) or 1
    x = lambda v: left + pw * (v - lo) / (hi - lo or 1.0)  # noqa: E731
    out = [f'<svg class="hist" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img">']
    if ref is not None:
        m, sd = ref
        a, b = max(lo, m - sd), min(hi, m + sd)
        if b > a:
            out.append(f'<rect x="{x(a):.1f}" y="{top}" width="{x(b) - x(a):.1f}" height="{ph}" '
                       'fill="#f3c969" fill-opacity="0.35"><title>training photos: mean ± 1 SD'
                       "</title></rect>")  # fmt: skip
        if lo <= m <= hi:
            out.append(f'<line x1="{x(m):.1f}" x2="{x(m):.1f}" y1="{top}" y2="{top + ph}" '
                       'stroke="#b07d00" stroke-dasharray="4 3"/>')  # fmt: skip
    for k, c in enumerate(counts):
        if c:
            bh = ph * c / peak
            out.append(f'<rect x="{x(lo + k * width) + 0.5:.1f}" y="{top + ph - bh:.1f}" '
                       f'width="{max(1.0, pw / bins - 1):.1f}" height="{bh:.1f}" fill="#1f5fa8">'
                       f"<title>{lo + k * width:.3f}–{lo + (k + 1) * width:.3f}: {c}</title>"
                       "</rect>")  # fmt: skip
    out.append(f'<line x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}" '
               'stroke="#5b6475"/>')  # fmt: skip
    digits = decimals((hi - lo) / 5)
    for k in range(6):
        v = lo + (hi - lo) * k / 5
        out.append(f'<text x="{x(v):.1f}" y="{h - 8}" font-size="11" text-anchor="middle" '
                   f'fill="#5b6475">{v:.{digits}f}</text>')  # fmt: skip
    out.append(f'<text x="4" y="{top + 10}" font-size="11" fill="#5b6475">{peak}</text></svg>')
    return "".join(out)


def gallery_item(i: int, path: str, score: float, steps: tuple[float, ...], visible: bool) -> str:
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    st = " ".join(f"{s:.6f}" for s in steps)
    return (
        f'<li class="item" data-i="{i}" data-rank="{i + 1}" data-path="{esc(path)}" '
        f'data-score="{score:.6f}" data-steps="{st}"{"" if visible else " hidden"}>'
        f'<button class="card" type="button" title="{esc(path)}"><img alt="">'
        f'<span class="rank">#{i + 1}</span><span class="score">{score:.3f}</span>'
        f'<span class="steps">steps {" · ".join(f"{s:.3f}" for s in steps)}</span>'
        f'<span class="name">{esc(name)}</span></button></li>\n'
    )


def failed_item(path: str, error: str) -> str:
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    return (
        f'<li class="item failed" data-path="{esc(path)}" data-score="" hidden>'
        f'<div class="card" title="{esc(path)}"><span class="score">failed</span>'
        f'<span class="name">{esc(name)}</span><span class="err">{esc(error)}</span></div></li>\n'
    )


def strip(title: str, entries: list[tuple[int, str, float]]) -> str:
    """A row of thumbnails (gallery index, path, score) that open the viewer."""
    lis = "".join(
        f'<li><button class="card" type="button" data-i="{i}" title="{esc(p)}"><img alt="">'
        f'<span class="score">{s:.3f}</span></button></li>'
        for i, p, s in entries
    )
    return f'<div><h3>{esc(title)}</h3><ol class="strip">{lis}</ol></div>'


FILTERS = """<div class="filters" role="search">
<label>score from<input id="min" type="number" min="0" max="1" step="0.01" value="0"></label>
<label>to<input id="max" type="number" min="0" max="1" step="0.01" value="1"></label>
<label>show<select id="show"><option value="scored">scored photos</option>
<option value="failed">failed files</option><option value="all">both</option></select></label>
<button id="reset" type="button">Reset</button>
<span class="pager"><button id="prev" type="button">◀ Previous</button><span id="page"></span>
<button id="next" type="button">Next ▶</button></span><span id="count" class="muted"></span>
</div>
"""

VIEWER = """<dialog id="viewer" aria-labelledby="v-title"><h2 id="v-title"></h2>
<p id="v-score" class="muted"></p><div id="v-panels" class="panels"></div>
<p class="muted">Each step's attention (blue: little, red: most) on the photo, as the model
looked at it; the score is the mean of the steps' scores.</p>
<button id="close" type="button">Close</button></dialog>
"""
