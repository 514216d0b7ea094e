"""The kernel prior: descriptor blocks, kernel ridge fit, checkpoints without trunk tensors,
test-time flips (predict, ONNX); the cv variant amnet+kernel is tested in test_cli_train.py."""

import numpy as np
import pytest
import torch
from PIL import Image

import amnet
from amnet.builders import build_descriptor
from amnet.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from amnet.inference.engine import RunOptions
from amnet.model.amnet import AMNetEnsemble
from amnet.model.head import AMNetConfig, AMNetHead
from amnet.model.prior import BLOCKS, Descriptor, KernelPrior, pool
from amnet.training.descriptors import block_sizes, describe_views
from amnet.training.metrics import spearman
from amnet.training.priors import fit_kernel_prior, predict_kernel, ridge_loo


def test_pool_regions_match_a_hand_computation():
    m = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    torch.testing.assert_close(pool(m, "mean"), m.mean((2, 3)).sqrt())
    torch.testing.assert_close(pool(m, "centre"), m[..., 2:6, 2:6].mean((2, 3)).sqrt())
    torch.testing.assert_close(pool(m, "top"), m[..., :4, :].mean((2, 3)).sqrt())
    torch.testing.assert_close(pool(m, "bottom"), m[..., 4:, :].mean((2, 3)).sqrt())
    # odd sizes: top and bottom halves leave the middle row out, the centre keeps it
    m7 = torch.rand(1, 2, 7, 7)
    torch.testing.assert_close(pool(m7, "bottom"), m7[..., 4:, :].mean((2, 3)).sqrt())
    torch.testing.assert_close(pool(m7, "centre"), m7[..., 1:6, 1:6].mean((2, 3)).sqrt())
    with pytest.raises(ValueError, match="region"):
        pool(m, "left")


def test_descriptor_blocks_and_their_sizes(tiny_trunk_name):
    d = build_descriptor(tiny_trunk_name)
    feats = torch.rand(3, 16, 14, 14)
    parts = d.parts(feats)
    assert [p.shape[1] for p in parts] == block_sizes(d, 16) == [16, 16, 16, 16, 8, 8, 5]
    torch.testing.assert_close(d(feats), torch.cat(parts, 1))
    torch.testing.assert_close(parts[0], feats.mean((2, 3)).sqrt())
    probs = parts[-1].exp() - 1e-4  # log(softmax + 1e-4) -> softmax
    torch.testing.assert_close(probs.sum(1), torch.ones(3), atol=1e-5, rtol=0)
    assert not any(p.requires_grad for p in d.parameters())
    assert d.blocks == BLOCKS
    with pytest.raises(ValueError, match="need the trunk's tail"):
        Descriptor(("map_mean", "tail_mean"))
    with pytest.raises(ValueError, match="unknown descriptor blocks"):
        Descriptor(("map_left",))
    assert Descriptor(("map_mean",))(feats).shape == (3, 16)  # no tail needed


