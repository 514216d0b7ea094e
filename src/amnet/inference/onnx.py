"""ONNX export of a whole model (trunk + head) and an ONNX Runtime engine for it.

The graph takes ``images`` (B, 3, S, S), preprocessed as the checkpoint says, and returns
``score`` (B,), ``step_scores`` (B, T) and ``attention`` (B, T, H, W). The checkpoint's metadata
travels inside the file (``metadata_props["amnet"]``), so ``amnet predict --model FILE.onnx``
needs nothing else. onnx and onnxruntime (CPU only, no torch needed to run) are the ``onnx``
extra and are imported only here, when used.

>>> export_onnx("amnet.onnx", trunk, head, meta=meta)          # doctest: +SKIP
>>> engine = onnx_engine("amnet.onnx")                         # doctest: +SKIP
>>> score, step_scores, attention = engine(images)              # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from amnet import __version__
from amnet import fileio as hub
from amnet.model.amnet import AMNet, AMNetEnsemble, model_views
from amnet.model.head import AMNetHead
from amnet.types import Engine

OPSET = 17
GRAPH = 2  # the exported graph's layout, in the cache key (2: a batch's views stacked)
INPUT = "images"
OUTPUTS = ("score", "step_scores", "attention")


class _Graph(nn.Module):
    """The composed model with the graph's three outputs."""

    def __init__(self, model: AMNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.model(x)  # x: (B, 3, S, S)
        return out.score, out.step_scores, out.attention  # (B,), (B, T), (B, T, H, W)


def _need(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"{module} is not installed; ONNX export and runtime need: pip install 'amnet[onnx]'"
        ) from None


def export_onnx(
    path: str | os.PathLike, trunk: nn.Module, head: AMNetHead | AMNetEnsemble, *,
    meta: dict | None = None, size: int = 224, views: bool = False,
) -> Path:  # fmt: skip
    """Write trunk + head as one ONNX graph (dynamic batch, ``size`` x ``size`` input)
    atomically, with ``meta`` (the checkpoint's metadata) stored in the file; with ``views``
    the graph also scores the model's test-time views (the mirror images, a kernel prior's
    crops) and averages them in."""
    onnx = _need("onnx")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    graph = _Graph(AMNet(trunk, head, model_views(head, views))).eval()
    example = torch.rand(2, 3, size, size)  # (B, 3, S, S); B is dynamic in the graph
    dynamic = {name: {0: "batch"} for name in (INPUT, *OUTPUTS)}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            graph, (example,), str(tmp), dynamo=False, input_names=[INPUT],
            output_names=list(OUTPUTS), dynamic_axes=dynamic, opset_version=OPSET,
        )  # fmt: skip
    model = onnx.load(str(tmp))
    entry = model.metadata_props.add()
    entry.key, entry.value = "amnet", json.dumps({**(meta or {}), "tta": views})  # metadata key
    onnx.save(model, str(tmp))
    os.replace(tmp, path)
    return path


def _model_key(trunk: nn.Module, head: nn.Module, size: int, views: bool) -> str:
    """A digest of everything the exported file depends on: every tensor, the input size, the
    test-time views (flips, a kernel prior's crops), the exporter (torch version, opset), the
    graph's layout and amnet's version."""
    views = model_views(head, views)
    space = getattr(head, "view_space", "image")
    views = views if space == "image" else (*views, space)  # where the views are made
    h = hashlib.sha256(f"{__version__}|{torch.__version__}|{OPSET}|{GRAPH}|{size}|{views}".encode())
    for prefix, module in (("trunk.", trunk), ("head.", head)):
        for name, t in module.state_dict().items():
            t = t.detach().cpu().contiguous()
            h.update(f"{prefix}{name}|{t.dtype}|{tuple(t.shape)}".encode())
            h.update(t.view(-1).view(torch.uint8).numpy() if t.numel() else b"")
    return h.hexdigest()


def cached_export(
    trunk: nn.Module, head: AMNetHead | AMNetEnsemble, size: int = 224, views: bool = False
) -> Path:
    """The ONNX file for this trunk + head in ``amnet.fileio.cache_dir()/onnx``, exported on
    first use (keyed on the tensors, so a changed model never reuses a stale file)."""
    path = hub.cache_dir() / "onnx" / f"{_model_key(trunk, head, size, views)[:24]}.onnx"
    return path if path.is_file() else export_onnx(path, trunk, head, size=size, views=views)


def open_session(path: str | os.PathLike, threads: int | None = None, *, spin: bool = False):
    """An ONNX Runtime CPU session with ``threads`` intra-op threads (default: torch's).
    Idle threads sleep rather than spin unless ``spin``: busy-waiting threads lose their
    time slices on a shared CPU (measured: 3.3 vs 2.2 images/s at batch 1 under load)."""
    ort = _need("onnxruntime")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or torch.get_num_threads()
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def read_onnx_metadata(session) -> dict:
    """The amnet metadata stored in an exported file (empty when there is none)."""
    return json.loads(session.get_modelmeta().custom_metadata_map.get("amnet", "{}"))


def onnx_engine(
    path: str | os.PathLike | None = None, trunk: nn.Module | None = None,
    head: AMNetHead | AMNetEnsemble | None = None, *, size: int = 224, session=None,
    views: bool = False,
) -> Engine:  # fmt: skip
    """An engine running an exported file (its test-time views baked in), or ``trunk`` +
    ``head`` exported into the cache (with ``views``: the test-time views averaged in)."""
    if session is None:
        if path is None:
            if trunk is None or head is None:
                raise ValueError("onnx_engine needs an exported file or a trunk and a head")
            path = cached_export(trunk, head, size, views)
        session = open_session(path)

    def run(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feed = {INPUT: x.detach().cpu().float().contiguous().numpy()}  # (B, 3, S, S)
        score, steps, att = session.run(list(OUTPUTS), feed)
        return torch.from_numpy(score), torch.from_numpy(steps), torch.from_numpy(att)

    return run


def export_checkpoint(
    name_or_path: str | os.PathLike, path: str | os.PathLike, *, check: bool = True
) -> tuple[Path, float | None]:
    """Export a registered model or checkpoint file (its trunk included) to ``path``.

    With ``check``, the file is run in ONNX Runtime on two random images and compared with
    PyTorch: returns (path, largest |score difference|), else (path, None)."""
    from amnet.checkpoint import load_checkpoint, resolve_model
    from amnet.trunks.registry import create_trunk

    head, meta = load_checkpoint(resolve_model(name_or_path))
    trunk = create_trunk(meta["trunk"])
    size = int(meta["preprocess"]["size"])
    meta["name"] = str(name_or_path)
    views = bool(meta.get("tta"))
    out = export_onnx(path, trunk, head, meta=meta, size=size, views=views)
    if not check:
        return out, None
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want = AMNet(trunk, head, model_views(head, views))(x).score  # (2,)
    got = onnx_engine(out)(x)[0]
    return out, float((got - want).abs().max())
