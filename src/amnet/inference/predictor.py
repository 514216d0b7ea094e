"""Predictor: images in, memorability predictions out — one image, a list, or a stream of any
length with bounded memory and decoding in parallel with the model."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch

from amnet.checkpoint import load_checkpoint, read_metadata, resolve_model
from amnet.inference.engine import RunOptions, build_engine
from amnet.inference.images import DEFAULT_MAX_PIXELS, ImageLike, batched_images, iter_images
from amnet.model.amnet import AMNetEnsemble
from amnet.model.head import AMNetHead
from amnet.trunks.registry import Preprocess, Trunk, create_trunk, create_trunk_and_tail
from amnet.types import Engine, Prediction

if TYPE_CHECKING:
    from amnet.inference.differentiable import ScoreModule


def _name(source: ImageLike) -> str | None:
    return os.fspath(source) if isinstance(source, str | os.PathLike) else None


class Predictor:
    """A frozen trunk + AMNet head with its preprocessing, ready to score images.

    ``options`` choose how the model runs (:class:`amnet.inference.engine.RunOptions`; by default
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
        # test-time views: as the checkpoint was measured (its metadata key "tta"), unless the
        # options say
        self.views = (
            bool(self.meta.get("tta")) if self.options.views is None else self.options.views
        )
        self.engine = engine or build_engine(
            self.trunk, self.head, self.options, self.device, preprocess.size, self.views
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
        path = resolve_model(name_or_path)
        if trunk_weights is None:  # the trunk's weights read once, for the trunk and the prior
            trunk, tail = create_trunk_and_tail(read_metadata(path)["trunk"])
            head, meta = load_checkpoint(path, tail=tail)
        else:
            head, meta = load_checkpoint(path)
            trunk = create_trunk(meta["trunk"], weights=trunk_weights)
        meta["name"] = str(name_or_path)
        return cls(trunk, head, Preprocess.from_dict(meta["preprocess"]), meta=meta, **kwargs)

    @classmethod
    def from_onnx(cls, path: str | os.PathLike, **kwargs) -> Predictor:
        """A Predictor running a file written by ``amnet export --onnx`` in ONNX Runtime."""
        from amnet.inference.onnx import onnx_engine, open_session, read_onnx_metadata

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
        if given is not None and given.views is not None and given.views != bool(meta.get("tta")):
            raise ValueError(f"{path} was exported with views={bool(meta.get('tta'))}; export "
                             "again to change it")  # fmt: skip
        kwargs["options"] = RunOptions(runtime="onnx", onnx_file=str(path), views=meta.get("tta"))
        engine = onnx_engine(session=session)
        pp = Preprocess.from_dict(meta["preprocess"])
        return cls(None, None, pp, meta=meta, engine=engine, **kwargs)

    @property
    def steps(self) -> int:
        """T, the number of attention steps of the model."""
        return self.head.cfg.steps if self.head is not None else int(self.meta["model"]["steps"])

    def as_module(self) -> ScoreModule:
        """The model as a differentiable ``nn.Module``: images (B, 3, H, W) in [0, 1], any size
        -> scores (B,), gradients flowing to the pixels and the model frozen
        (:class:`amnet.inference.differentiable.ScoreModule`). It shares this Predictor's
        modules and device; scores equal ``predict`` on the same tensor."""
        from amnet.inference.differentiable import ScoreModule

        return ScoreModule.from_predictor(self)

    @torch.inference_mode()
    def _outputs(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """score (B,), step scores (B, T), attention (B, T, H, W) of a preprocessed batch."""
        return tuple(t.float().cpu().numpy() for t in self.engine(x))

    def predict_tensors(self, x: torch.Tensor) -> list[Prediction]:
        """Score a preprocessed batch (B, 3, S, S)."""
        score, steps, att = self._outputs(x)
        return [Prediction(None, float(score[i]), tuple(map(float, steps[i])), att[i])
                for i in range(len(score))]  # fmt: skip

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
            if ok:
                score, steps, att = self._outputs(torch.stack([i.tensor for i in ok]))
            i = 0
            for item in batch:
                if item.error is not None:
                    yield Prediction(_name(item.source), error=item.error)
                    continue
                w, h = item.size
                yield Prediction(_name(item.source), float(score[i]),
                                 tuple(map(float, steps[i])), att[i], w, h)  # fmt: skip
                i += 1

    def predict(self, x: ImageLike | list[ImageLike], **kwargs) -> Prediction | list[Prediction]:
        """Score a path, PIL image, numpy array, (3, H, W) tensor, or a list of them.

        A (B, 3, H, W) tensor is treated as a list of B images."""
        if isinstance(x, torch.Tensor) and x.ndim == 4:
            x = list(x)
        if isinstance(x, list | tuple):
            return list(self.predict_iter(x, **kwargs))
        return next(self.predict_iter([x], workers=0))

    def predict_video(self, path: str | os.PathLike, every: float = 1.0, **kwargs):
        """Score a video every ``every`` seconds: yields one row per sampled frame, in time
        order (``amnet.inference.video.predict_video``: ``batch_size``, ``smooth``, ``workers``).
        Needs PyAV (``pip install 'amnet[video]'``)."""
        from amnet.inference.video import predict_video

        return predict_video(self, path, every, **kwargs)


def load(
    name_or_path: str | os.PathLike = "default", *, device: str = "cpu", **kwargs
) -> Predictor:
    """Load a pretrained model by registry name, or a checkpoint file, as a Predictor."""
    return Predictor.from_checkpoint(name_or_path, device=device, **kwargs)