def _nonlinear_data(n, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    y = 0.5 + 0.1 * np.cos(1.5 * X[:, 0]) + 0.05 * X[:, 0] * X[:, 1]  # even: no linear trend
    return X, y


def test_kernel_prior_learns_a_nonlinear_function_a_ridge_cannot():
    X, y = _nonlinear_data(300, 0)
    Xt, yt = _nonlinear_data(200, 1)
    prior, loo = fit_kernel_prior(Descriptor(("map_mean",)), X, y, [4])
    got = predict_kernel(prior, Xt)
    w, b, _, _ = ridge_loo(X, y)
    assert loo > 0.8 and spearman(got, yt) > 0.8
    assert spearman(Xt @ w + b, yt) < 0.3
    assert got.min() >= 0 and got.max() <= 1


@pytest.mark.parametrize("kernel", ["rbf", "laplace"])
def test_kernel_score_is_the_kernel_expansion_of_its_buffers(kernel):
    X, y = _nonlinear_data(50, 2)
    prior, _ = fit_kernel_prior(Descriptor(("map_mean",)), X, y, [2, 2], kernel)  # two blocks
    Xt = np.random.default_rng(3).normal(size=(7, 4))
    mu, sd = X.mean(0), X.std(0)
    scale = np.concatenate([1 / ((np.maximum(sd[i:i + 2], 0.1 * sd[i:i + 2].mean()) + 1e-6)
                                 * np.sqrt(2)) for i in (0, 2)])  # fmt: skip
    Z, Zt = (X - mu) * scale, (Xt - mu) * scale
    d = ((Zt[:, None] - Z[None]) ** 2).sum(-1)  # (7, 50)
    d_train = ((Z[:, None] - Z[None]) ** 2).sum(-1)
    if kernel == "laplace":  # exp(-|z - s| / median), not squared
        d, d_train = np.sqrt(d), np.sqrt(d_train)
    k = np.exp(-d / np.median(d_train))
    want = np.clip(k @ prior.coef.double().numpy() + y.mean(), 0, 1)
    np.testing.assert_allclose(predict_kernel(prior, Xt), want, atol=1e-5)
    with pytest.raises(ValueError, match="block sizes"):
        fit_kernel_prior(Descriptor(("map_mean",)), X, y, [3])
    with pytest.raises(ValueError, match="kernel must be one of"):
        fit_kernel_prior(Descriptor(("map_mean",)), X, y, [4], "cosine")


@pytest.fixture
def kernel_checkpoint(tmp_path, tiny_trunk_name):
    """A tiny ensemble (2 heads) + a kernel prior fitted on random maps, saved with tta."""
    torch.manual_seed(0)
    cfg = AMNetConfig(in_channels=16, proj_dim=8, att_dim=8, hidden_size=12, fc_dim=6)
    heads = [AMNetHead(cfg).eval() for _ in range(2)]
    with torch.no_grad():
        for h in heads:  # random heads score everything alike; spread their scores out
            h.fc2.weight.mul_(200.0)
    d = build_descriptor(tiny_trunk_name)
    maps = np.random.default_rng(0).random((40, 16, 14, 14)).astype(np.float32)
    X = describe_views(d, [maps, maps[..., ::-1].copy()])
    y = 0.5 + 0.1 * np.tanh(X[:, 0] - X[:, 0].mean())
    views = ("orig", "flip", "crop4", "crop9")  # the shipped recipe's views
    prior, _ = fit_kernel_prior(d, X, y, block_sizes(d, 16), "laplace", views=views)
    ens = AMNetEnsemble(heads, prior, 0.8).eval()
    path = save_checkpoint(tmp_path / "k.safetensors", ens, trunk=tiny_trunk_name, half=True,
                           views=True)  # fmt: skip
    return path, ens


def test_kernel_checkpoint_round_trip_leaves_the_trunk_tensors_out(kernel_checkpoint):
    from safetensors import safe_open

    path, ens = kernel_checkpoint
    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
        assert f.get_tensor("prior.support").dtype == torch.float16
        assert f.get_tensor("prior.coef").dtype == torch.float32
    assert not any(k.startswith("prior.describe.") for k in keys)
    meta = read_metadata(path)
    assert meta["tta"] is True and meta["prior"]["kind"] == "kernel"
    assert meta["prior"]["blocks"] == list(BLOCKS) and meta["prior"]["kernel"] == "laplace"
    assert meta["prior"]["views"] == ["orig", "flip", "crop4", "crop9"]
    loaded, _ = load_checkpoint(path)
    assert isinstance(loaded.prior, KernelPrior) and loaded.prior.kernel == "laplace"
    assert loaded.prior.views == ("orig", "flip", "crop4", "crop9")
    x = torch.rand(6, 16, 14, 14)
    with torch.inference_mode():
        a, b = ens(x), loaded(x)
    torch.testing.assert_close(b.score, a.score, atol=2e-3, rtol=0)  # float16 heads/support
    torch.testing.assert_close(b.attention, a.attention, atol=2e-3, rtol=0)


def test_int8_support_halves_the_file_and_keeps_the_scores(kernel_checkpoint, tmp_path,
                                                           tiny_trunk_name):  # fmt: skip
    """``support="int8"``: the support vectors are stored as int8 with a step per column,
    decoded on loading; the kernel's squared norms are those of the decoded vectors."""
    from safetensors import safe_open

    half, ens = kernel_checkpoint
    path = save_checkpoint(tmp_path / "k8.safetensors", ens, trunk=tiny_trunk_name, half=True,
                           views=True, support="int8")  # fmt: skip
    with safe_open(str(path), "pt") as f:
        assert "prior.support" not in f.keys()
        q = f.get_tensor("prior.support_int8")
        assert q.dtype == torch.int8 and q.shape == ens.prior.support.shape
    assert path.stat().st_size < half.stat().st_size
    assert read_metadata(path)["prior"]["support"] == "int8"
    loaded, _ = load_checkpoint(path)
    s = loaded.prior.support
    torch.testing.assert_close(loaded.prior.support_sq, (s * s).sum(1))
    step = ens.prior.support.abs().amax(0) / 127
    assert ((s - ens.prior.support).abs() <= step / 2 + 1e-7).all()  # rounding, no more
    x = torch.rand(6, 16, 14, 14)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x).score, ens(x).score, atol=2e-3, rtol=0)
    with pytest.raises(ValueError, match="support must be"):
        save_checkpoint(tmp_path / "k.safetensors", ens, trunk=tiny_trunk_name, support="int4")
    with pytest.raises(ValueError, match="kernel prior"):
        save_checkpoint(tmp_path / "h.safetensors", ens.heads[0], trunk=tiny_trunk_name,
                        support="int8")  # fmt: skip


