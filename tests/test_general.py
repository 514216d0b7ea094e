"""The general-domain pieces: views made of the trunk's map (one trunk pass), a kernel prior that
fits the residual over a base model's rescaled score (ResMem's head) and falls back to it far
from its training images, distillation rows, checkpoints and ONNX with both."""

import numpy as np
import pytest
import torch
from PIL import Image

import amnet
from amnet.builders import BASES, build_descriptor
from amnet.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from amnet.inference.engine import RunOptions
from amnet.model.amnet import AMNet, AMNetEnsemble, average_views, model_views
from amnet.model.head import AMNetConfig, AMNetHead
from amnet.model.resmem import ResMemHead
from amnet.model.views import apply_view
from amnet.training.descriptors import block_sizes, map_view_features
from amnet.training.priors import fit_kernel_prior, predict_kernel
from amnet.trunks.registry import create_trunk

VIEWS = ("orig", "flip", "crop4", "crop9")


def tiny_resmem() -> ResMemHead:
    """A ResMem-shaped head for the tiny trunk (5 logits), seeded: same weights every build."""
    shapes = {"conv1.weight": (8, 3, 11, 11), "conv2.weight": (8, 4, 5, 5),
              "conv3.weight": (8, 8, 3, 3), "conv4.weight": (8, 4, 3, 3),
              "conv5.weight": (4, 4, 3, 3), "fc6.weight": (16, 4 * 36 + 5)}  # fmt: skip
    shapes.update({f"fc{i}.weight": (16, 16) for i in range(7, 12)})
    shapes["fc12.weight"] = (1, 16)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        head = ResMemHead(shapes)
        with torch.no_grad():
            head.fc12.weight.mul_(30.0)  # spread its scores out
    return head.eval().requires_grad_(False)


BASES["tiny-resmem"] = tiny_resmem


@pytest.fixture
def general_checkpoint(tmp_path, tiny_trunk_name):
    """Heads + a kernel prior on views of the map, fitted on the residual over the tiny base."""
    torch.manual_seed(0)
    cfg = AMNetConfig(in_channels=16, proj_dim=8, att_dim=8, hidden_size=12, fc_dim=6)
    heads = [AMNetHead(cfg).eval() for _ in range(2)]
    d = build_descriptor(tiny_trunk_name)
    trunk = create_trunk(tiny_trunk_name)
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.random((40, 3, 224, 224)).astype(np.float32))
    with torch.inference_mode():
        maps = trunk(images).numpy()
    X, logits = map_view_features(d, maps, VIEWS)
    base = BASES["tiny-resmem"]()
    base.name = "tiny-resmem"
    with torch.inference_mode():
        r = base(images, torch.from_numpy(logits)).double().numpy()
    y = 0.5 + 0.1 * np.tanh(X[:, 0] - X[:, 0].mean()) + 0.3 * (r - r.mean())
    prior, _ = fit_kernel_prior(d, X, y, block_sizes(d, 16), "laplace", views=VIEWS,
                                base=(base, r, 0.3, 0.5 - 0.3 * r.mean()))  # fmt: skip
    ens = AMNetEnsemble(heads, prior, 0.8, view_space="features").eval()
    path = save_checkpoint(tmp_path / "g.safetensors", ens, trunk=tiny_trunk_name, views=True)
    return path, ens, trunk


def test_views_of_the_map_run_the_trunk_once_and_match_a_hand_computation(general_checkpoint):
    path, ens, trunk = general_checkpoint
    calls = []
    hook = trunk.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    x = torch.rand(3, 3, 224, 224)
    with torch.inference_mode():
        got = AMNet(trunk, ens, model_views(ens, True))(x)  # space: the ensemble's
        assert calls == [3]  # one pass over the 3 images, not 4 views x 3
        maps = trunk(x)
        heads = [average_views([h(maps), h(maps.flip(-1))], [False, True]) for h in ens.heads]
        desc = torch.stack([ens.prior.describe(apply_view(maps, v)) for v in VIEWS]).mean(0)
        logits = ens.prior.describe.forward_with_logits(maps)[1]
        base = 0.3 * ens.prior.base(x, logits) + ens.prior.base_shift
        prior = ens.prior.score(desc, base)
        alone = ens.prior.describe(maps)
    hook.remove()
    assert (desc - alone).abs().max() > 1e-3  # the map's views change the descriptor
    want = 0.2 * torch.stack([h.score for h in heads]).mean(0) + 0.8 * prior
    torch.testing.assert_close(got.score, want, atol=1e-6, rtol=0)
    torch.testing.assert_close(got.attention,
                               torch.stack([h.attention for h in heads]).mean(0))  # fmt: skip


