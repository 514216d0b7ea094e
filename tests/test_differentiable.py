"""``Predictor.as_module()`` (amnet.inference.differentiable): the score as a differentiable
function of the pixels — equal to ``predict`` on the same tensor, gradients that finite
differences confirm, through the kernel prior and the views, and a frozen model."""

import pytest
import torch
from conftest import TINY_CFG

import amnet
from amnet.checkpoint import load_checkpoint, save_checkpoint
from amnet.inference.differentiable import ScoreModule
from amnet.inference.engine import RunOptions
from amnet.model.amnet import AMNet, AMNetEnsemble, model_views
from amnet.model.head import AMNetHead

VIEWS = ("orig", "flip", "crop4", "crop9")  # the shipped default's


def _images(seed: int, *shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def in_float64(m: ScoreModule) -> ScoreModule:
    """``m`` in float64 but for its kernel prior, which scores in float32 whatever its input
    (``KernelPrior.score``): its buffers stay float32."""
    m = m.double()
    prior = getattr(m.model.head, "prior", None)
    for name in ("mean", "scale", "support", "support_sq", "coef", "bias", "gamma"):
        if prior is not None:
            prior._buffers[name] = prior._buffers[name].float()
    return m


@pytest.fixture(scope="module")
def kernel_checkpoint(tmp_path_factory, tiny_trunk_name):
    """The default's recipe in miniature: 2 heads + a Laplacian kernel prior (0.8) on the
    tiny trunk's descriptor of 40 noise images, averaged over the four views; images like
    those lie among its support, so the prior's gradient is not negligible."""
    from amnet.builders import build_descriptor
    from amnet.model.views import apply_view
    from amnet.training.descriptors import block_sizes
    from amnet.training.priors import fit_kernel_prior
    from amnet.trunks.registry import create_trunk

    torch.manual_seed(0)
    heads = [AMNetHead(TINY_CFG).eval() for _ in range(2)]
    d, trunk = build_descriptor(tiny_trunk_name), create_trunk(tiny_trunk_name)
    x = (_images(100, 40, 3, 224, 224) - 0.5) / 0.25  # the tiny trunk's preprocessing
    with torch.inference_mode():
        X = torch.stack([d(trunk(apply_view(x, v))) for v in VIEWS]).mean(0).numpy()
    y = 0.5 + 0.1 * torch.tanh(torch.from_numpy(X[:, 0] - X[:, 0].mean()) * 10).numpy()
    prior, _ = fit_kernel_prior(d, X, y, block_sizes(d, 16), "laplace", views=VIEWS)
    ens = AMNetEnsemble(heads, prior, 0.8).eval()
    path = tmp_path_factory.mktemp("kernel") / "k.safetensors"
    return save_checkpoint(path, ens, trunk=tiny_trunk_name, views=True)


@pytest.fixture
def kernel_predictor(kernel_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("AMNET_HOME", str(tmp_path / "home"))
    return amnet.load(kernel_checkpoint)


@pytest.mark.parametrize("views, space", [(True, "image"), (False, "image"), (True, "features")])
def test_scores_equal_predict_on_the_same_tensor(kernel_checkpoint, views, space, tmp_path,
                                                 monkeypatch):  # fmt: skip
    monkeypatch.setenv("AMNET_HOME", str(tmp_path / "home"))
    path = kernel_checkpoint
    if space == "features":  # the views made of the trunk's map (one trunk pass)
        ens, _ = load_checkpoint(path)
        ens.view_space = "features"
        path = save_checkpoint(tmp_path / "f.safetensors", ens, trunk="tiny-test", views=True)
    p = amnet.load(path, options=RunOptions(views=views))
    m = p.as_module()
    assert m.model.views == (VIEWS if views else ("orig",)) and m.model.space == space
    seen = []
    for x in (_images(0, 2, 3, 50, 70), _images(1, 1, 3, 300, 260), _images(2, 1, 3, 224, 224)):
        want = torch.tensor([r.score for r in p.predict(x)])  # one (3, H, W) image each
        with torch.no_grad():
            got = m(x)
        assert got.shape == (len(x),)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)  # the issue asks for 2e-3
        seen += want.tolist()
    assert max(seen) - min(seen) > 5e-4  # the images score differently: the check can fail


def test_gradient_matches_finite_differences(tiny_checkpoint):
    """float64 gradcheck of the whole path (resize, normalise, trunk, head, both views) on a
    small image."""
    m = amnet.load(tiny_checkpoint, options=RunOptions(views=True)).as_module().double()
    x = _images(3, 1, 3, 12, 10).double().requires_grad_(True)
    assert torch.autograd.gradcheck(m, (x,), eps=1e-6, atol=1e-6, rtol=1e-3, fast_mode=True)


def test_gradient_through_the_kernel_prior_and_crops_matches_finite_differences(
    kernel_predictor,
):
    """Central differences (step 1e-3) along the gradient and along random directions. The
    prior scores in float32 (``KernelPrior.score``), the rest runs in float64 here: float32
    rounding limits the agreement along random directions (small derivatives) to a few %."""
    m = in_float64(kernel_predictor.as_module())
    x = _images(4, 1, 3, 40, 36).double().requires_grad_(True)
    (g,) = torch.autograd.grad(m(x).sum(), x)
    directions = [(g / g.abs().max(), 1e-2)] + [(_images(10 + k, *x.shape).double() - 0.5, 5e-2)
                                                for k in range(2)]  # fmt: skip
    for v, rel in directions:
        with torch.no_grad():
            fd = (m(x + 1e-3 * v) - m(x - 1e-3 * v)).sum() / 2e-3
        assert float((g * v).sum()) == pytest.approx(float(fd), rel=rel)


def test_gradient_with_a_kernel_prior_is_finite_nonzero_and_has_the_priors_part(
    kernel_predictor,
):
    m = kernel_predictor.as_module()
    x = _images(5, 2, 3, 64, 80).requires_grad_(True)
    (g,) = torch.autograd.grad(m(x).sum(), x)
    assert torch.isfinite(g).all() and g.abs().max() > 0
    ens = m.model.head
    heads_only = AMNet(m.model.trunk, AMNetEnsemble(list(ens.heads)), m.model.views)
    heads = ScoreModule(heads_only, kernel_predictor.preprocess)
    (gh,) = torch.autograd.grad(heads(x).sum(), x)
    prior_part = g - (1 - ens.prior_mix) * gh  # = prior_mix * d(prior)/dx
    assert prior_part.norm() > 1e-3 * g.norm()  # the kernel prior is differentiated too


def test_the_model_is_frozen_and_stays_in_eval_mode(kernel_predictor):
    m = kernel_predictor.as_module()
    x = _images(6, 2, 3, 48, 48).requires_grad_(True)
    before = m(x)
    m.train()  # cannot undo the lock: no dropout, no BatchNorm statistics updated
    assert not any(mod.training for mod in m.modules())
    after = m(x)
    after.sum().backward()
    torch.testing.assert_close(after, before, atol=0, rtol=0)
    assert all(not q.requires_grad and q.grad is None for q in m.parameters())
    assert len(list(m.parameters())) > 10 and x.grad is not None
    assert {k for k, _ in m.named_buffers()} >= {"mean", "std"}


def test_any_size_shape_errors_and_onnx(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("AMNET_HOME", str(tmp_path / "home"))
    m = amnet.load(tiny_checkpoint).as_module()
    for shape in ((1, 3, 7, 400), (3, 3, 224, 224), (2, 3, 500, 300)):
        assert m(_images(7, *shape)).shape == (shape[0],)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        m(_images(8, 3, 32, 32))
    from amnet.inference.predictor import Predictor
    from amnet.trunks.registry import Preprocess

    exported = Predictor(None, None, Preprocess(), engine=lambda x: x)  # as from an .onnx file
    with pytest.raises(ValueError, match="ONNX"):
        exported.as_module()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_the_module_follows_the_predictor(kernel_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("AMNET_HOME", str(tmp_path / "home"))
    p = amnet.load(kernel_checkpoint, device="cuda")
    m = p.as_module()
    x = _images(9, 2, 3, 64, 64)
    xc = x.cuda().requires_grad_(True)
    m(xc).sum().backward()
    assert xc.grad.is_cuda and torch.isfinite(xc.grad).all()
    want = torch.tensor([r.score for r in p.predict(x)])
    torch.testing.assert_close(m(x.cuda()).detach().cpu(), want, atol=1e-3, rtol=0)
    assert model_views(p.head, True) == m.model.views


def test_the_guidance_example_moves_the_score_both_ways_within_its_budget(kernel_predictor):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "examples" / "guidance.py"
    spec = importlib.util.spec_from_file_location("guidance_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    m = kernel_predictor.as_module()
    x = (_images(20, 2, 3, 64, 48) * 255).round() / 255  # 8-bit images
    eps = torch.tensor([2 / 255, 8 / 255])
    with torch.no_grad():
        s0 = m(x)
    for sign in (1.0, -1.0):
        y = example.edit(m, x, eps, steps=5, sign=sign)
        assert ((y - x).abs() <= eps.view(-1, 1, 1, 1) + 1e-6).all() and (y - x).abs().max() > 0
        torch.testing.assert_close(y * 255, (y * 255).round(), atol=1e-4, rtol=0)  # 8 bits
        with torch.no_grad():
            moved = (m(y) - s0) * sign
        assert (moved > 0).all() and moved[1] > moved[0]  # the larger budget moves it further
