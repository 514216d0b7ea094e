"""Reading images robustly and turning them into trunk input tensors (PIL + numpy only)."""

from __future__ import annotations

import os
import warnings
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from amnet.trunks.registry import Preprocess

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jfif"}
)
DEFAULT_MAX_PIXELS = 178_956_970  # PIL's own decompression-bomb error threshold
_RESAMPLE = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
             "lanczos": Image.LANCZOS, "box": Image.BOX}  # fmt: skip
# PIL filters that torch computes the same way (antialiased interpolation, in floating point)
TORCH_RESAMPLE = {"bilinear": "bilinear", "bicubic": "bicubic"}


class ImageError(ValueError):
    """An input that cannot be turned into an image; the message is one line for users."""


ImageLike = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor


def _open(path: Path) -> Image.Image:
    if not path.exists():
        raise ImageError("file not found")
    if path.is_dir():
        raise ImageError("is a directory, not an image file")
    try:
        if path.stat().st_size == 0:
            raise ImageError("empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except PermissionError:
        raise ImageError("permission denied: cannot read the file") from None
    except UnidentifiedImageError:
        raise ImageError("not an image: unrecognised or corrupt file format") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"image too large (decompression bomb?): {e}") from None
    except OSError as e:
        raise ImageError(f"cannot read file: {e.strerror or e}") from None


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB: 16/32-bit and float scaled, alpha composited on white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float32)
        hi = float(a.max()) if a.size else 0.0
        if img.mode == "F" and hi <= 1.0:
            a = a * 255.0
        elif hi > 255.0:
            a = a / (257.0 if hi <= 65535.0 else hi / 255.0)
        img = Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img)
    return img if img.mode == "RGB" else img.convert("RGB")


def load_image(
    source: ImageLike, *, max_pixels: int = DEFAULT_MAX_PIXELS, draft_size: int | None = None
) -> Image.Image:
    """Read an image from a path, PIL image, HxW(x3/4) uint8/float array or CHW tensor as RGB.

    EXIF orientation is applied; animated images give their first frame; ``draft_size`` lets
    the JPEG decoder shrink large images (never below ``draft_size`` on either side).
    Raises ImageError with a one-line reason for anything that is not a usable image."""
    if isinstance(source, torch.Tensor):
        t = source.detach().cpu()
        if t.ndim != 3 or t.shape[0] not in (1, 3):
            raise ImageError(f"tensor must be (3, H, W) or (1, H, W), got {tuple(t.shape)}")
        source = t.permute(1, 2, 0).numpy()
    if isinstance(source, np.ndarray):
        a = source
        if a.ndim == 3 and a.shape[2] == 1:
            a = a[:, :, 0]
        if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)) or 0 in a.shape:
            raise ImageError(f"array must be HxW, HxWx3 or HxWx4, got shape {a.shape}")
        if a.dtype != np.uint8:
            a = np.asarray(a, dtype=np.float32)
            if not np.isfinite(a).all():
                raise ImageError("array contains NaN or infinite values")
            a = np.clip(a * (255.0 if a.max() <= 1.0 else 1.0) + 0.5, 0, 255).astype(np.uint8)
        return _to_rgb(Image.fromarray(a))
    if isinstance(source, Image.Image):
        img = source
    elif isinstance(source, str | os.PathLike):
        img = _open(Path(source))
    else:
        raise ImageError(f"cannot read an image from {type(source).__name__}")
    w, h = img.size
    if w < 1 or h < 1:
        raise ImageError(f"image has no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise ImageError(
            f"image too large: {w}x{h} = {w * h:,} pixels exceeds the limit of {max_pixels:,}"
        )
    try:
        if draft_size and img.format == "JPEG" and min(w, h) > 2 * draft_size:
            img.draft("RGB", (draft_size, draft_size))
        img.load()
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)
        drafted = img.size
        img = ImageOps.exif_transpose(img) or img
        rotated = img.size != drafted
        out = _to_rgb(img)
        out.info["original_size"] = (h, w) if rotated else (w, h)  # before any draft shrink
        return out
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ImageError(f"corrupt or truncated image: {msg}") from None