def test_test_time_flip_scores_an_image_and_its_mirror_alike(kernel_checkpoint, tmp_path,
                                                             monkeypatch):  # fmt: skip
    monkeypatch.setenv("AMNET_HOME", str(tmp_path / "home"))
    path, _ = kernel_checkpoint
    rng = np.random.default_rng(0)
    a = (rng.random((64, 96, 3)) * 255).astype(np.uint8)
    img, mirror = Image.fromarray(a), Image.fromarray(a[:, ::-1].copy())
    p = amnet.load(path)  # the checkpoint says tta
    assert p.views
    r, rm = p.predict([img, mirror])
    assert r.score == pytest.approx(rm.score, abs=1e-5)
    np.testing.assert_allclose(r.attention, rm.attention[..., ::-1], atol=1e-6)
    # by hand: heads on the image and its mirror, the prior on four views' mean descriptor
    from amnet.inference.images import prepare
    from amnet.model.views import apply_view
    from amnet.trunks.registry import create_trunk

    ens, trunk = p.head, create_trunk(read_metadata(path)["trunk"])
    x = prepare(img, p.preprocess)[0][None]  # (1, 3, S, S)
    with torch.inference_mode():
        f = {v: trunk(apply_view(x, v)) for v in ("orig", "flip", "crop4", "crop9")}
        heads = (ens._heads(f["orig"]).score + ens._heads(f["flip"]).score) / 2
        desc = torch.stack([ens.prior.describe(m) for m in f.values()]).mean(0)
        want = 0.2 * heads + 0.8 * ens.prior.score(desc)
    assert r.score == pytest.approx(float(want), abs=1e-5)
    single = amnet.load(path, options=RunOptions(views=False))
    s, sm = single.predict([img, mirror])
    assert abs(s.score - sm.score) > 1e-4  # without flips the two differ: the test can fail
    assert r.score == pytest.approx((s.score + sm.score) / 2, abs=0.05)  # near, not equal
    onnx = amnet.load(path, options=RunOptions(runtime="onnx"))
    assert onnx.predict(img).score == pytest.approx(r.score, abs=1e-5)


