"""Fitting the priors blended with AMNet heads, in closed form: ridge regression on globally
pooled trunk features (``LinearPrior``) and kernel ridge on a richer descriptor
(``KernelPrior``, fitted through ``KernelDescriptors``). Both go through one ridge,
``loo_ridge``: penalty chosen by exact leave-one-out from one decomposition, no refits."""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from amnet.builders import build_base, build_descriptor, build_image_descriptor
from amnet.model.prior import EXTRA_BLOCKS, KERNELS, KernelPrior, LinearPrior
from amnet.model.views import FLIP_VIEWS
from amnet.training.cache import FeatureSet, FeatureStore
from amnet.training.descriptors import (
    base_scores,
    block_sizes,
    describe_views,
    extra_kernel_features,
    map_view_features,
    prior_features,
    store_views,
)
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
    *, intercept: bool, offset: np.ndarray | None = None, rows: np.ndarray | None = None,
    sw: np.ndarray | None = None,
) -> tuple[float, float]:  # fmt: skip
    """The one ridge of amnet, in a spectral basis: fitted values ``Q @ (lam / (lam + a) *
    Qy) + mean(y)`` for each penalty ``a`` in ``alphas``, scored by exact leave-one-out
    Spearman rho on y (leverages from the same decomposition; ``intercept``: add the mean's
    1/N to each leverage). Returns (best rho, its penalty). The linear prior passes the SVD of
    its standardised features (lam = s^2), the kernel prior the eigendecomposition of its
    kernel matrix; the penalty rule (absolute grid, or a grid times the mean eigenvalue) is the
    caller's ``alphas``. When y is a residual, rho is of ``offset + y`` (the whole score), and
    on ``rows`` only (e.g. the human-scored rows among distilled ones) when given. With ``sw``
    (N,), the square roots of per-row weights on the squared error, Q and Qy are of the
    weighted problem (``sw * (y - mean)``, the kernel ``sw K sw``); the leave-one-out formula
    is the same in y's units."""
    ym = float(y.mean() if sw is None else np.average(y, weights=sw**2))
    best = (-np.inf, 0.0)
    for a in alphas:
        d = lam / (lam + a)
        fitted = Q @ (d * Qy) + ym if sw is None else Q @ (d * Qy) / sw + ym
        h = (Q**2) @ d + (1.0 / len(y) if intercept else 0.0)  # leverages
        loo = y - (y - fitted) / (1.0 - h)  # leave-one-out predictions
        if offset is None and rows is None:
            rho = spearman(loo, y)
        else:
            whole, truth = (loo, y) if offset is None else (loo + offset, y + offset)
            rho = spearman(whole[rows], truth[rows]) if rows is not None else spearman(whole, truth)
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


