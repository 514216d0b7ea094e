"""Fitting the priors blended with AMNet heads, in closed form: ridge regression on globally
pooled trunk features (``LinearPrior``) and kernel ridge on a richer descriptor
(``KernelPrior``, fitted through ``KernelDescriptors``). Both go through one ridge,
``loo_ridge``: penalty chosen by exact leave-one-out from one decomposition, no refits."""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from amnet.builders import build_descriptor, build_image_descriptor
from amnet.model.prior import EXTRA_BLOCKS, KERNELS, KernelPrior, LinearPrior
from amnet.model.views import FLIP_VIEWS
from amnet.training.cache import FeatureSet, FeatureStore
from amnet.training.metrics import spearman
from amnet.trunks.registry import get_trunk_spec

ALPHAS = 10.0 ** np.arange(-1, 6.5, 0.25)  # penalties tried, on standardised features


def pooled(data: FeatureSet, batch: int = 256, *, views: bool = True) -> np.ndarray:
    """Globally pooled features (N, C), averaged over the test-time views (no crops) when
    ``views``, else of the original view alone."""
    out = []
    for v in data.views[: data.n_test_views if views else 1]:
        parts = [np.asarray(v[i : i + batch], np.float32).mean((2, 3)) for i in
                 range(0, len(v), batch)]  # fmt: skip
        out.append(np.concatenate(parts))
    return np.mean(out, axis=0)


def loo_ridge(
    Q: np.ndarray, lam: np.ndarray, Qy: np.ndarray, y: np.ndarray, alphas: np.ndarray,
    *, intercept: bool,
) -> tuple[float, float]:  # fmt: skip
    """The one ridge of amnet, in a spectral basis: fitted values ``Q @ (lam / (lam + a) *
    Qy) + mean(y)`` for each penalty ``a`` in ``alphas``, scored by exact leave-one-out
    Spearman rho on y (leverages from the same decomposition; ``intercept``: add the mean's
    1/N to each leverage). Returns (best rho, its penalty). The linear prior passes the SVD of
    its standardised features (lam = s^2), the kernel prior the eigendecomposition of its
    kernel matrix; the penalty rule (absolute grid, or a grid times the mean eigenvalue) is the
    caller's ``alphas``."""
    ym = float(y.mean())
    best = (-np.inf, 0.0)
    for a in alphas:
        d = lam / (lam + a)
        fitted = Q @ (d * Qy) + ym
        h = (Q**2) @ d + (1.0 / len(y) if intercept else 0.0)  # leverages
        rho = spearman(y - (y - fitted) / (1.0 - h), y)  # leave-one-out predictions
        if rho > best[0]:
            best = (rho, float(a))
    return best


def ridge_loo(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float, float, float]:
    """Ridge on standardised X (N, C) -> y (N,), the penalty chosen by ``loo_ridge`` on an
    absolute grid (``ALPHAS``). Returns (weight (C,), bias, alpha, leave-one-out rho), with
    weight and bias on the original (unstandardised) features."""
    mu, sd, ym = X.mean(0), X.std(0) + 1e-6, float(y.mean())
    U, s, Vt = np.linalg.svd((X - mu) / sd, full_matrices=False)
    Uy = U.T @ (y - ym)
    rho, alpha = loo_ridge(U, s**2, Uy, y, ALPHAS, intercept=True)
    weight = Vt.T @ (s / (s**2 + alpha) * Uy) / sd
    return weight, ym - float(mu @ weight), alpha, float(rho)


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


def predict_prior(prior: LinearPrior, data: FeatureSet, *, views: bool = True) -> np.ndarray:
    """The prior's scores (N,) on the averaged pooled features of the test-time views (when
    ``views``, as ``predict_features``) or of the original view."""
    return prior.score(torch.from_numpy(pooled(data, views=views))).double().numpy()


# --- kernel prior: kernel ridge on a richer descriptor (amnet.model.prior) -------------------

KERNEL_ALPHAS = 10.0 ** np.arange(-3, 4.01, 0.25)  # penalties tried, x the mean eigenvalue
GAMMA = 1.0  # width: exp(-GAMMA * d / median d between training images); d = |z - s|^2 (rbf)
# or |z - s| (laplace)


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
    views: tuple[str, ...] = FLIP_VIEWS,
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
    rho, alpha = loo_ridge(Q, lam, Qy, y, KERNEL_ALPHAS * lam.mean(), intercept=False)
    prior = KernelPrior(describe, X.shape[1], len(X), kernel, extra, views)
    coef = Q @ (Qy / (lam + alpha))
    for name, value in (("mean", mu), ("scale", scale), ("support", Z), ("support_sq", sq),
                        ("coef", coef), ("bias", ym), ("gamma", gamma)):  # fmt: skip
        getattr(prior, name).copy_(torch.as_tensor(value, dtype=torch.float32))
    return prior.eval(), float(rho)


def predict_kernel(prior: KernelPrior, X: np.ndarray) -> np.ndarray:
    """The prior's scores (N,) for descriptors X (N, D)."""
    with torch.inference_mode():
        return prior.score(torch.from_numpy(np.asarray(X, np.float32))).double().numpy()


class KernelDescriptors:
    """The kernel prior's descriptors of a set of images, computed once (``describe`` of the
    trunk's cached maps averaged over ``views``, a second trunk's appended with
    ``extra_trunk``), and the prior fitted on any subset of them: ``amnet cv`` fits one per
    split, the recipe of the shipped models one on every image. The one way amnet fits a
    kernel prior."""

    def __init__(
        self, trunk: str, paths: list[str], views: tuple[str, ...], *, kernel: str = "laplace",
        extra_trunk: str | None = None, have: FeatureStore | None = None, root=None, log=print,
    ) -> None:  # fmt: skip
        self.trunk, self.views, self.kernel, self.extra_trunk = trunk, views, kernel, extra_trunk
        self.describe = build_descriptor(trunk)
        self.X, self.sizes = prior_features(
            self.describe, trunk, paths, views, have=have, extra_trunk=extra_trunk, root=root,
            log=log,
        )  # fmt: skip
        self.index = {os.fspath(p): i for i, p in enumerate(paths)}  # path -> row of X

    def rows(self, paths) -> np.ndarray:
        return np.array([self.index[os.fspath(p)] for p in paths], dtype=np.int64)

    def fit(self, paths, y: np.ndarray) -> tuple[KernelPrior, float]:
        """The prior fitted on the images ``paths`` with targets ``y`` (penalty by
        leave-one-out): (prior, leave-one-out rho)."""
        extra = None
        if self.extra_trunk:
            main = get_trunk_spec(self.trunk).preprocess
            extra = build_image_descriptor(self.extra_trunk, EXTRA_BLOCKS, main)
        return fit_kernel_prior(self.describe, self.X[self.rows(paths)], np.asarray(y),
                                self.sizes, self.kernel, extra, self.views)  # fmt: skip

    def predict(self, prior: KernelPrior, paths) -> np.ndarray:
        return predict_kernel(prior, self.X[self.rows(paths)])
