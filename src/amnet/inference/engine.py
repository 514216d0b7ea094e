"""How a Predictor runs its model: memory format, folded BatchNorm, bfloat16, torch.compile,
or ONNX Runtime. Every option changes speed, never the model: scores agree with the plain
float32 forward within a small tolerance (tests/test_runtime.py; effect on rho measured on LNSIM
by benchmarks/options.py, figures in docs/speed.md).

An engine is a callable ``images (B, 3, S, S) -> (score (B,), step_scores (B, T),
attention (B, T, H, W))``; :func:`build_engine` makes one from a trunk and a head."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from amnet.model.amnet import AMNet, AMNetEnsemble, model_views
from amnet.model.head import AMNetHead
from amnet.types import Engine

Outputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # score, step_scores, attention
RUNTIMES = ("torch", "onnx")


@dataclass(frozen=True)
class RunOptions:
    """Speed options (docs/speed.md says what each one measured).

    ``runtime="onnx"`` runs the exported graph in ONNX Runtime (``pip install amnet[onnx]``);
    ``onnx_file`` names an exported file, else the model is exported once into the cache."""

    runtime: str = "torch"
    channels_last: bool = True  # NHWC activations for the trunk's convolutions
    fold_bn: bool = True  # fold each BatchNorm into the convolution before it (in place)
    bfloat16: bool = False  # trunk under bfloat16 autocast: fast only on CPUs with bf16 units
    compile: bool = False  # torch.compile the trunk (inductor; needs a C++ compiler)
    trunk_batch: int = 8  # on the CPU, the trunk runs on chunks of this many images; 0 = all
    onnx_file: str | None = None
    views: bool | None = None  # test-time views (mirror, a prior's crops); None: as the model says

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {self.runtime!r}; use one of {', '.join(RUNTIMES)}")
        if self.runtime == "onnx" and (self.bfloat16 or self.compile):
            raise ValueError("bfloat16 and compile are torch options; not with runtime 'onnx'")
        if self.onnx_file and self.runtime != "onnx":
            raise ValueError("onnx_file needs runtime 'onnx'")
        if self.trunk_batch < 0:
            raise ValueError(f"trunk_batch must be >= 0, got {self.trunk_batch}")


def _bn_scale(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) with bn(y) == y * scale + shift per channel, in eval mode."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (C,)
    return scale, bn.bias - bn.running_mean * scale


@torch.no_grad()
def fold_batchnorm(module: nn.Module) -> int:
    """Fold every eval-mode BatchNorm2d that directly follows a Conv2d into that convolution's
    weight and bias, and replace it with ``nn.Identity``, in place; returns how many.

    The pairs are found by tracing the module with torch.fx (the module keeps its own forward
    code); a module that cannot be traced is left as it is (returns 0)."""
    import torch.fx

    class Tracer(torch.fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return isinstance(m, nn.Conv2d | nn.BatchNorm2d) or super().is_leaf_module(m, qualname)

    try:
        graph = Tracer().trace(module)
    except Exception:  # noqa: BLE001 - data-dependent control flow: keep the module as it is
        return 0
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or len(node.args) != 1:
            continue
        bn, src = module.get_submodule(node.target), node.args[0]
        if not isinstance(bn, nn.BatchNorm2d) or bn.training or not bn.track_running_stats:
            continue
        if not isinstance(src, torch.fx.Node) or src.op != "call_module" or len(src.users) != 1:
            continue
        conv = module.get_submodule(src.target)
        if isinstance(conv, nn.Conv2d) and calls[src.target] == calls[node.target] == 1:
            pairs.append((src.target, node.target))
    for conv_name, bn_name in pairs:
        conv, bn = module.get_submodule(conv_name), module.get_submodule(bn_name)
        scale, shift = _bn_scale(bn)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(scale)
        # a new tensor, not copy_: the loaded weights may be a read-only-mapped file's pages
        conv.weight = nn.Parameter(conv.weight * scale.view(-1, 1, 1, 1), requires_grad=False)
        conv.bias = nn.Parameter(bias * scale + shift, requires_grad=False)
        parent, _, name = bn_name.rpartition(".")
        setattr(module.get_submodule(parent), name, nn.Identity())
    return len(pairs)


class FastTrunk(nn.Module):
    """The torch engine's way of running a trunk: inputs moved to ``device`` in ``fmt``, on the
    CPU in chunks of ``chunk`` images (small chunks keep activations in the CPU's caches), under
    ``autocast`` when asked; float32 maps out. What it computes is the trunk's."""

    def __init__(self, trunk: nn.Module, run: Callable, fmt: torch.memory_format, chunk: int,
                 autocast: Callable, device: torch.device) -> None:  # fmt: skip
        super().__init__()
        self.trunk, self.fmt, self.chunk = trunk, fmt, chunk
        object.__setattr__(self, "_run", run)  # the trunk or its compiled form: not a submodule
        self.autocast, self.device = autocast, device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device).contiguous(memory_format=self.fmt)  # (B, 3, S, S)
        with self.autocast():
            parts = [self._run(c) for c in (x.split(self.chunk) if self.chunk else (x,))]
        return (torch.cat(parts) if len(parts) > 1 else parts[0]).float()  # (B, C, S/16, S/16)