def block_scale(X: np.ndarray, sizes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The kernel prior's standardisation of descriptors X (N, D) made of blocks of ``sizes``
    columns: (mean (D,), scale (D,)), each column divided by its sd (floored at a tenth of its
    block's mean sd) and by sqrt(its block's width), so that every block counts alike."""
    mu, sd = X.mean(0), X.std(0)
    edges = np.cumsum([0, *sizes])
    if edges[-1] != X.shape[1]:
        raise ValueError(f"block sizes {sizes} do not add up to {X.shape[1]} columns")
    scale = np.empty_like(sd)
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        scale[a:b] = 1.0 / ((np.maximum(sd[a:b], 0.1 * sd[a:b].mean()) + 1e-6) * np.sqrt(b - a))
    return mu, scale


def fit_kernel_prior(
    describe: nn.Module,
    X: np.ndarray,
    y: np.ndarray,
    sizes: list[int],
    kernel: str = "rbf",
    extra: nn.Module | None = None,
    views: tuple[str, ...] = FLIP_VIEWS,
    *,
    base: tuple[nn.Module, np.ndarray, float, float] | None = None,
    rows: np.ndarray | None = None,
    base_use: str = "residual",
    weights: np.ndarray | None = None,
    extra_views: tuple[str, ...] | None = None,
) -> tuple[KernelPrior, float]:
    """Kernel ridge on descriptors X (N, D) -> y (N,): each block standardised (sd floored
    at a tenth of the block's mean sd) and weighted by 1/sqrt(its width) so every block
    counts alike, an RBF or Laplacian ``kernel`` with the median heuristic, and the penalty
    chosen by exact leave-one-out Spearman rho on (X, y). With ``extra`` (an
    ``ImageDescriptor``) X's last columns are its descriptors; ``views``: the test-time views
    X's rows were averaged over (the prior averages the same ones when it scores; the extra
    columns over ``extra_views``, default the same). With
    ``base`` = (module, its scores r (N,), scale a, shift b) the ridge fits the residual
    y - (a r + b) and the prior adds a * module(...) + b back when it scores; with
    ``base_use="block"`` X's last column is r instead, and the module computes it. ``rows``:
    the rows whose leave-one-out rho chooses the penalty (default: all). ``weights`` (N,):
    each row's weight on the squared error (e.g. distilled rows against human-scored ones;
    default 1). Returns (prior, leave-one-out rho)."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    X = np.asarray(X, np.float64)
    mu, scale = block_scale(X, sizes)
    Z = (X - mu) * scale  # (N, D)
    sq = (Z * Z).sum(1)
    D = np.maximum(sq[:, None] + sq[None] - 2.0 * Z @ Z.T, 0.0)  # (N, N) squared distances
    if kernel == "laplace":
        D = np.sqrt(D)
    gamma = GAMMA / float(np.median(D))
    K = np.exp(-gamma * D)  # (N, N)
    sw = None if weights is None else np.sqrt(np.asarray(weights, np.float64))  # (N,)
    if sw is not None:  # weighted least squares: the kernel ridge of sw * y on sw K sw
        K = sw[:, None] * K * sw[None]
    lam, Q = np.linalg.eigh(K)
    lam = np.clip(lam, 0.0, None)
    offset = None
    if base is not None and base_use == "residual":
        offset = base[2] * np.asarray(base[1], np.float64) + base[3]  # (N,) the rescaled base
        y = y - offset  # the residual
    ym = float(y.mean() if sw is None else np.average(y, weights=sw**2))
    Qy = Q.T @ (y - ym if sw is None else sw * (y - ym))
    rho, alpha = loo_ridge(Q, lam, Qy, y, KERNEL_ALPHAS * lam.mean(), intercept=False,
                           offset=offset, rows=rows, sw=sw)  # fmt: skip
    prior = KernelPrior(describe, X.shape[1], len(X), kernel, extra, views,
                        base[0] if base is not None else None, base_use, extra_views)  # fmt: skip
    if base is not None:
        prior.base_scale.fill_(float(base[2]))
        prior.base_shift.fill_(float(base[3]))
    coef = Q @ (Qy / (lam + alpha))
    if sw is not None:
        coef = sw * coef  # back from the weighted problem's coefficients
    for name, value in (("mean", mu), ("scale", scale), ("support", Z), ("support_sq", sq),
                        ("coef", coef), ("bias", ym), ("gamma", gamma)):  # fmt: skip
        getattr(prior, name).copy_(torch.as_tensor(value, dtype=torch.float32))
    return prior.eval(), float(rho)


def predict_kernel(prior: KernelPrior, X: np.ndarray, base: np.ndarray | None = None) -> np.ndarray:
    """The prior's scores (N,) for descriptors X (N, D) (and its rescaled base scores (N,))."""
    with torch.inference_mode():
        b = None if base is None else torch.from_numpy(np.asarray(base, np.float32))
        return prior.score(torch.from_numpy(np.asarray(X, np.float32)), b).double().numpy()


