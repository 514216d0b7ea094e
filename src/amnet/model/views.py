"""Views of preprocessed images (B, 3, H, W): the image itself ("orig"), its mirror image
("flip") and crops ("crop0".."crop9": 7/8 of each side, anchored at a corner or the centre,
resized back to (H, W); crop4 is the centre crop and crop9 its mirror image).

Training augments with crops; at test time the heads average "orig" and "flip", and a kernel
prior averages its descriptor over the views it was fitted on (the shipped default: orig,
flip and the two centre crops)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

FLIP_VIEWS = ("orig", "flip")  # the views averaged at test time
CROP_SIDE = 0.875  # a crop view keeps 7/8 of each side of the preprocessed image
# where crop k sits in the slack (top, left) as fractions; crop k + 5 is crop k mirrored. The
# order spreads any first N crops over the image: top-left, bottom-right, top-right, ...
CROP_ANCHORS = ((0.0, 0.0), (1.0, 1.0), (0.0, 1.0), (1.0, 0.0), (0.5, 0.5))
CROP_VIEWS = tuple(f"crop{k}" for k in range(2 * len(CROP_ANCHORS)))
VIEWS = FLIP_VIEWS + CROP_VIEWS
HEAD_VIEWS = FLIP_VIEWS  # the views AMNet heads are averaged over (attention maps align)
# where views are made: of the image (a trunk pass each), or of the trunk's map (one pass)
VIEW_SPACES = ("image", "features")


def check_views(views, *, with_orig: bool = False) -> tuple[str, ...]:
    """``views`` as a tuple, or ValueError unless they are some of ``VIEWS`` (and include
    "orig" when ``with_orig``: test-time views always score the image itself)."""
    views = tuple(views)
    if not views or set(views) - set(VIEWS) or (with_orig and "orig" not in views):
        need = "include 'orig' and " if with_orig else ""
        raise ValueError(f"views must {need}be some of {VIEWS}, got {views}")
    return views


def crop_geometry(view: str) -> dict | None:
    """Where a crop view comes from (part of its cache key); None for "orig" and "flip"."""
    if view not in CROP_VIEWS:
        return None
    k = int(view.removeprefix("crop"))
    top, left = CROP_ANCHORS[k % len(CROP_ANCHORS)]
    return {"side": CROP_SIDE, "top": top, "left": left, "mirror": k >= len(CROP_ANCHORS),
            "resize": "bilinear, antialias"}  # fmt: skip


def apply_view(x: torch.Tensor, view: str) -> torch.Tensor:
    """One view of preprocessed images (B, 3, H, W) -> (B, 3, H, W): "orig" as it is, "flip"
    mirrored left-right, "cropK" a crop of ``CROP_SIDE`` of each side placed by
    ``CROP_ANCHORS[K % 5]`` in the slack, resized back to (H, W) (bilinear, antialiased) and
    mirrored for K >= 5."""
    if view == "orig":
        return x
    if view == "flip":
        return x.flip(-1)
    geo = crop_geometry(view)
    if geo is None:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    H, W = (int(n) for n in x.shape[-2:])  # int: constants in an exported graph (fixed size)
    h, w = round(H * CROP_SIDE), round(W * CROP_SIDE)
    top, left = round((H - h) * geo["top"]), round((W - w) * geo["left"])
    x = x[..., top : top + h, left : left + w]  # (B, 3, h, w)
    # a crop is enlarged: antialiasing changes nothing then (< 2e-7) and is left out, so
    # that ONNX (opset 17 has no antialiased resize) exports the same computation
    x = F.interpolate(x, size=(H, W), mode="bilinear", align_corners=False, antialias=h > H)
    return x.flip(-1) if geo["mirror"] else x  # (B, 3, H, W)
