"""Priors fitted in closed form, blended with AMNet heads: ridge regression on globally pooled
trunk features (``LinearPrior``) and kernel ridge on a richer descriptor (``KernelPrior``),
each with its penalty chosen by exact leave-one-out (one decomposition, no refits)."""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from .cache import FeatureSet, FeatureStore
from .describe import EXTRA_BLOCKS, build_descriptor
from .metrics import spearman
from .model import KERNELS, KernelPrior, LinearPrior
from .views import TTA_VIEWS

ALPHAS = 10.0 ** np.arange(-1, 6.5, 0.25)  # penalties tried, on standardised features


def pooled(data: FeatureSet, batch: int = 256, *, tta: bool = True) -> np.ndarray:
    """Globally pooled features (N, C), averaged over the test-time views (no crops) when
    ``tta``, else of the original view alone."""
    views = []
    for v in data.views[: data.n_tta if tta else 1]:
        parts = [np.asarray(v[i : i + batch], np.float32).mean((2, 3)) for i in
                 range(0, len(v), batch)]  # fmt: skip
        views.append(np.concatenate(parts))
    return np.mean(views, axis=0)


def ridge_loo(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float, float, float]:
    """Ridge on standardised X (N, C) -> y (N,), the penalty chosen by leave-one-out Spearman
    rho on (X, y) itself. Returns (weight (C,), bias, alpha, leave-one-out rho), with weight
    and bias on the original (unstandardised) features."""
    mu, sd, ym = X.mean(0), X.std(0) + 1e-6, float(y.mean())
    U, s, Vt = np.linalg.svd((X - mu) / sd, full_matrices=False)
    Uy = U.T @ (y - ym)
    best = (-np.inf, 0.0, None)
    for a in ALPHAS:
        d = s**2 / (s**2 + a)
        fitted = U @ (d * Uy) + ym
        h = (U**2) @ d + 1.0 / len(y)  # leverages, intercept included
        rho = spearman(y - (y - fitted) / (1.0 - h), y)  # leave-one-out predictions
        if rho > best[0]:
            best = (rho, a, Vt.T @ (s / (s**2 + a) * Uy))
    rho, alpha, w = best
    weight = w / sd
    return weight, ym - float(mu @ weight), float(alpha), float(rho)


def fit_prior(*parts: FeatureSet) -> tuple[LinearPrior, float]:
    """A ``LinearPrior`` fitted on all of ``parts`` (e.g. train and validation: leave-one-out
    needs no held-out part). Returns (prior, leave-one-out rho)."""
    X = np.concatenate([pooled(p) for p in parts])
    y = np.concatenate([p.targets for p in parts])
    weight, bias, _, rho = ridge_loo(X, y)
    prior = LinearPrior(X.shape[1])
    prior.weight.copy_(torch.from_numpy(weight).float())
    prior.bias.fill_(bias)
    return prior.eval(), rho


def predict_prior(prior: LinearPrior, data: FeatureSet, *, tta: bool = True) -> np.ndarray:
    """The prior's scores (N,) on the averaged pooled features of the test-time views (when
    ``tta``, as ``predict_features``) or of the original view."""
    return prior.score(torch.from_numpy(pooled(data, tta=tta))).double().numpy()


# --- kernel prior: kernel ridge on a richer descriptor (amnet.describe) -------------------

KERNEL_ALPHAS = 10.0 ** np.arange(-3, 4.01, 0.25)  # penalties tried, x the mean eigenvalue
GAMMA = 1.0  # width: exp(-GAMMA * d / median d between training images); d = |z - s|^2 (rbf)
# or |z - s| (laplace)


@torch.inference_mode()
def describe_views(describe: nn.Module, data: FeatureSet | list[np.ndarray], *,
                   tta: bool = True, batch: int = 64) -> np.ndarray:  # fmt: skip
    """Descriptors (N, D) of cached maps, averaged over the test-time views when ``tta``
    (as ``AMNetEnsemble.forward_views`` averages them), else of the original view."""
    views = data if isinstance(data, list) else data.views[: data.n_tta]
    views = views if tta else views[:1]
    out = []
    for v in views:
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
    ``views``; views already in ``have`` (a store of the same trunk) are taken from it."""
    got = {}
    if have is not None:
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
    trunk: str, paths: list[str], views: tuple[str, ...] = TTA_VIEWS, *, root=None, log=print
) -> tuple[np.ndarray, list[int]]:
    """A second trunk's descriptors (N, D2) of the images ``paths`` (in this order; its
    ``EXTRA_BLOCKS``, from its cached maps, averaged over ``views``) and each block's width:
    the columns an ``extra`` descriptor appends to ``kernel_features``'."""
    maps = store_views(trunk, paths, views, root=root, log=log)
    return kernel_features(build_descriptor(trunk, EXTRA_BLOCKS), maps)