class KernelDescriptors:
    """The kernel prior's descriptors of a set of images, computed once (``describe`` of the
    trunk's cached maps averaged over ``views``, made of the image or of the map: ``space``; a
    second trunk's appended with ``extra_trunk``), and the prior fitted on any subset of them:
    ``amnet cv`` fits one per split, the recipe of the shipped models one on every image. The
    one way amnet fits a kernel prior. With ``base="resmem"`` ResMem's head scores every image
    too (``r``), and the prior fits the residual over its rescaled score."""

    def __init__(
        self, trunk: str, paths: list[str], views: tuple[str, ...], *, kernel: str = "laplace",
        extra_trunk: str | None = None, have: FeatureStore | None = None, root=None, log=print,
        space: str = "image", base: str | None = None, extra_views: tuple[str, ...] | None = None,
    ) -> None:  # fmt: skip
        self.trunk, self.views, self.kernel, self.extra_trunk = trunk, views, kernel, extra_trunk
        self.extra_views = tuple(extra_views or views)  # what the second trunk sees
        self.describe = build_descriptor(trunk)
        self.index = {os.fspath(p): i for i, p in enumerate(paths)}  # path -> row of X
        self.base, self.r, self.space = None, None, space
        if base is None:
            self.X, self.sizes = prior_features(
                self.describe, trunk, paths, views, have=have, extra_trunk=extra_trunk,
                root=root, log=log, space=space, extra_views=self.extra_views,
            )  # fmt: skip
            return
        if extra_trunk and space != "image":
            raise ValueError("a second trunk sees the images: views must be made of the image")
        (maps,) = store_views(trunk, paths, ("orig",), have=have, root=root, log=log)
        image = space == "image"  # each view of the image has its own cached maps
        self.X, logits = map_view_features(self.describe, maps, ("orig",) if image else views)
        self.sizes = block_sizes(self.describe, maps.shape[1], maps.shape[-1])
        del maps
        if image and tuple(views) != ("orig",):  # the other views' maps, described once each
            others = tuple(v for v in views if v != "orig")
            got = dict(zip(others, store_views(trunk, paths, others, have=have, root=root,
                                               log=log), strict=True))  # fmt: skip
            self.X = np.mean([self.X if v == "orig" else describe_views(self.describe, [got[v]])
                              for v in views], axis=0)  # fmt: skip
        if extra_trunk:  # only as a teacher's student (fit(use="teacher")): its columns last
            X2, sizes2 = extra_kernel_features(extra_trunk, paths, self.extra_views, root=root,
                                               log=log)  # fmt: skip
            self.X, self.sizes = np.hstack([self.X, X2]), self.sizes + sizes2
        self.base = build_base(base)
        self.r = base_scores(self.base, list(paths), logits, get_trunk_spec(trunk).preprocess)

    @classmethod
    def from_arrays(
        cls, trunk: str, paths: list[str], views: tuple[str, ...], X: np.ndarray,
        sizes: list[int], *, kernel: str = "laplace", base: str | None = None,
        r: np.ndarray | None = None, space: str = "features",
    ) -> KernelDescriptors:  # fmt: skip
        """Descriptors computed elsewhere (e.g. per view, then averaged over several sets)."""
        self = cls.__new__(cls)
        self.trunk, self.views, self.kernel, self.extra_trunk = trunk, views, kernel, None
        self.extra_views = views
        self.describe = build_descriptor(trunk)
        self.index = {os.fspath(p): i for i, p in enumerate(paths)}
        self.X, self.sizes, self.r, self.space = X, sizes, r, space
        self.base = build_base(base) if base else None
        return self

    def rows(self, paths) -> np.ndarray:
        return np.array([self.index[os.fspath(p)] for p in paths], dtype=np.int64)

    def fit(
        self, paths, y: np.ndarray, *, scale: str = "regression",
        distil: tuple[list, np.ndarray] | None = None, use: str = "residual",
        weight: float = 1.0,
    ) -> tuple[KernelPrior, float]:  # fmt: skip
        """The prior fitted on the images ``paths`` with targets ``y`` (penalty by
        leave-one-out on them): (prior, leave-one-out rho).

        With a base, its scores are rescaled onto y's scale on these images (``scale``:
        "regression", least squares; "moments", the same mean and sd). ``distil`` = (paths,
        teacher scores on the base's scale): more images, their targets the teacher's scores
        rescaled alike (knowledge distillation; they never choose the penalty). ``use``: the
        base as a residual's offset, as one more descriptor column ("block"), or only as the
        teacher of the distilled rows ("teacher": the prior has no base). ``weight``: each
        distilled row's weight on the squared error, against 1 for a human-scored one."""
        y = np.asarray(y, np.float64)
        rows = self.rows(paths)
        extra = None
        if self.extra_trunk:
            main = get_trunk_spec(self.trunk).preprocess
            extra = build_image_descriptor(self.extra_trunk, EXTRA_BLOCKS, main)
        if self.base is None:
            if distil is not None:
                raise ValueError("distillation needs a base (its scale)")
            return fit_kernel_prior(self.describe, self.X[rows], y, self.sizes, self.kernel,
                                    extra, self.views, extra_views=self.extra_views)  # fmt: skip
        r = self.r[rows]
        if scale == "regression":
            a = float(np.cov(r, y)[0, 1] / np.var(r, ddof=1))
        elif scale == "moments":
            a = float(y.std() / r.std())
        else:
            raise ValueError(f"scale must be 'regression' or 'moments', got {scale!r}")
        b = float(y.mean() - a * r.mean())
        fit_rows, targets, weights = rows, y, None
        if distil is not None:
            fit_rows = np.concatenate([rows, self.rows(distil[0])])
            targets = np.concatenate([y, a * np.asarray(distil[1], np.float64) + b])
            if weight != 1.0:
                weights = np.r_[np.ones(len(rows)), np.full(len(distil[0]), float(weight))]
        if use != "teacher" and self.space != "features":
            raise ValueError("a base at inference needs views made of the map (space='features')")
        if use != "teacher" and extra is not None:
            raise ValueError("a second trunk goes with a base only as a teacher (use='teacher')")
        if use == "teacher":  # the base only labels the distilled rows: no base at inference
            return fit_kernel_prior(
                self.describe,
                self.X[fit_rows],
                targets,
                self.sizes,
                self.kernel,
                extra,
                self.views,
                rows=np.arange(len(rows)),
                weights=weights,
                extra_views=self.extra_views,
            )
        X, sizes = self.X, self.sizes
        if use == "block":
            X, sizes = np.hstack([X, self.r[:, None]]), [*sizes, 1]
        return fit_kernel_prior(
            self.describe, X[fit_rows], targets, sizes, self.kernel, None, self.views,
            base=(self.base, self.r[fit_rows], a, b), rows=np.arange(len(rows)), base_use=use,
            weights=weights,
        )  # fmt: skip

    def fit_weighted(
        self, paths, y: np.ndarray, weights: tuple[float, ...], **fit
    ) -> tuple[KernelPrior, float, float]:  # fmt: skip
        """``fit`` with each distilled-row ``weights`` in turn; the one whose leave-one-out rho
        on the human-scored rows is highest wins (ties: the first). Returns (prior, its
        leave-one-out rho, its weight)."""
        best = None
        for w in weights:
            prior, rho = self.fit(paths, y, weight=w, **fit)
            if best is None or rho > best[1]:
                best = (prior, rho, float(w))
        if best is None:
            raise ValueError("no weights to choose from")
        return best

    def predict(self, prior: KernelPrior, paths) -> np.ndarray:
        rows = self.rows(paths)
        if prior.base is None:
            return predict_kernel(prior, self.X[rows])
        if prior.base_use == "block":
            return predict_kernel(prior, np.hstack([self.X[rows], self.r[rows, None]]))
        base = prior.base_scale.item() * self.r[rows] + prior.base_shift.item()
        return predict_kernel(prior, self.X[rows], base)