def to_tensor(img: Image.Image, pp: Preprocess) -> torch.Tensor:
    """RGB PIL image -> normalised float tensor (3, size, size)."""
    img = img.resize((pp.size, pp.size), _RESAMPLE[pp.resample], reducing_gap=None)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)  # (3, S, S)
    mean = torch.tensor(pp.mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(pp.std, dtype=torch.float32).view(3, 1, 1)
    return (x - mean) / std


def resize_images(x: torch.Tensor, size: int, resample: str = "bilinear") -> torch.Tensor:
    """Images (B, C, H, W) -> (B, C, size, size) in torch, differentiably: the antialiased
    interpolation of PIL's filter ``resample`` (within 1e-5 of PIL on float images), without
    the 8-bit rounding of ``to_tensor``. Only "bilinear" and "bicubic" are available."""
    if resample not in TORCH_RESAMPLE:
        raise ValueError(f"no torch resize for {resample!r}; one of {sorted(TORCH_RESAMPLE)}")
    if tuple(x.shape[-2:]) == (size, size):
        return x
    mode = TORCH_RESAMPLE[resample]
    return F.interpolate(x, size=(size, size), mode=mode, align_corners=False, antialias=True)


def normalise(x: torch.Tensor, pp: Preprocess) -> torch.Tensor:
    """Images (..., 3, H, W) on the [0, 1] scale -> the trunk's normalised input."""
    mean = torch.tensor(pp.mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std = torch.tensor(pp.std, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x - mean) / std


def tensor_input(t: torch.Tensor, pp: Preprocess) -> torch.Tensor:
    """A (3, H, W) or (1, H, W) image tensor -> the trunk's input (3, S, S), resized in torch
    (``resize_images``: what ``Predictor.as_module`` computes). uint8 is divided by 255; float
    values are on the [0, 1] scale (or [0, 255] when the maximum is over 1, as for arrays),
    clipped to it."""
    t = t.detach().cpu()
    if t.ndim != 3 or t.shape[0] not in (1, 3) or 0 in t.shape:
        raise ImageError(f"tensor must be (3, H, W) or (1, H, W), got {tuple(t.shape)}")
    x = t.float()
    if not torch.isfinite(x).all():
        raise ImageError("tensor contains NaN or infinite values")
    if t.dtype == torch.uint8 or x.max() > 1.0:
        x = x / 255.0
    x = x.clamp(0.0, 1.0).expand(3, -1, -1)  # (3, H, W)
    return normalise(resize_images(x[None], pp.size, pp.resample)[0], pp)  # (3, S, S)


def prepare(source: ImageLike, pp: Preprocess, max_pixels: int = DEFAULT_MAX_PIXELS):
    """Load and preprocess one image: returns (tensor (3, S, S), (width, height)). Tensors are
    resized in torch (``tensor_input``), everything else by PIL (``to_tensor``)."""
    if isinstance(source, torch.Tensor) and pp.resample in TORCH_RESAMPLE:
        return tensor_input(source, pp), (int(source.shape[-1]), int(source.shape[-2]))
    img = load_image(source, max_pixels=max_pixels, draft_size=2 * pp.size if pp.draft else None)
    return to_tensor(img, pp), img.info.get("original_size", img.size)


@dataclass
class Loaded:
    """One input after decoding: ``tensor`` (3, S, S) and original ``size``, or an ``error``."""

    source: ImageLike
    tensor: torch.Tensor | None = None
    size: tuple[int, int] | None = None
    error: str | None = None


def _load_one(source: ImageLike, pp: Preprocess, max_pixels: int) -> Loaded:
    try:
        tensor, size = prepare(source, pp, max_pixels)
        return Loaded(source, tensor, size)
    except ImageError as e:
        return Loaded(source, error=str(e))
    except Exception as e:  # noqa: BLE001 - one bad input never stops the batch
        return Loaded(source, error=f"cannot read image: {type(e).__name__}: {e}".splitlines()[0])


def iter_images(
    sources: Iterable[ImageLike], pp: Preprocess, *, workers: int = 2, window: int = 64,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Iterator[Loaded]:  # fmt: skip
    """Decode and preprocess ``sources`` in ``workers`` threads (PIL releases the GIL), yielding
    in input order with at most ``window`` images in flight: memory is bounded for any number
    of inputs. Errors are yielded as ``Loaded(error=...)``, never raised."""
    if workers <= 0:
        for src in sources:
            yield _load_one(src, pp, max_pixels)
        return
    pool = ThreadPoolExecutor(workers, thread_name_prefix="amnet-decode")
    inflight: deque[Future] = deque()
    try:
        for src in sources:
            inflight.append(pool.submit(_load_one, src, pp, max_pixels))
            if len(inflight) >= window:
                yield inflight.popleft().result()
        while inflight:
            yield inflight.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def batched_images(loaded: Iterable[Loaded], batch_size: int) -> Iterator[list[Loaded]]:
    """Group a stream into lists holding ``batch_size`` decoded images (failed ones ride
    along in order without counting), so the model always sees full batches."""
    batch: list[Loaded] = []
    n_ok = 0
    for item in loaded:
        batch.append(item)
        n_ok += item.error is None
        if n_ok >= batch_size:
            yield batch
            batch, n_ok = [], 0
    if batch:
        yield batch
