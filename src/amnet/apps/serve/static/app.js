// amnet web demo: no build step, no dependencies. Each photo is its own request (four at a
// time); the server batches requests that arrive together.
"use strict";

const CONCURRENCY = 4;
const GAUGE_MIN = 0.4; // the gauge spans 0.4..1.0: nearly all photos score in that range
const GAUGE_MAX = 1.0;
const $ = (sel) => document.querySelector(sel);
const items = [];
const waiting = [];
let active = 0;
let limits = { max_file_bytes: 20 * 1024 * 1024 };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c) node.append(c);
  return node;
}

const fmt = (s) => s.toFixed(3);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const gaugePos = (s) => Math.min(1, Math.max(0, (s - GAUGE_MIN) / (GAUGE_MAX - GAUGE_MIN)));

function verdict(s) {
  if (s >= 0.8) return "memorable";
  if (s >= 0.65) return "average";
  return "forgettable";
}

async function loadModel() {
  try {
    const r = await fetch("/v1/models");
    const [m] = await r.json();
    limits = m.limits;
    const steps = m.steps === 1 ? "1 attention step" : `${m.steps} attention steps`;
    $("#model").textContent = `Model ${m.name} · ${m.trunk} trunk · ${steps}`;
    const mb = Math.round(limits.max_file_bytes / 1048576);
    $("#drop-hint").textContent =
      `One or many. JPEG, PNG, WebP, GIF, BMP, TIFF, up to ${mb} MB each. Nothing is stored.`;
  } catch (e) {
    $("#model").textContent = "The model server is not answering.";
  }
}

function addFiles(fileList) {
  const files = Array.from(fileList || []);
  if (!files.length) return;
  for (const file of files) {
    const item = { id: items.length, file, result: null, error: null, done: false };
    items.push(item);
    item.card = makeCard(item);
    $("#cards").append(item.card);
    waiting.push(item);
  }
  $("#progress").hidden = false;
  updateProgress();
  pump();
}

function makeCard(item) {
  const isImage = item.file.type.startsWith("image/");
  item.url = isImage ? URL.createObjectURL(item.file) : null;
  const main = item.url
    ? el("img", { src: item.url, alt: `Photo ${item.file.name}` })
    : el("div", { class: "placeholder", "aria-hidden": "true", text: "?" });
  const card = el("li", { class: "card pending", id: `card-${item.id}` },
    el("figure", { class: "photo" }, main),
    el("div", { class: "body" },
      el("h3", { class: "name", text: item.file.name || "(unnamed)" }),
      el("p", { class: "state" }, el("span", { class: "spinner", "aria-hidden": "true" }),
        el("span", { class: "state-text", text: "Queued" }))));
  return card;
}

function setState(item, text) {
  const t = item.card.querySelector(".state-text");
  if (t) t.textContent = text;
}

function pump() {
  while (active < CONCURRENCY && waiting.length) {
    const item = waiting.shift();
    active += 1;
    score(item).finally(() => {
      active -= 1;
      item.done = true;
      updateProgress();
      renderGallery();
      pump();
    });
  }
}

async function score(item, attempt = 0) {
  if (item.file.size > limits.max_file_bytes) {
    const mb = (n) => (n / 1048576).toFixed(1);
    return fail(item, `too large: ${mb(item.file.size)} MB, the limit is ${mb(limits.max_file_bytes)} MB`);
  }
  setState(item, attempt ? `Scoring… (try ${attempt + 1})` : "Scoring…");
  const form = new FormData();
  form.append("files", item.file, item.file.name);
  let r;
  try {
    const whole = $("#score-map") && $("#score-map").checked ? "&score_map=true" : "";
    r = await fetch(`/v1/predict?maps=true${whole}`, { method: "POST", body: form });
  } catch (e) {
    return fail(item, `network error: ${e.message}`);
  }
  if (r.status === 503 && attempt < 5) {
    const wait = Number(r.headers.get("Retry-After")) || 2;
    setState(item, `Server busy, retrying in ${wait} s…`);
    await sleep(wait * 1000);
    return score(item, attempt + 1);
  }
  let body = null;
  try { body = await r.json(); } catch (e) { /* not JSON */ }
  if (!r.ok) return fail(item, (body && body.message) || `the server answered HTTP ${r.status}`);
  const res = body.results[0];
  if (res.error) return fail(item, res.error);
  item.result = res;
  renderScore(item);
}

function fail(item, message) {
  item.error = message;
  const notImage = /not an image|corrupt|empty file|cannot read/i.test(message);
  const card = item.card;
  card.classList.remove("pending");
  card.classList.add("bad");
  card.querySelector(".photo").replaceChildren(
    el("div", { class: "placeholder", "aria-hidden": "true", text: "!" }));
  card.querySelector(".state").replaceWith(
    el("div", { class: "problem", role: "alert" },
      el("p", { class: "problem-title", text: notImage ? "This file is not an image we can read" : "Not scored" }),
      el("p", { class: "problem-text", text: message })));
}

