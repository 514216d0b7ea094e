"""Feature cache: the frozen trunk runs once per image and view, never once per epoch.

Entries are keyed on everything that changes the features — trunk name, weights sha256, cut
point, preprocessing, view (and a crop view's geometry) and the cache format version (the
folder) — and on the image's content (sha1 of the file bytes, the file name inside it). Each
entry is one float16 ``.npy`` file, written atomically, so a killed build resumes where it
stopped; reads are memory-mapped.

Views of the preprocessed image (``amnet.model.views``): "orig"; "flip", its mirror image;
"crop0".."crop9", crops of 7/8 of each side anchored at a corner or the centre and resized
back to the input size (training augmentation; the centre crops are also test-time views of
the kernel prior).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from amnet import fileio as hub
from amnet.inference.images import batched_images, iter_images
from amnet.model.views import CROP_VIEWS, FLIP_VIEWS, VIEWS, apply_view, check_views, crop_geometry
from amnet.training.data import Record
from amnet.trunks.registry import Preprocess, Trunk, create_trunk, get_trunk_spec, resolve_weights

__all__ = ["CROP_VIEWS", "FLIP_VIEWS", "VIEWS", "apply_view", "crop_geometry"]  # re-exported

CACHE_VERSION = 1
_CONTENT: dict[tuple[str, int, int], str] = {}


def content_hash(path: str | os.PathLike) -> str:
    """sha1 of a file's bytes, memoised on (path, size, mtime)."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _CONTENT:
        _CONTENT[key] = hashlib.sha1(Path(path).read_bytes()).hexdigest()
    return _CONTENT[key]


def trunk_identity(trunk: Trunk) -> str:
    """The sha256 of a registered trunk's weights, or a digest of its tensors otherwise."""
    spec = get_trunk_spec(trunk.name)
    if spec.weights is not None:
        return hub.sha256_file(resolve_weights(spec))
    h = hashlib.sha256()
    for k, v in trunk.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@torch.inference_mode()
def extract(
    trunk: Trunk, pp: Preprocess, paths: Sequence[str | os.PathLike], *, view: str = "orig",
    batch_size: int = 16, workers: int = 2, progress: bool | None = None,
) -> Iterator[tuple[str | os.PathLike, np.ndarray | None, str | None]]:  # fmt: skip
    """Run the trunk over ``paths``: yields (path, float16 features (C, H, W), None) or
    (path, None, error message), in order, with bounded memory."""
    show = sys.stderr.isatty() if progress is None else progress
    bar = None
    if show and paths:
        from tqdm import tqdm

        bar = tqdm(total=len(paths), desc=f"features {trunk.name}/{view}", unit="img",
                   file=sys.stderr)  # fmt: skip
    loaded = iter_images(paths, pp, workers=workers, window=2 * batch_size)
    for batch in batched_images(loaded, batch_size):
        ok = [item for item in batch if item.error is None]
        feats = iter(())
        if ok:
            x = apply_view(torch.stack([i.tensor for i in ok]), view)  # (B, 3, S, S)
            feats = iter(trunk(x).to(torch.float16).numpy())  # (B, C, H, W)
        for item in batch:
            if item.error is None:
                yield item.source, next(feats), None
            else:
                yield item.source, None, item.error
        if bar:
            bar.update(len(batch))
    if bar:
        bar.close()


class FeatureCache:
    """Trunk feature maps (C, H, W) float16 for one trunk, preprocessing and view."""

    def __init__(
        self, trunk: Trunk, preprocess: Preprocess, *, view: str = "orig",
        root: str | os.PathLike | None = None,
    ) -> None:  # fmt: skip
        if view not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
        self.trunk, self.preprocess, self.view = trunk, preprocess, view
        self.key = {
            "version": CACHE_VERSION,
            "trunk": trunk.name,
            "weights_sha256": trunk_identity(trunk),
            "stop": trunk.stop,
            "preprocess": preprocess.to_dict(),
            "view": view,
        }
        if view in CROP_VIEWS:  # orig and flip keep the key they always had
            self.key["crop"] = crop_geometry(view)
        digest = hashlib.sha256(json.dumps(self.key, sort_keys=True).encode()).hexdigest()[:16]
        self.dir = Path(root or hub.cache_dir() / "features") / f"{trunk.name}-{view}-{digest}"
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "key.json"
        if not meta.exists():
            with hub.atomic_write(meta, "w") as f:
                json.dump(self.key, f, indent=1)

    def entry(self, path: str | os.PathLike) -> Path:
        h = content_hash(path)
        return self.dir / h[:2] / f"{h}.npy"

    def missing(self, paths: Sequence[str | os.PathLike]) -> list[str | os.PathLike]:
        return [p for p in paths if not self.entry(p).exists()]

    def build(
        self, paths: Sequence[str | os.PathLike], *, batch_size: int = 16, workers: int = 2,
        progress: bool | None = None,
    ) -> dict[str, str]:  # fmt: skip
        """Compute the features of every path not cached yet. Returns {path: error} for
        images that could not be read (they are not cached and are reported, not raised)."""
        errors: dict[str, str] = {}
        todo = self.missing(paths)
        for path, feat, error in extract(self.trunk, self.preprocess, todo, view=self.view,
                                         batch_size=batch_size, workers=workers,
                                         progress=progress):  # fmt: skip
            if error is not None:
                errors[os.fspath(path)] = error
                continue
            with hub.atomic_write(self.entry(path)) as fh:
                np.save(fh, feat)
        return errors

    def load(self, paths: Sequence[str | os.PathLike]) -> np.ndarray:
        """Stack cached features of ``paths``: (N, C, H, W) float16. Raises KeyError for a
        path that is not cached (build first)."""
        arrays = []
        for p in paths:
            e = self.entry(p)
            if not e.exists():
                raise KeyError(f"{p} is not in the feature cache {self.dir}; build it first")
            arrays.append(np.load(e, mmap_mode="r"))
        return np.stack(arrays) if arrays else np.zeros((0,), np.float16)