def test_views_stacked_into_one_trunk_batch_keep_the_images_apart(kernel_checkpoint, tmp_path,
                                                                  monkeypatch):  # fmt: skip
    """score_images runs the V views of B images as one batch of V * B through the trunk and
    the descriptor: each image must score as it does alone (a wrong split would mix them)."""
    monkeypatch.setenv("AMNET_HOME", str(tmp_path / "home"))
    path, _ = kernel_checkpoint
    rng = np.random.default_rng(1)
    imgs = [Image.fromarray((rng.random((40 + 16 * i, 72, 3)) * 255).astype(np.uint8))
            for i in range(3)]  # fmt: skip
    p = amnet.load(path)
    together = p.predict(imgs, batch_size=3)
    alone = [p.predict(im) for im in imgs]
    scores = [a.score for a in alone]
    assert max(scores) - min(scores) > 1e-3  # the images score differently: mixing shows
    for t, a in zip(together, alone, strict=True):
        assert t.score == pytest.approx(a.score, abs=1e-5)
        np.testing.assert_allclose(t.attention, a.attention, atol=1e-5)


@pytest.mark.parametrize(
    "build, stop", [("resnet50", "layer3"), ("efficientnet_lite2", "stride16")]
)
def test_trunk_then_tail_is_the_whole_classifier(build, stop):
    from amnet.trunks.registry import get_trunk_spec

    torch.manual_seed(0)
    net = get_trunk_spec(build).build().eval()  # random weights: the wiring is what is tested
    x = torch.rand(2, 3, 224, 224)
    with torch.inference_mode():
        y, logits = net.tail()(net.forward_features(x, stop))
        torch.testing.assert_close(logits, net(x))
    assert y.shape[-1] == 7  # the stride-32 map


