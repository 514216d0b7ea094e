"""Evaluation metrics on the [0, 1] memorability scale."""

from __future__ import annotations

import numpy as np


def spearman(pred, target) -> float:
    """Spearman's rank correlation, tie-aware (average ranks), as scipy computes it."""
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    if len(pred) != len(target) or len(pred) < 2:
        raise ValueError("need two equally long sequences of at least 2 values")
    if np.ptp(pred) == 0 or np.ptp(target) == 0:
        return 0.0  # a constant has no ranking
    from scipy.stats import spearmanr  # here: importing scipy.stats costs ~1.5 s at start-up

    return float(spearmanr(pred, target).statistic)


def spearman_amnet(pred, target) -> float:
    """The tie-unaware formula 1 - 6 sum d^2 / (n (n^2 - 1)) with ordinal ranks, as the
    original AMNet code computes it; shown beside the tie-aware value for comparison."""
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    n = len(pred)
    rp = np.empty(n)
    rp[np.argsort(pred, kind="stable")] = np.arange(n)
    rt = np.empty(n)
    rt[np.argsort(target, kind="stable")] = np.arange(n)
    return float(1 - 6 * np.sum((rp - rt) ** 2) / (n * (n * n - 1)))


def mse(pred, target) -> float:
    return float(np.mean((np.asarray(pred, np.float64) - np.asarray(target, np.float64)) ** 2))
