"""Plain types shared by every layer, importable without torch: a prediction and an engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class Prediction:
    """The result for one image. ``error`` is None when it was scored."""

    path: str | None
    score: float | None = None
    step_scores: tuple[float, ...] = ()
    attention: np.ndarray | None = None  # (T, H, W), each map sums to 1
    width: int | None = None  # of the original image
    height: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Engine(Protocol):
    """How a model runs: preprocessed images (B, 3, S, S) -> (score (B,), step_scores (B, T),
    attention (B, T, H, W)), tensors on the CPU or the model's device (torch or ONNX Runtime)."""

    def __call__(self, images: Any) -> tuple[Any, Any, Any]: ...
