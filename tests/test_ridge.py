"""The ridge prior: exact leave-one-out selection, and the fitted LinearPrior."""

import numpy as np
import torch

from amnet.training.cache import FeatureSet
from amnet.training.metrics import spearman
from amnet.training.priors import ALPHAS, fit_prior, predict_prior, ridge_loo


def _brute_force_loo(X, y, alpha):
    """Leave each sample out, standardise on the rest, refit, predict it."""
    out = np.empty(len(y))
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        mu, sd = X[keep].mean(0), X[keep].std(0) + 1e-6
        Z, ym = (X[keep] - mu) / sd, y[keep].mean()
        w = np.linalg.solve(Z.T @ Z + alpha * np.eye(X.shape[1]), Z.T @ (y[keep] - ym))
        out[i] = ((X[i] - mu) / sd) @ w + ym
    return out


def test_leave_one_out_rho_matches_refitting_without_each_sample():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 6))
    y = X @ rng.normal(size=6) + rng.normal(scale=2.0, size=40)
    _, _, alpha, rho = ridge_loo(X, y)
    assert alpha in ALPHAS
    # the closed form standardises once on all samples; refitting re-standardises without
    # the left-out one, so the two agree closely but not exactly
    assert abs(spearman(_brute_force_loo(X, y, alpha), y) - rho) < 0.05


def test_ridge_recovers_a_linear_function_on_raw_features():
    rng = np.random.default_rng(1)
    X = rng.normal(loc=3.0, scale=[1, 5, 0.1, 2], size=(200, 4))
    w_true = np.array([0.02, -0.01, 0.5, 0.0])
    y = X @ w_true + 0.4
    w, b, _, rho = ridge_loo(X, y)
    assert rho > 0.99
    np.testing.assert_allclose(X @ w + b, y, atol=0.01)


def test_fit_prior_scores_pooled_maps_and_averages_views():
    rng = np.random.default_rng(2)
    maps = rng.normal(size=(80, 8, 3, 3)).astype(np.float16)
    flipped = maps[..., ::-1].copy()
    y = maps.astype(np.float32).mean((2, 3)) @ rng.normal(size=8) * 0.05 + 0.6
    data = FeatureSet([maps, flipped], y)
    prior, rho = fit_prior(data.subset(np.arange(60)))
    assert rho > 0.9
    test = data.subset(np.arange(60, 80))
    direct = prior(torch.from_numpy(maps[60:].astype(np.float32))).double().numpy()
    np.testing.assert_allclose(predict_prior(prior, test), direct, atol=1e-5)  # flip: same pool
    assert spearman(direct, y[60:]) > 0.9