@dataclass
class FeatureSet:
    """Cached trunk features of N images: one (N, C, H, W) array per view, and targets in
    [0, 1]. The first ``n_test_views`` views are the test-time views (view 0 the original image,
    view 1 if present its mirror image); views after them (crops) are for training only."""

    views: list[np.ndarray]
    targets: np.ndarray
    ids: list[str] = field(default_factory=list)
    n_test_views: int | None = None  # None: every view is a test-time view

    def __post_init__(self) -> None:
        n = len(self.targets)
        if not self.views or any(len(v) != n for v in self.views):
            raise ValueError("every view must hold one feature map per target")
        if self.n_test_views is None:
            self.n_test_views = len(self.views)
        if not 1 <= self.n_test_views <= len(self.views):
            raise ValueError(
                f"n_test_views must be in 1..{len(self.views)}, got {self.n_test_views}"
            )

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, idx: np.ndarray) -> FeatureSet:
        ids = [self.ids[i] for i in idx] if self.ids else []
        return FeatureSet([v[idx] for v in self.views], self.targets[idx], ids, self.n_test_views)

    def test_views(self) -> FeatureSet:
        """The same images with the test-time views only (no crops)."""
        return FeatureSet(
            self.views[: self.n_test_views], self.targets, self.ids, self.n_test_views
        )


class FeatureStore:
    """The features of a set of images for every view, in memory, indexed by path: "orig",
    "flip" (with ``flip``), then "crop0".."crop{crops-1}" (or exactly ``views``, all of them
    test-time views). With ``cache=True`` they come from (and missing ones go to) the on-disk
    FeatureCache; with ``cache=False`` the trunk runs directly — the results are identical."""

    def __init__(
        self, trunk_name: str, paths: Sequence[str | os.PathLike], *, flip: bool = True,
        crops: int = 0, cache: bool = True, root: str | os.PathLike | None = None, log=print,
        batch_size: int = 16, workers: int = 2, views: Sequence[str] | None = None,
    ) -> None:  # fmt: skip
        if not 0 <= crops <= len(CROP_VIEWS):
            raise ValueError(f"crops must be in 0..{len(CROP_VIEWS)}, got {crops}")
        if views is not None:
            check_views(views)
        trunk = create_trunk(trunk_name)
        pp = get_trunk_spec(trunk_name).preprocess
        self.names = FLIP_VIEWS[: 2 if flip else 1] + CROP_VIEWS[:crops]
        self.n_test_views = 2 if flip else 1
        if views is not None:  # exactly these views, all of them test-time views
            self.names, self.n_test_views = tuple(views), len(views)
        self.views: list[np.ndarray] = []
        self.errors: dict[str, str] = {}
        self.seconds_building = 0.0
        for view in self.names:
            t0 = time.time()
            if cache:
                fc = FeatureCache(trunk, pp, view=view, root=root)
                n_missing = len(fc.missing(paths))
                self.errors.update(fc.build(paths, batch_size=batch_size, workers=workers))
                good = [p for p in paths if os.fspath(p) not in self.errors]
                self.views.append(fc.load(good))
                where = f"{len(paths) - n_missing} cached, {n_missing} computed ({fc.dir})"
            else:
                feats = []
                for p, f, err in extract(trunk, pp, paths, view=view, batch_size=batch_size,
                                         workers=workers):  # fmt: skip
                    if err is None:
                        feats.append(f)
                    else:
                        self.errors[os.fspath(p)] = err
                good = [p for p in paths if os.fspath(p) not in self.errors]
                self.views.append(np.stack(feats) if feats else np.zeros((0,), np.float16))
                where = f"{len(good)} computed without cache"
            self.seconds_building += time.time() - t0
            log(f"features {view}: {where} in {time.time() - t0:.0f}s")
        self.index = {os.fspath(p): i for i, p in enumerate(good)}

    def featureset(self, records: Sequence[Record]) -> FeatureSet:
        """Features and scores of ``records``; unreadable images are left out."""
        keep = [r for r in records if os.fspath(r.path) in self.index]
        idx = np.array([self.index[os.fspath(r.path)] for r in keep], dtype=np.int64)
        targets = np.array([r.score for r in keep], dtype=np.float64)
        ids = [r.image_id for r in keep]
        return FeatureSet([v[idx] for v in self.views], targets, ids, self.n_test_views)
