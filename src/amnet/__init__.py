"""amnet: image memorability estimation with attention (AMNet, Fajtl et al., CVPR 2018).

>>> import amnet
>>> predictor = amnet.load()                 # the shipped default model, offline
>>> result = predictor.predict("photo.jpg")  # doctest: +SKIP
>>> result.score, result.step_scores, result.attention.shape  # doctest: +SKIP
(0.71, (0.70, 0.71, 0.72), (3, 14, 14))
"""

__version__ = "0.1.0"

from .model import AMNetConfig, AMNetHead, AMNetOutput  # noqa: E402
from .predict import Prediction, Predictor, load  # noqa: E402
from .weights import list_models  # noqa: E402

__all__ = [
    "AMNetConfig", "AMNetHead", "AMNetOutput", "Prediction", "Predictor", "list_models", "load",
    "__version__",
]  # fmt: skip
