"""amnet: image memorability estimation with attention (AMNet, Fajtl et al., CVPR 2018).

>>> import amnet
>>> predictor = amnet.load()                 # the shipped default model, offline
>>> result = predictor.predict("photo.jpg")  # doctest: +SKIP
>>> result.score, result.step_scores, result.attention.shape  # doctest: +SKIP
(0.71, (0.70, 0.71, 0.72), (3, 14, 14))

The public names are imported on first use, so ``import amnet`` (and ``amnet.types``) is fast
and does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "AMNetConfig": "amnet.model.head",
    "AMNetHead": "amnet.model.head",
    "AMNetOutput": "amnet.model.head",
    "Prediction": "amnet.types",
    "Predictor": "amnet.inference.predictor",
    "load": "amnet.inference.predictor",
    "list_models": "amnet.checkpoint",
}
__all__ = [*_EXPORTS, "__version__"]

if TYPE_CHECKING:
    from amnet.checkpoint import list_models  # noqa: F401
    from amnet.inference.predictor import Predictor, load  # noqa: F401
    from amnet.model.head import AMNetConfig, AMNetHead, AMNetOutput  # noqa: F401
    from amnet.types import Prediction  # noqa: F401


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'amnet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
