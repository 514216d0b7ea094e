"""Predictor: images in, memorability predictions out — one image, a list, or a stream of any
length with bounded memory and decoding in parallel with the model."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .backbone import Preprocess, Trunk, create_trunk
from .images import DEFAULT_MAX_PIXELS, ImageLike, batched_images, iter_images
from .model import AMNetEnsemble, AMNetHead
from .runtime import Engine, RunOptions, build_engine
from .weights import load_checkpoint, resolve_model


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


def _name(source: ImageLike) -> str | None:
    return os.fspath(source) if isinstance(source, str | os.PathLike) else None


class Predictor:
    """A frozen trunk + AMNet head with its preprocessing, ready to score images.

    ``options`` choose how the model runs (:class:`amnet.runtime.RunOptions`; by default
    BatchNorm is folded into the trunk's convolutions, in place, activations are channels-last
    and on the CPU the trunk runs on chunks of 8 images). ``engine`` replaces trunk + head
    altogether (an exported ONNX file: then ``trunk`` and ``head`` are None).

    >>> p = amnet.load()                                    # doctest: +SKIP
    >>> [r.score for r in p.predict(["a.jpg", "b.png"])]     # doctest: +SKIP
    >>> fast = amnet.load(options=RunOptions(runtime="onnx"))  # doctest: +SKIP
    """

    def __init__(
        self,
        trunk: Trunk | None,
        head: AMNetHead | AMNetEnsemble | None,
        preprocess: Preprocess,
        *,
        meta: dict | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 16,
        workers: int = 2,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        options: RunOptions | None = None,
        engine: Engine | None = None,
    ) -> None:
        if batch_size < 1 or workers < 0:
            raise ValueError("batch_size must be >= 1 and workers >= 0")
        self.device = torch.device(device)
        self.trunk = trunk.to(self.device) if trunk is not None else None
        self.head = head.to(self.device).eval() if head is not None else None
        self.options = options or RunOptions()
        self.meta = meta or {}
        # test-time mirror images: as the checkpoint was measured, unless the options say
        self.tta = bool(self.meta.get("tta")) if self.options.tta is None else self.options.tta
        self.engine = engine or build_engine(
            self.trunk, self.head, self.options, self.device, preprocess.size, self.tta
        )
        self.preprocess = preprocess
        self.batch_size = batch_size
        self.workers = workers
        self.max_pixels = max_pixels

    @classmethod
    def from_checkpoint(
        cls, name_or_path: str | os.PathLike = "default", *, trunk_weights: str | None = None,
        **kwargs,
    ) -> Predictor:  # fmt: skip
        if str(name_or_path).endswith(".onnx"):
            return cls.from_onnx(name_or_path, **kwargs)
        head, meta = load_checkpoint(resolve_model(name_or_path))
        trunk = create_trunk(meta["trunk"], weights=trunk_weights)
        meta["name"] = str(name_or_path)
        return cls(trunk, head, Preprocess.from_dict(meta["preprocess"]), meta=meta, **kwargs)

    @classmethod
    def from_onnx(cls, path: str | os.PathLike, **kwargs) -> Predictor:
        """A Predictor running a file written by ``amnet export --onnx`` in ONNX Runtime."""
        from .export import onnx_engine, open_session, read_onnx_metadata

        if not os.path.isfile(path):
            raise FileNotFoundError(f"ONNX file not found: {path}")
        session = open_session(path)
        meta = read_onnx_metadata(session)
        if "preprocess" not in meta:
            raise ValueError(f"{path} was not written by `amnet export --onnx` (no metadata)")
        meta["name"] = str(path)
        given = kwargs.pop("options", None)
        if given is not None and (given.bfloat16 or given.compile):
            raise ValueError("bfloat16 and compile are torch options; an .onnx model runs in ONNX "
                             "Runtime")  # fmt: skip
        if given is not None and given.tta is not None and given.tta != bool(meta.get("tta")):
            raise ValueError(f"{path} was exported with tta={bool(meta.get('tta'))}; export "
                             "again to change it")  # fmt: skip
        kwargs["options"] = RunOptions(runtime="onnx", onnx_file=str(path), tta=meta.get("tta"))
        engine = onnx_engine(session=session)
        pp = Preprocess.from_dict(meta["preprocess"])
        return cls(None, None, pp, meta=meta, engine=engine, **kwargs)

    @property
    def steps(self) -> int:
        """T, the number of attention steps of the model."""
        return self.head.cfg.steps if self.head is not None else int(self.meta["model"]["steps"])

    @torch.inference_mode()
    def predict_tensors(self, x: torch.Tensor) -> list[Prediction]:
        """Score a preprocessed batch (B, 3, S, S)."""
        score, steps, att = (t.float().cpu().numpy() for t in self.engine(x))
        return [
            Prediction(None, float(score[i]), tuple(float(s) for s in steps[i]), att[i])
            for i in range(len(score))
        ]

    def predict_iter(
        self, sources: Iterable[ImageLike], *, batch_size: int | None = None,
        workers: int | None = None,
    ) -> Iterator[Prediction]:  # fmt: skip
        """Yield one Prediction per source, in input order, for any number of sources.

        Decoding runs in ``workers`` threads while the model runs; at most about
        ``2 * batch_size + workers`` decoded images are held at any time."""
        bs = batch_size or self.batch_size
        nw = self.workers if workers is None else workers
        loaded = iter_images(sources, self.preprocess, workers=nw, window=2 * bs + nw,
                             max_pixels=self.max_pixels)  # fmt: skip
        for batch in batched_images(loaded, bs):
            ok = [item for item in batch if item.error is None]
            preds = self.predict_tensors(torch.stack([i.tensor for i in ok])) if ok else []
            scored = iter(preds)
            for item in batch:
                if item.error is not None:
                    yield Prediction(_name(item.source), error=item.error)
                else:
                    p = next(scored)
                    w, h = item.size
                    yield Prediction(_name(item.source), p.score, p.step_scores, p.attention, w, h)

    def predict(self, x: ImageLike | list[ImageLike], **kwargs) -> Prediction | list[Prediction]:
        """Score a path, PIL image, numpy array, (3, H, W) tensor, or a list of them.

        A (B, 3, H, W) tensor is treated as a list of B images."""
        if isinstance(x, torch.Tensor) and x.ndim == 4:
            x = list(x)
        if isinstance(x, list | tuple):
            return list(self.predict_iter(x, **kwargs))
        return next(self.predict_iter([x], workers=0))


def load(
    name_or_path: str | os.PathLike = "default", *, device: str = "cpu", **kwargs
) -> Predictor:
    """Load a pretrained model by registry name, or a checkpoint file, as a Predictor."""
    return Predictor.from_checkpoint(name_or_path, device=device, **kwargs)