def test_far_from_its_training_images_the_prior_falls_back_to_the_base(general_checkpoint):
    _, ens, _ = general_checkpoint
    prior = ens.prior
    far = prior.mean + 1e3 / prior.scale  # scaled distance ~1e3 x the median: kernel ~ 0
    base = torch.tensor([0.2, 0.5, 0.7])
    with torch.inference_mode():
        got = prior.score(far.expand(3, -1), base)
    torch.testing.assert_close(got, (base + prior.bias).clamp(0, 1), atol=1e-6, rtol=0)
    assert abs(prior.bias.item()) < 0.05  # the mean residual: the base is what is left


def test_general_checkpoint_round_trip_predict_and_onnx(general_checkpoint, tmp_path,
                                                        monkeypatch):  # fmt: skip
    monkeypatch.setenv("AMNET_HOME", str(tmp_path / "home"))
    path, ens, trunk = general_checkpoint
    meta = read_metadata(path)
    assert meta["view_space"] == "features" and meta["prior"]["base"] == "tiny-resmem"
    loaded, _ = load_checkpoint(path)
    assert loaded.view_space == "features" and loaded.prior.base is not None
    from safetensors.torch import load_file

    assert not [k for k in load_file(str(path)) if k.startswith("prior.base.")]  # not stored
    img = Image.fromarray((np.random.default_rng(2).random((90, 120, 3)) * 255).astype(np.uint8))
    got = amnet.load(path).predict(img)
    plain = amnet.load(path, options=RunOptions(fold_bn=False, channels_last=False))
    assert got.score == pytest.approx(plain.predict(img).score, abs=1e-5)
    onnx = amnet.load(path, options=RunOptions(runtime="onnx"))
    assert onnx.predict(img).score == pytest.approx(got.score, abs=1e-5)


