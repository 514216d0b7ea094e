"""The kernel prior's descriptors of many images, from the feature cache: the trunk's cached maps
described (``amnet.model.prior.Descriptor``) and averaged over views, made of the image (a cached
map per view) or of the map (``space="features"``: one cached map, its views made from it, as
``AMNet`` does at inference); a second trunk's blocks; a base model's scores (ResMem's head)."""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from amnet.builders import build_descriptor
from amnet.model.prior import EXTRA_BLOCKS
from amnet.model.views import FLIP_VIEWS, apply_view
from amnet.training.cache import FeatureSet, FeatureStore


@torch.inference_mode()
def describe_views(describe: nn.Module, data: FeatureSet | list[np.ndarray], *,
                   views: bool = True, batch: int = 64) -> np.ndarray:  # fmt: skip
    """Descriptors (N, D) of cached maps, averaged over the test-time views when ``views``
    (as ``AMNetEnsemble.forward_views`` averages them), else of the original view."""
    maps = data if isinstance(data, list) else data.views[: data.n_test_views]
    out = []
    for v in maps if views else maps[:1]:
        parts = [describe(torch.from_numpy(np.asarray(v[i : i + batch], np.float32))).numpy()
                 for i in range(0, len(v), batch)]  # fmt: skip
        out.append(np.concatenate(parts))
    return np.mean(out, axis=0)


def block_sizes(describe: nn.Module, channels: int, size: int = 14) -> list[int]:
    """The width of each block of ``describe`` (a trunk map of ``channels`` x size x size)."""
    with torch.inference_mode():
        return [p.shape[1] for p in describe.parts(torch.rand(1, channels, size, size))]


def kernel_features(describe: nn.Module, views: list[np.ndarray]) -> tuple[np.ndarray, list[int]]:
    """Descriptors (N, D) of cached maps averaged over ``views``, and each block's width: the
    inputs of ``fit_kernel_prior``."""
    X = describe_views(describe, views)
    return X, block_sizes(describe, views[0].shape[1], views[0].shape[-1])


def store_views(
    trunk: str,
    paths: list[str],
    views: tuple[str, ...],
    *,
    have: FeatureStore | None = None,
    root=None,
    log=print,
) -> list[np.ndarray]:
    """The cached maps of ``trunk`` for ``paths`` (in this order), one array per view of
    ``views``; views already in ``have`` (a store of the same trunk that holds every path)
    are taken from it."""
    got = {}
    if have is not None and all(os.fspath(p) in have.index for p in paths):
        got = {v: (have, a) for v, a in zip(have.names, have.views, strict=False)}
    need = tuple(v for v in views if v not in got)
    if need:
        store = FeatureStore(trunk, sorted(set(paths)), views=need, root=root, log=log)
        got.update({v: (store, a) for v, a in zip(store.names, store.views, strict=True)})
    out = []
    for v in views:
        store, a = got[v]
        missing = [p for p in paths if os.fspath(p) not in store.index]
        if missing:
            raise ValueError(f"{len(missing)} images unreadable for {trunk!r}: {missing[:3]}")
        out.append(a[[store.index[os.fspath(p)] for p in paths]])
    return out


def extra_kernel_features(
    trunk: str, paths: list[str], views: tuple[str, ...] = FLIP_VIEWS, *, root=None, log=print
) -> tuple[np.ndarray, list[int]]:
    """A second trunk's descriptors (N, D2) of the images ``paths`` (in this order; its
    ``EXTRA_BLOCKS``, from its cached maps, averaged over ``views``) and each block's width:
    the columns an ``extra`` descriptor appends to ``kernel_features``'."""
    maps = store_views(trunk, paths, views, root=root, log=log)
    return kernel_features(build_descriptor(trunk, EXTRA_BLOCKS), maps)


def prior_features(
    describe: nn.Module, trunk: str, paths: list[str], views: tuple[str, ...], *,
    have: FeatureStore | None = None, extra_trunk: str | None = None, root=None, log=print,
    space: str = "image", extra_views: tuple[str, ...] | None = None,
) -> tuple[np.ndarray, list[int]]:  # fmt: skip
    """What ``fit_kernel_prior`` takes for the images ``paths`` (in this order): ``describe``
    of ``trunk``'s cached maps averaged over ``views`` (made of the image, or of the map with
    ``space="features"``) and, with ``extra_trunk``, that trunk's descriptors (averaged over
    ``extra_views``, default ``views``) appended (N, D); and each block's width."""
    if space == "features":
        if extra_trunk:
            raise ValueError("a second trunk sees the images: views must be made of the image")
        (maps,) = store_views(trunk, paths, ("orig",), have=have, root=root, log=log)
        X = map_view_features(describe, maps, views)[0]
        return X, block_sizes(describe, maps.shape[1], maps.shape[-1])
    maps = store_views(trunk, paths, views, have=have, root=root, log=log)
    X, sizes = kernel_features(describe, maps)
    if extra_trunk:
        X2, sizes2 = extra_kernel_features(extra_trunk, paths, extra_views or views, root=root,
                                           log=log)  # fmt: skip
        X, sizes = np.hstack([X, X2]), sizes + sizes2
    return X, sizes


@torch.inference_mode()
def map_view_features(
    describe: nn.Module, maps: np.ndarray, views: tuple[str, ...], batch: int = 64
) -> tuple[np.ndarray, np.ndarray | None]:
    """Descriptors (N, D) of cached maps (N, C, H, W), averaged over ``views`` made of each map
    (``apply_view``, as ``AMNet(space="features")``), and the tail's logits of the map itself
    (N, K) when the descriptor runs a tail (else None)."""
    X, logits = [], []
    for i in range(0, len(maps), batch):
        m = torch.from_numpy(np.asarray(maps[i : i + batch], np.float32))  # (b, C, H, W)
        per_view = []
        for v in views:
            if v == "orig" and getattr(describe, "tail", None) is not None:
                d, lg = describe.forward_with_logits(m)
                logits.append(lg.numpy())
            else:
                d = describe(apply_view(m, v))
            per_view.append(d.numpy())
        X.append(np.mean(per_view, axis=0))
    return np.concatenate(X), (np.concatenate(logits) if logits else None)


@torch.inference_mode()
def base_scores(
    base: nn.Module, paths: list[str], logits: np.ndarray, preprocess, batch: int = 32,
    workers: int = 2,
) -> np.ndarray:  # fmt: skip
    """A base model's scores (N,) of the images ``paths`` (decoded as the trunk's
    ``preprocess`` says) and their ImageNet logits (N, K) from the trunk's tail."""
    from amnet.inference.images import batched_images, iter_images

    out, i = [], 0
    for items in batched_images(iter_images(paths, preprocess, workers=workers), batch):
        bad = [it.source for it in items if it.error is not None]
        if bad:
            raise ValueError(f"{len(bad)} images unreadable: {bad[:3]}")
        x = torch.stack([it.tensor for it in items])  # (b, 3, S, S)
        lg = torch.from_numpy(np.asarray(logits[i : i + len(items)], np.float32))
        out.append(base(x, lg).double().numpy())
        i += len(items)
    return np.concatenate(out)