def prior_features(
    describe: nn.Module, trunk: str, paths: list[str], views: tuple[str, ...], *,
    have: FeatureStore | None = None, extra_trunk: str | None = None, root=None, log=print,
) -> tuple[np.ndarray, list[int]]:  # fmt: skip
    """What ``fit_kernel_prior`` takes for the images ``paths`` (in this order): ``describe``
    of ``trunk``'s cached maps averaged over ``views`` and, with ``extra_trunk``, that trunk's
    descriptors appended (N, D); and each block's width."""
    maps = store_views(trunk, paths, views, have=have, root=root, log=log)
    X, sizes = kernel_features(describe, maps)
    if extra_trunk:
        X2, sizes2 = extra_kernel_features(extra_trunk, paths, views, root=root, log=log)
        X, sizes = np.hstack([X, X2]), sizes + sizes2
    return X, sizes


def fit_kernel_prior(
    describe: nn.Module,
    X: np.ndarray,
    y: np.ndarray,
    sizes: list[int],
    kernel: str = "rbf",
    extra: nn.Module | None = None,
    views: tuple[str, ...] = TTA_VIEWS,
) -> tuple[KernelPrior, float]:
    """Kernel ridge on descriptors X (N, D) -> y (N,): each block standardised (sd floored
    at a tenth of the block's mean sd) and weighted by 1/sqrt(its width) so every block
    counts alike, an RBF or Laplacian ``kernel`` with the median heuristic, and the penalty
    chosen by exact leave-one-out Spearman rho on (X, y). With ``extra`` (an
    ``ImageDescriptor``) X's last columns are its descriptors; ``views``: the test-time views
    X's rows were averaged over (the prior averages the same ones when it scores). Returns
    (prior, leave-one-out rho)."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    X = np.asarray(X, np.float64)
    mu, sd = X.mean(0), X.std(0)
    edges = np.cumsum([0, *sizes])
    if edges[-1] != X.shape[1]:
        raise ValueError(f"block sizes {sizes} do not add up to {X.shape[1]} columns")
    scale = np.empty_like(sd)
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        scale[a:b] = 1.0 / ((np.maximum(sd[a:b], 0.1 * sd[a:b].mean()) + 1e-6) * np.sqrt(b - a))
    Z = (X - mu) * scale  # (N, D)
    sq = (Z * Z).sum(1)
    D = np.maximum(sq[:, None] + sq[None] - 2.0 * Z @ Z.T, 0.0)  # (N, N) squared distances
    if kernel == "laplace":
        D = np.sqrt(D)
    gamma = GAMMA / float(np.median(D))
    lam, Q = np.linalg.eigh(np.exp(-gamma * D))
    lam = np.clip(lam, 0.0, None)
    ym = float(y.mean())
    Qy = Q.T @ (y - ym)
    best = (-np.inf, None)
    for a in KERNEL_ALPHAS * lam.mean():
        d = lam / (lam + a)
        fitted = Q @ (d * Qy) + ym
        h = (Q**2) @ d  # leverages
        rho = spearman(y - (y - fitted) / (1.0 - h), y)  # leave-one-out predictions
        if rho > best[0]:
            best = (rho, Q @ (Qy / (lam + a)))
    prior = KernelPrior(describe, X.shape[1], len(X), kernel, extra, views)
    for name, value in (("mean", mu), ("scale", scale), ("support", Z), ("support_sq", sq),
                        ("coef", best[1]), ("bias", ym), ("gamma", gamma)):  # fmt: skip
        getattr(prior, name).copy_(torch.as_tensor(value, dtype=torch.float32))
    return prior.eval(), float(best[0])


def predict_kernel(prior: KernelPrior, X: np.ndarray) -> np.ndarray:
    """The prior's scores (N,) for descriptors X (N, D)."""
    with torch.inference_mode():
        return prior.score(torch.from_numpy(np.asarray(X, np.float32))).double().numpy()