function renderScore(item) {
  const res = item.result;
  const card = item.card;
  card.classList.remove("pending");
  card.dataset.score = String(res.score);
  const pct = (gaugePos(res.score) * 100).toFixed(1);
  const gauge = el("div", {
    class: "gauge", role: "meter", "aria-label": "memorability",
    "aria-valuemin": "0", "aria-valuemax": "1", "aria-valuenow": fmt(res.score),
    "aria-valuetext": `${fmt(res.score)}, ${verdict(res.score)}`,
  }, el("div", { class: "fill" }), el("div", { class: "marker" }));
  gauge.firstChild.style.width = `${pct}%`; // CSSOM, not a style attribute: allowed by the CSP
  gauge.lastChild.style.left = `${pct}%`;
  const steps = el("div", { class: "steps", role: "group", "aria-label": "attention steps" });
  const photo = card.querySelector(".photo img");
  const views = [{ label: "Photo", sub: `${res.width}×${res.height}`, src: item.url, alt: `Photo ${item.file.name}` }];
  (res.maps || []).forEach((src, t) => views.push({
    label: `Step ${t + 1}`, sub: fmt(res.step_scores[t]), src,
    alt: `Attention at step ${t + 1} on ${item.file.name}, step score ${fmt(res.step_scores[t])}`,
  }));
  if (res.score_map_png) views.push({
    label: "Whole score", sub: "sensitivity", src: res.score_map_png,
    alt: `What the whole score depends on in ${item.file.name}: red raises it, blue lowers it`,
  });
  views.forEach((v, i) => {
    const b = el("button", { type: "button", class: "step", "aria-pressed": i === 0 ? "true" : "false" },
      el("img", { src: v.src, alt: "" }),
      el("span", { class: "step-label", text: v.label }), el("span", { class: "step-score", text: v.sub }));
    b.addEventListener("click", () => {
      photo.src = v.src;
      photo.alt = v.alt;
      steps.querySelectorAll(".step").forEach((s) => s.setAttribute("aria-pressed", String(s === b)));
    });
    steps.append(b);
  });
  card.querySelector(".state").replaceWith(el("div", { class: "scored" },
    el("p", { class: "score" }, el("span", { class: "score-value", text: fmt(res.score) }),
      el("span", { class: `verdict ${verdict(res.score)}`, text: verdict(res.score) })),
    gauge,
    el("div", { class: "gauge-ends", "aria-hidden": "true" },
      el("span", { text: `forgettable ${GAUGE_MIN.toFixed(1)}` }), el("span", { text: `${GAUGE_MAX.toFixed(1)} memorable` })),
    el("p", { class: "steps-title", text: res.score_map_png
      ? "Where the heads looked (attention), and what the whole score depends on"
      : "Where the model looked, step by step" }),
    steps));
}

function updateProgress() {
  const done = items.filter((i) => i.done).length;
  const bad = items.filter((i) => i.error).length;
  $("#bar").max = Math.max(1, items.length);
  $("#bar").value = done;
  const word = (n) => (n === 1 ? "photo" : "photos");
  let text = done < items.length
    ? `Scoring ${items.length} ${word(items.length)}: ${done} done…`
    : `Scored ${done - bad} of ${items.length} ${word(items.length)}.`;
  if (bad) text += ` ${bad} could not be scored.`;
  $("#status").textContent = text;
}

function scored() {
  return items.filter((i) => i.result).sort((a, b) => b.result.score - a.result.score);
}

function renderGallery() {
  const list = scored();
  $("#gallery-section").hidden = list.length < 2;
  $("#gallery").replaceChildren(...list.map((item, rank) => el("li", {},
    el("a", { href: `#card-${item.id}`, "aria-label": `Rank ${rank + 1}: ${item.file.name}, ${fmt(item.result.score)}` },
      el("img", { src: item.url, alt: "" }),
      el("span", { class: "rank", text: `${rank + 1}` }),
      el("span", { class: "g-score", text: fmt(item.result.score) }),
      el("span", { class: "g-name", text: item.file.name })))));
}

function csvCell(v) {
  const s = v === null || v === undefined ? "" : String(v);
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

function downloadCsv() {
  const steps = Math.max(0, ...items.map((i) => (i.result ? i.result.step_scores.length : 0)));
  const head = ["rank", "filename", "score", ...Array.from({ length: steps }, (_, t) => `step_${t + 1}`), "width", "height", "error"];
  const rows = scored().map((i, r) => [r + 1, i.file.name, i.result.score, ...i.result.step_scores, i.result.width, i.result.height, ""]);
  for (const i of items) if (i.error) rows.push(["", i.file.name, "", ...Array(steps).fill(""), "", "", i.error]);
  const text = [head, ...rows].map((row) => row.map(csvCell).join(",")).join("\n") + "\n";
  const a = el("a", { href: URL.createObjectURL(new Blob([text], { type: "text/csv" })), download: "memorability.csv" });
  document.body.append(a);
  a.click();
  a.remove();
}

function clearAll() {
  waiting.length = 0;
  for (const i of items) if (i.url) URL.revokeObjectURL(i.url);
  items.length = 0;
  $("#cards").replaceChildren();
  renderGallery();
  $("#progress").hidden = true;
  $("#pick").focus();
}

function init() {
  const input = $("#files");
  const drop = $("#drop");
  $("#pick").addEventListener("click", () => input.click());
  input.addEventListener("change", () => { addFiles(input.files); input.value = ""; });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    addFiles(e.dataTransfer.files);
  });
  document.addEventListener("paste", (e) => addFiles(e.clipboardData && e.clipboardData.files));
  $("#csv").addEventListener("click", downloadCsv);
  $("#clear").addEventListener("click", clearAll);
  loadModel();
}

init();
