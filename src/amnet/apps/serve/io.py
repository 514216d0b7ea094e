"""Uploads in, tensors and overlays out, for the HTTP service: decoding with the request-level
limits (raised as ApiError) and an ASGI middleware that caps the request body."""

import base64
import io
import json
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from amnet.inference.images import ImageError, load_image, to_tensor
from amnet.trunks.registry import Preprocess

if TYPE_CHECKING:
    from amnet.apps.serve.app import ServeConfig


class ApiError(Exception):
    """A request-level failure: answered as ``{"error": code, "message": message}``."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


@dataclass
class Decoded:
    tensor: Any  # (3, S, S)
    size: tuple[int, int]  # original (width, height)
    thumb: Image.Image | None  # for overlays


def decode(data: bytes, name: str, pp: Preprocess, cfg: "ServeConfig", maps: bool):
    """Upload bytes -> Decoded, or a one-line per-file error; raises ApiError for limits."""
    if len(data) > cfg.max_file_bytes:
        raise ApiError(413, "file_too_large", f"{name}: larger than {cfg.max_file_bytes:,} bytes")
    if not data:
        return "empty file (0 bytes)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
        w, h = img.size
    except UnidentifiedImageError:
        return "not an image: unrecognised or corrupt file format"
    except Image.DecompressionBombError:
        raise ApiError(
            413, "too_many_pixels", f"{name}: decompression bomb (PIL refuses it)"
        ) from None
    except Exception as e:  # noqa: BLE001 - any other decoder failure is this file's problem
        return f"not an image: {type(e).__name__}".splitlines()[0]
    if w * h > cfg.max_pixels:
        raise ApiError(
            413,
            "too_many_pixels",
            f"{name}: {w}x{h} pixels exceeds the limit of {cfg.max_pixels:,}",
        )
    try:
        rgb = load_image(
            img, max_pixels=cfg.max_pixels, draft_size=2 * pp.size if pp.draft else None
        )
        tensor = to_tensor(rgb, pp)  # (3, S, S)
    except ImageError as e:
        return str(e)
    except Exception as e:  # noqa: BLE001
        return f"cannot read image: {type(e).__name__}: {e}".splitlines()[0]
    size = rgb.info.get("original_size", rgb.size)
    if maps:
        rgb.thumbnail((cfg.map_size, cfg.map_size))  # in place: the full image is not needed
    return Decoded(tensor, size, rgb if maps else None)


def overlay_pngs(thumb: Image.Image, attention: np.ndarray) -> list[str]:
    """Per-step overlays (T, H, W) on the image, as ``data:image/png;base64,...`` URLs."""
    from amnet.apps.figures import attention_overlays

    out = []
    for im in attention_overlays(thumb, attention):
        buf = io.BytesIO()
        im.save(buf, "PNG")
        out.append("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode())
    return out


def signed_png(thumb: Image.Image, m: np.ndarray) -> str:
    """A whole-score map (h, w) on the image (red raises, blue lowers), as a data URL."""
    from amnet.apps.figures import signed_overlay

    buf = io.BytesIO()
    signed_overlay(thumb, m).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


class BodyLimit:
    """ASGI middleware: 413 for a body over ``limit`` bytes, by Content-Length or as it streams."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            return await self._reject(send)
        seen, over, started = 0, False, False

        async def limited_receive():
            nonlocal seen, over
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    over = True
                    return {"type": "http.disconnect"}
            return msg

        async def guarded_send(msg) -> None:
            nonlocal started
            if over and not started:
                return  # the app's answer to a cut-off body is replaced by the 413 below
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not over or started:
                raise
        if over and not started:
            await self._reject(send)

    async def _reject(self, send) -> None:
        body = json.dumps(
            {"error": "request_too_large", "message": f"request body over {self.limit:,} bytes"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": body})