def test_residual_fit_with_distillation_rows(tiny_trunk_name):
    """Distilled rows (targets: a teacher on the base's scale, rescaled) join the fit but never
    choose the penalty; the prior then follows the teacher near them."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(120, 4))
    r = 0.5 + 0.2 * np.tanh(X[:, 1])  # the base
    y = 0.6 + 0.1 * np.cos(1.5 * X[:, 0]) + 0.5 * (r - 0.5)
    d = build_descriptor(tiny_trunk_name, ("map_mean",))
    base = torch.nn.Identity()  # stands in; scores come as r below
    prior, loo = fit_kernel_prior(d, X, y, [4], "laplace", base=(base, r, 0.5, 0.35),
                                  rows=np.arange(80))  # fmt: skip
    assert prior.base_scale.item() == 0.5 and prior.base_shift.item() == pytest.approx(0.35)
    pred = predict_kernel(prior, X[80:], 0.5 * r[80:] + 0.35)
    from amnet.training.metrics import spearman

    assert loo > 0.5 and spearman(pred, y[80:]) > 0.5


def test_base_as_a_descriptor_block_round_trips(tmp_path, tiny_trunk_name, monkeypatch):
    """base_use="block": the base's raw score is the descriptor's last column; saved, loaded,
    run by AMNet and by ONNX Runtime alike."""
    monkeypatch.setenv("AMNET_HOME", str(tmp_path / "home"))
    torch.manual_seed(0)
    cfg = AMNetConfig(in_channels=16, proj_dim=8, att_dim=8, hidden_size=12, fc_dim=6)
    heads = [AMNetHead(cfg).eval()]
    d, trunk = build_descriptor(tiny_trunk_name), create_trunk(tiny_trunk_name)
    images = torch.from_numpy(np.random.default_rng(3).random((30, 3, 224, 224)).astype("f4"))
    with torch.inference_mode():
        X, logits = map_view_features(d, trunk(images).numpy(), VIEWS)
    base = BASES["tiny-resmem"]()
    base.name = "tiny-resmem"
    with torch.inference_mode():
        r = base(images, torch.from_numpy(logits)).double().numpy()
    Xb = np.hstack([X, r[:, None]])
    y = (
        0.5 + 0.1 * (r - r.mean()) / r.std()
    )  # the base's score is what matters: the block carries it
    prior, _ = fit_kernel_prior(d, Xb, y, [*block_sizes(d, 16), 1], "laplace", views=VIEWS,
                                base=(base, r, 1.0, 0.0), base_use="block")  # fmt: skip
    ens = AMNetEnsemble(heads, prior, 0.8, view_space="features").eval()
    path = save_checkpoint(tmp_path / "b.safetensors", ens, trunk=tiny_trunk_name, views=True)
    assert read_metadata(path)["prior"]["base_use"] == "block"
    loaded, _ = load_checkpoint(path)
    x = images[:4]
    with torch.inference_mode():
        got = AMNet(trunk, loaded, model_views(loaded, True))(x).score
        maps = trunk(x)
        desc = torch.stack([d(apply_view(maps, v)) for v in VIEWS]).mean(0)
        rr = base(x, d.forward_with_logits(maps)[1])
        p = predict_kernel(prior, np.hstack([desc.numpy(), rr.numpy()[:, None]]))
        h = average_views([heads[0](maps), heads[0](maps.flip(-1))], [False, True]).score
    np.testing.assert_allclose(got.numpy(), 0.2 * h.numpy() + 0.8 * p, atol=1e-5)
    assert np.std(p) > 0.01 and np.corrcoef(p, rr.numpy())[0, 1] > 0.5  # the block carries r
    img = Image.fromarray((np.random.default_rng(4).random((64, 80, 3)) * 255).astype(np.uint8))
    s = amnet.load(path).predict(img).score
    assert amnet.load(path, options=RunOptions(runtime="onnx")).predict(img).score == (
        pytest.approx(s, abs=1e-5)
    )


def test_teacher_with_views_of_the_image(tmp_path, tiny_trunk_name):
    """A base as the teacher of distilled photos, the prior's views made of the image (a trunk
    pass each, as the default): the descriptors average the image views' caches, the base
    scores the image itself, and the prior keeps no base; a base at inference refuses."""
    from amnet.training.descriptors import prior_features
    from amnet.training.priors import KernelDescriptors

    rng = np.random.default_rng(3)
    paths = []
    for i in range(30):
        p = tmp_path / f"{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (64 + i, 80, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    root = tmp_path / "cache"
    kd = KernelDescriptors(tiny_trunk_name, paths, VIEWS, root=root, base="tiny-resmem",
                           space="image", log=lambda m: None)  # fmt: skip
    X, _ = prior_features(kd.describe, tiny_trunk_name, paths, VIEWS, root=root,
                          log=lambda m: None)  # fmt: skip
    np.testing.assert_allclose(kd.X, X, rtol=1e-6)
    assert kd.r.shape == (30,) and np.ptp(kd.r) > 0
    y = 0.5 + 0.1 * np.tanh(X[:20, 0] - X[:20, 0].mean())
    teacher = (paths[20:], kd.r[20:])
    prior, _ = kd.fit(paths[:20], y, scale="moments", distil=teacher, use="teacher")
    assert prior.base is None and prior.views == VIEWS and prior.support.shape[0] == 30
    with pytest.raises(ValueError, match="views made of the map"):
        kd.fit(paths[:20], y, distil=teacher, use="residual")
    # the distilled rows' weight, chosen by leave-one-out rho on the human-scored rows
    fits = {w: kd.fit(paths[:20], y, scale="moments", distil=teacher, use="teacher", weight=w)
            for w in (0.1, 1.0, 10.0)}  # fmt: skip
    best, rho, w = kd.fit_weighted(paths[:20], y, (0.1, 1.0, 10.0), scale="moments",
                                   distil=teacher, use="teacher")  # fmt: skip
    assert rho == max(r for _, r in fits.values()) == fits[w][1]
    torch.testing.assert_close(best.coef, fits[w][0].coef)
    torch.testing.assert_close(fits[1.0][0].coef, prior.coef)  # weight 1: the unweighted fit
    assert not torch.allclose(fits[0.1][0].coef, fits[10.0][0].coef)
