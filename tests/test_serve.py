"""The HTTP API in-process (TestClient / httpx ASGI transport) on the tiny trunk."""

from __future__ import annotations

import asyncio
import base64
import io
import struct
import threading
import time
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import LNSIM
from fastapi.testclient import TestClient  # needs the serve extra: pip install -e '.[serve]'
from PIL import Image

import amnet
from amnet.apps.serve.app import ServeConfig, create_app
from amnet.cli.main import main

PHOTOS = sorted((LNSIM / "images").glob("*.jpg"))[:3]


@pytest.fixture
def predictor(tiny_checkpoint):
    return amnet.load(tiny_checkpoint, workers=0)


def client(predictor, **cfg) -> TestClient:
    return TestClient(create_app(predictor, ServeConfig(**cfg)))


def upload(*items: tuple[str, bytes]) -> list:
    return [("files", (name, data, "application/octet-stream")) for name, data in items]


def photo(i: int = 0) -> tuple[str, bytes]:
    return PHOTOS[i].name, PHOTOS[i].read_bytes()


def png_bytes(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def png_header_only(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h pixels (a decompression bomb's calling card)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b""))


def test_real_photos_exist():
    assert len(PHOTOS) == 3, f"expected LNSIM photos under {LNSIM}"


def test_page_health_models_and_docs(predictor):
    with client(predictor) as c:
        page = c.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert 'id="files"' in page.text and "/static/app.js" in page.text
        assert "Content-Security-Policy" in page.headers
        for f in ("app.js", "style.css"):
            assert c.get(f"/static/{f}").status_code == 200
        assert c.get("/healthz").json()["status"] == "ok"
        (m,) = c.get("/v1/models").json()
        assert m["trunk"] == "tiny-test" and m["steps"] == 3 and m["input_size"] == 224
        assert m["name"] == "tiny.safetensors"  # the file name, never the server's path
        assert m["limits"]["max_file_bytes"] == 20 * 2**20
        assert c.get("/docs").status_code == 200
        assert "/v1/predict" in c.get("/openapi.json").json()["paths"]


def test_predict_matches_library(predictor):
    with client(predictor) as c:
        r = c.post("/v1/predict", files=upload(photo(0)))
    assert r.status_code == 200
    body = r.json()
    assert body["model"] == "tiny.safetensors"
    (res,) = body["results"]
    want = predictor.predict(PHOTOS[0])
    assert res["error"] is None and res["filename"] == PHOTOS[0].name
    assert res["score"] == pytest.approx(want.score, abs=1e-6)
    assert res["step_scores"] == pytest.approx(list(want.step_scores), abs=1e-6)
    att = np.array(res["attention"])
    assert att.shape == (3, 14, 14)
    np.testing.assert_allclose(att.sum(axis=(1, 2)), 1.0, atol=1e-4)
    assert (res["width"], res["height"]) == Image.open(PHOTOS[0]).size
    assert res["maps"] is None


def test_several_files_one_bad_in_upload_order(predictor):
    files = upload(photo(0), ("notes.txt", b"certainly not an image"), ("empty.jpg", b""), photo(1))
    with client(predictor) as c:
        r = c.post("/v1/predict", files=files)
    assert r.status_code == 200
    res = r.json()["results"]
    assert [x["filename"] for x in res] == [
        PHOTOS[0].name,
        "notes.txt",
        "empty.jpg",
        PHOTOS[1].name,
    ]
    assert res[1]["score"] is None and "not an image" in res[1]["error"]
    assert "empty" in res[2]["error"]
    for i, k in ((0, 0), (3, 1)):
        assert res[i]["error"] is None
        assert res[i]["score"] == pytest.approx(predictor.predict(PHOTOS[k]).score, abs=1e-6)


def test_maps_are_png_overlays(predictor):
    with client(predictor, map_size=64) as c:
        r = c.post("/v1/predict?maps=true", files=upload(photo(0)))
    (res,) = r.json()["results"]
    assert len(res["maps"]) == 3
    for url in res["maps"]:
        head, data = url.split(",", 1)
        assert head == "data:image/png;base64"
        im = Image.open(io.BytesIO(base64.b64decode(data)))
        assert im.format == "PNG" and max(im.size) == 64
    a, b = (
        np.asarray(Image.open(io.BytesIO(base64.b64decode(u.split(",")[1]))))
        for u in res["maps"][:2]
    )
    assert a.std() > 0  # a picture, not a blank


def error_of(r: httpx.Response, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["error"] == code and body["message"]
    return body["message"]


def test_file_too_large(predictor):
    with client(predictor, max_file_bytes=1000) as c:
        r = c.post("/v1/predict", files=upload(("big.png", png_bytes(200, 200) + b"\0" * 2000)))
    assert "big.png" in error_of(r, 413, "file_too_large")


def test_request_too_large_by_length_and_by_stream(predictor):
    with client(predictor, max_file_bytes=1000, max_request_bytes=5000) as c:
        r = c.post("/v1/predict", files=upload(("a.bin", b"x" * 6000)))
        error_of(r, 413, "request_too_large")

        def chunks():  # no Content-Length: the limit is counted as the body arrives
            for _ in range(10):
                yield b"y" * 1000

        r = c.post("/v1/predict", content=chunks(),
                   headers={"content-type": "multipart/form-data; boundary=zz"})  # fmt: skip
        error_of(r, 413, "request_too_large")
        assert c.get("/healthz").status_code == 200  # the server is fine afterwards


def test_too_many_files(predictor):
    with client(predictor, max_files=2) as c:
        r = c.post("/v1/predict", files=upload(photo(0), photo(1), photo(2)))
    assert "at most 2" in error_of(r, 422, "too_many_files")


def test_pixel_limit_and_decompression_bomb(predictor):
    with client(predictor, max_pixels=50 * 50) as c:
        r = c.post("/v1/predict", files=upload(("ok.png", png_bytes(40, 40))))
        assert r.status_code == 200 and r.json()["results"][0]["error"] is None
        r = c.post("/v1/predict", files=upload(("wide.png", png_bytes(60, 50))))
        assert "60x50" in error_of(r, 413, "too_many_pixels")
    with client(predictor) as c:  # default limit: the header alone is enough to refuse it
        r = c.post("/v1/predict", files=upload(("bomb.png", png_header_only(12_000, 12_000))))
        assert "12000x12000" in error_of(r, 413, "too_many_pixels")
        r = c.post("/v1/predict", files=upload(("bomb2.png", png_header_only(60_000, 60_000))))
        error_of(r, 413, "too_many_pixels")


class SlowModel:
    """Wraps predict_tensors: signals when the model thread enters, waits for release."""

    def __init__(self, predictor, hold_s: float | None = None) -> None:
        self.inner, self.hold_s = predictor.predict_tensors, hold_s
        self.entered, self.release = threading.Event(), threading.Event()
        predictor.predict_tensors = self

    def __call__(self, x):
        self.entered.set()
        if self.hold_s is not None:
            time.sleep(self.hold_s)
        else:
            self.release.wait(30)
        return self.inner(x)


async def wait_for(event: threading.Event, limit_s: float = 10.0) -> None:
    t0 = time.monotonic()
    while not event.is_set():
        assert time.monotonic() - t0 < limit_s, "the model thread was never entered"
        await asyncio.sleep(0.01)


def asgi_client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def test_queue_full_is_503_with_retry_after(predictor):
    slow = SlowModel(predictor)
    app = create_app(predictor, ServeConfig(max_queue=2, retry_after_s=7))

    async def scenario():
        async with asgi_client(app) as c:
            first = asyncio.create_task(c.post("/v1/predict", files=upload(photo(0), photo(1))))
            await wait_for(slow.entered)  # two images admitted, the model is busy with them
            busy = await c.post("/v1/predict", files=upload(photo(2)))
            health = await c.get("/healthz")
            slow.release.set()
            return busy, health, await first

    busy, health, first = asyncio.run(scenario())
    assert "queue is full" in error_of(busy, 503, "busy")
    assert busy.headers["retry-after"] == "7"
    assert health.json()["queued"] == 2
    assert first.status_code == 200 and all(x["error"] is None for x in first.json()["results"])


def test_timeout_is_504(predictor):
    SlowModel(predictor, hold_s=1.0)
    with client(predictor, timeout_s=0.2) as c:
        r = c.post("/v1/predict", files=upload(photo(0)))
        error_of(r, 504, "timeout")
        assert c.get("/healthz").json()["queued"] == 0  # the admission was given back


def test_requests_arriving_together_share_a_batch(predictor):
    app = create_app(predictor, ServeConfig(max_batch=4, batch_wait_ms=3000))

    async def scenario():
        async with asgi_client(app) as c:
            posts = [c.post("/v1/predict", files=upload(photo(i % 3))) for i in range(4)]
            rs = await asyncio.gather(*posts)
            return rs, (await c.get("/healthz")).json()

    rs, health = asyncio.run(scenario())
    assert all(r.status_code == 200 for r in rs)
    assert health["batches"] == 1 and health["images"] == 4 and health["largest_batch"] == 4
    scores = [r.json()["results"][0]["score"] for r in rs]
    assert scores[0] == pytest.approx(scores[3], abs=1e-6)  # same photo, same score in a batch
    assert scores[0] == pytest.approx(predictor.predict(PHOTOS[0]).score, abs=1e-5)


def test_config_is_validated():
    with pytest.raises(ValueError, match="max_files"):
        ServeConfig(max_files=0)
    with pytest.raises(ValueError, match="max_request_bytes"):
        ServeConfig(max_file_bytes=10, max_request_bytes=5)


def test_cli_serve_help_and_bad_model(capsys, tmp_path: Path):
    assert main(["serve", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--max-file-bytes" in out and "20971520" in out and "--workers" in out
    assert main(["serve", "--model", str(tmp_path / "missing.safetensors")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["serve", "--max-files", "0", "--model", "x.safetensors"]) == 2


def test_score_map_is_the_whole_scores_sensitivity_and_only_when_asked(predictor):
    from amnet.inference.maps import file_score_map

    with client(predictor, map_size=64) as c:
        plain = c.post("/v1/predict?maps=true", files=upload(photo(0))).json()["results"][0]
        r = c.post("/v1/predict?maps=true&score_map=true", files=upload(photo(0)))
        only = c.post("/v1/predict?score_map=true", files=upload(photo(0))).json()["results"][0]
    (res,) = r.json()["results"]
    assert plain["score_map"] is None and plain["score_map_png"] is None
    m = np.array(res["score_map"])
    assert m.shape == (14, 14) and np.isfinite(m).all() and np.abs(m).max() > 0
    want = file_score_map(predictor.as_module(), PHOTOS[0])  # the same input as predict's
    np.testing.assert_allclose(m, want, rtol=1e-4, atol=1e-7)
    head, data = res["score_map_png"].split(",", 1)
    im = Image.open(io.BytesIO(base64.b64decode(data)))
    assert head == "data:image/png;base64" and max(im.size) == 64
    assert only["score_map"] == res["score_map"] and only["score_map_png"] is None
    assert res["score"] == pytest.approx(plain["score"], abs=1e-6)