class TorchEngine:
    """An engine running ``model`` (the composed ``AMNet``) in PyTorch."""

    def __init__(self, model: AMNet, device: torch.device) -> None:
        self.model, self.device = model, device

    def __call__(self, x: torch.Tensor) -> Outputs:
        out = self.model(x.to(self.device))
        return out.score, out.step_scores, out.attention


def torch_engine(
    trunk: nn.Module, head: AMNetHead | AMNetEnsemble, options: RunOptions,
    device: torch.device, views: bool = False,
) -> TorchEngine:  # fmt: skip
    """The trunk and head in PyTorch with ``options`` applied, as one ``AMNet``; with ``views``
    the model's test-time views (``amnet.model.amnet.model_views``) are scored and averaged.
    The trunk (and a kernel prior's networks) are changed in place (folded BatchNorm,
    channels-last weights); what they compute stays the same."""
    fmt = torch.channels_last if options.channels_last else torch.contiguous_format
    prior = getattr(head, "prior", None)
    nets = [trunk, *(prior.frozen_nets() if hasattr(prior, "frozen_nets") else [])]
    for net in nets:  # a kernel prior's networks too
        if options.fold_bn:
            fold_batchnorm(net)
        net.to(memory_format=fmt)
    run: Callable[[torch.Tensor], torch.Tensor] = trunk
    if options.compile:
        run = torch.compile(trunk, options={"freezing": True})
    autocast = (
        (lambda: torch.autocast(device.type, dtype=torch.bfloat16))
        if options.bfloat16
        else contextlib.nullcontext
    )
    # small chunks keep activations in the CPU's caches; a GPU wants whole batches
    chunk = options.trunk_batch if device.type == "cpu" else 0
    fast = FastTrunk(trunk, run, fmt, chunk, autocast, device)
    return TorchEngine(AMNet(fast, head, model_views(head, views)), device)


def build_engine(
    trunk: nn.Module | None, head: AMNetHead | AMNetEnsemble | None, options: RunOptions,
    device: torch.device, size: int = 224, views: bool = False,
) -> Engine:  # fmt: skip
    """An engine for ``options`` and ``size`` x ``size`` inputs (``views``: the model's
    test-time views averaged in); ONNX Runtime exports ``trunk`` + ``head`` into the cache the
    first time unless ``options.onnx_file`` is given."""
    if options.runtime == "onnx":
        from amnet.inference.onnx import onnx_engine

        if device.type != "cpu":
            raise ValueError("runtime 'onnx' runs on the CPU; use --device cpu")
        return onnx_engine(options.onnx_file, trunk, head, size=size, views=views)
    if trunk is None or head is None:
        raise ValueError("the torch runtime needs a trunk and a head")
    return torch_engine(trunk, head, options, device, views)