def test_image_descriptor_renormalises_the_main_trunks_input(tiny_trunk_name):
    from amnet.builders import build_image_descriptor
    from amnet.model.prior import EXTRA_BLOCKS
    from amnet.trunks.registry import Preprocess, create_trunk

    unit = Preprocess(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # main trunk: [0, 1] input
    extra = build_image_descriptor(tiny_trunk_name, EXTRA_BLOCKS, unit)
    raw = torch.rand(2, 3, 224, 224)
    own = (raw - 0.5) / 0.25  # the tiny trunk's own preprocessing
    with torch.inference_mode():
        want = build_descriptor(tiny_trunk_name, EXTRA_BLOCKS)(create_trunk(tiny_trunk_name)(own))
        torch.testing.assert_close(extra(raw), want, atol=1e-5, rtol=1e-5)
    assert extra.blocks == EXTRA_BLOCKS and not any(p.requires_grad for p in extra.parameters())
    with pytest.raises(ValueError, match="wants 224px"):
        build_image_descriptor(tiny_trunk_name, EXTRA_BLOCKS, Preprocess(size=256))


def test_efficientnet_image_descriptor_is_its_whole_classifier():
    """The real EfficientNet-Lite2 as a second trunk: truncating its trunk must leave the tail's
    copy of the shared cut block whole, so the descriptor's log-probabilities are the full
    classifier's (it used to crash: the tail lost the block's depthwise convolution)."""
    from amnet.builders import build_image_descriptor
    from amnet.model.prior import LOGPROB_FLOOR
    from amnet.trunks.registry import get_trunk_spec, load_classifier

    own = get_trunk_spec("efficientnet_lite2").preprocess
    extra = build_image_descriptor("efficientnet_lite2", ("tail_logprob",), own)
    x = torch.rand(2, 3, 224, 224)
    with torch.inference_mode():
        want = torch.log(torch.softmax(load_classifier("efficientnet_lite2")(x), 1) + LOGPROB_FLOOR)
        torch.testing.assert_close(extra(x), want, atol=1e-4, rtol=1e-4)


def test_kernel_prior_with_a_second_trunk_round_trips_and_exports(tiny_trunk_name, tmp_path,
                                                                   monkeypatch):  # fmt: skip
    """A prior whose descriptor appends a second trunk's (here the tiny trunk again, seeing
    the images): the checkpoint leaves both trunks' tensors out, and torch, the reloaded
    checkpoint and ONNX Runtime all score as the descriptor computed by hand says."""
    from safetensors import safe_open

    from amnet.builders import build_image_descriptor
    from amnet.model.prior import EXTRA_BLOCKS
    from amnet.trunks.registry import create_trunk, get_trunk_spec

    monkeypatch.setenv("AMNET_HOME", str(tmp_path / "home"))
    torch.manual_seed(0)
    cfg = AMNetConfig(in_channels=16, proj_dim=8, att_dim=8, hidden_size=12, fc_dim=6)
    heads = [AMNetHead(cfg).eval()]
    trunk = create_trunk(tiny_trunk_name)
    d = build_descriptor(tiny_trunk_name)
    extra = build_image_descriptor(tiny_trunk_name, EXTRA_BLOCKS,
                                   get_trunk_spec(tiny_trunk_name).preprocess)  # fmt: skip
    x = torch.rand(40, 3, 224, 224)
    with torch.inference_mode():
        X = torch.cat([d(trunk(x)), extra(x)], 1).numpy()
    y = 0.5 + 0.1 * np.tanh(X[:, -1] - X[:, -1].mean())  # depends on the extra block
    sizes = block_sizes(d, 16) + [p.shape[1] for p in extra.describe.parts(trunk(x[:1]))]
    prior, _ = fit_kernel_prior(d, X, y, sizes, "laplace", extra)
    ens = AMNetEnsemble(heads, prior, 0.8).eval()
    path = save_checkpoint(tmp_path / "k2.safetensors", ens, trunk=tiny_trunk_name, views=False)
    with safe_open(str(path), "pt") as f:
        assert not any(k.startswith(("prior.describe.", "prior.extra.")) for k in f.keys())
    assert read_metadata(path)["prior"]["extra"] == {"trunk": tiny_trunk_name,
                                                      "blocks": list(EXTRA_BLOCKS)}  # fmt: skip
    xt = torch.rand(3, 3, 224, 224)
    with torch.inference_mode():
        feats = trunk(xt)
        want = 0.2 * ens._heads(feats).score + 0.8 * prior.score(
            torch.cat([d(feats), extra(xt)], 1))  # fmt: skip
        torch.testing.assert_close(ens(feats, xt).score, want)
        with pytest.raises(ValueError, match="pass images"):
            ens(feats)
    p = amnet.load(path)
    got = torch.tensor([r.score for r in p.predict_tensors(xt)])
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    onnx = amnet.load(path, options=RunOptions(runtime="onnx"))
    got = torch.tensor([r.score for r in onnx.predict_tensors(xt)])
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def test_second_trunk_on_fewer_views_than_the_main_descriptor(tiny_trunk_name, tmp_path,
                                                               monkeypatch):  # fmt: skip
    """``extra_views``: the main descriptor is averaged over the prior's three views, the
    second trunk's over the image alone; the checkpoint keeps the extra views, and torch, the
    reloaded checkpoint and ONNX Runtime score as computed by hand."""
    from amnet.builders import build_image_descriptor
    from amnet.model.prior import EXTRA_BLOCKS
    from amnet.model.views import apply_view
    from amnet.trunks.registry import create_trunk, get_trunk_spec

    monkeypatch.setenv("AMNET_HOME", str(tmp_path / "home"))
    torch.manual_seed(0)
    cfg = AMNetConfig(in_channels=16, proj_dim=8, att_dim=8, hidden_size=12, fc_dim=6)
    trunk = create_trunk(tiny_trunk_name)
    d = build_descriptor(tiny_trunk_name)
    extra = build_image_descriptor(tiny_trunk_name, EXTRA_BLOCKS,
                                   get_trunk_spec(tiny_trunk_name).preprocess)  # fmt: skip
    views = ("orig", "flip", "crop4")

    def by_hand(x):  # (B, D): d averaged over the views, extra of the image alone
        main = torch.stack([d(trunk(apply_view(x, v))) for v in views]).mean(0)
        return torch.cat([main, extra(x)], 1)

    x = torch.rand(40, 3, 224, 224)
    with torch.inference_mode():
        X = by_hand(x).numpy()
    y = 0.5 + 0.1 * np.tanh(X[:, -1] - X[:, -1].mean())
    sizes = block_sizes(d, 16) + [p.shape[1] for p in extra.describe.parts(trunk(x[:1]))]
    with pytest.raises(ValueError, match="must be some of views"):
        fit_kernel_prior(d, X, y, sizes, "laplace", extra, ("orig", "flip"),
                         extra_views=("orig", "crop4"))  # fmt: skip
    prior, _ = fit_kernel_prior(d, X, y, sizes, "laplace", extra, views, extra_views=("orig",))
    ens = AMNetEnsemble([AMNetHead(cfg).eval()], prior, 1.0).eval()
    path = save_checkpoint(tmp_path / "k3.safetensors", ens, trunk=tiny_trunk_name, views=True)
    assert read_metadata(path)["prior"]["extra"]["views"] == ["orig"]
    xt = torch.rand(3, 3, 224, 224)
    with torch.inference_mode():
        want = prior.score(by_hand(xt))
        img = {v: apply_view(xt, v) for v in views}
        got = ens.forward_views({v: trunk(img[v]) for v in views}, img).score
        torch.testing.assert_close(got, want)
    assert load_checkpoint(path)[0].prior.extra_views == ("orig",)
    for runtime in ("torch", "onnx"):
        p = amnet.load(path, options=RunOptions(runtime=runtime))
        got = torch.tensor([r.score for r in p.predict_tensors(xt)])
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def test_weighted_kernel_ridge_solves_the_weighted_problem_and_its_leave_one_out():
    """Per-row weights (distilled rows against human-scored ones): the coefficients solve
    (K + alpha W^-1) c = y - bias, all ones is the unweighted fit, and the leave-one-out rho
    that chose alpha is that of refitting without each row."""
    from torch import nn

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 5))
    y = np.tanh(X[:, 0]) + 0.3 * rng.normal(size=40)
    w = np.r_[np.ones(25), np.full(15, 0.3)]
    plain, rho0 = fit_kernel_prior(nn.Identity(), X, y, [5], "laplace")
    ones, rho1 = fit_kernel_prior(nn.Identity(), X, y, [5], "laplace", weights=np.ones(40))
    torch.testing.assert_close(ones.coef, plain.coef, atol=1e-5, rtol=1e-4)
    assert rho1 == pytest.approx(rho0, abs=1e-9) and ones.bias == pytest.approx(plain.bias)
    prior, rho = fit_kernel_prior(nn.Identity(), X, y, [5], "laplace", weights=w)
    z = (X - prior.mean.numpy()) * prior.scale.numpy()
    d = np.sqrt(((z[:, None] - prior.support.numpy()[None]) ** 2).sum(-1))
    K = np.exp(-prior.gamma.item() * d)  # (40, 40) the prior's own kernel
    c, b = prior.coef.double().numpy(), prior.bias.item()
    assert b == pytest.approx(np.average(y, weights=w), abs=1e-6)
    alpha = w * (y - b - K @ c) / c  # the same penalty on every row
    np.testing.assert_allclose(alpha, np.median(alpha), rtol=1e-2)
    a, loo = float(np.median(alpha)), np.empty(40)
    for i in range(40):
        k = np.arange(40) != i
        ci = np.linalg.solve(K[np.ix_(k, k)] + a * np.diag(1 / w[k]), y[k] - b)
        loo[i] = K[i, k] @ ci + b
    assert spearman(loo, y) == pytest.approx(rho, abs=1e-3)
    assert not np.allclose(prior.coef.numpy(), plain.coef.numpy(), atol=1e-3)
