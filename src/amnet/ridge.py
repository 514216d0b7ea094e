"""Ridge regression on globally pooled trunk features, with the penalty chosen by exact
leave-one-out (one SVD, no refits): the linear prior that can be blended with AMNet heads."""

from __future__ import annotations

import numpy as np
import torch

from .cache import FeatureSet
from .metrics import spearman
from .model import LinearPrior

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
    return prior.score_pooled(torch.from_numpy(pooled(data, tta=tta))).double().numpy()
