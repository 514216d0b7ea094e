import pytest
import torch

from amnet.model.head import AMNetConfig, AMNetHead

CFG = AMNetConfig(in_channels=32, proj_dim=16, att_dim=8, hidden_size=24, fc_dim=12)


@pytest.mark.parametrize("steps", [0, 1, 3, 5])
@pytest.mark.parametrize("attention", [True, False])
def test_shapes_attention_sums_and_no_nan(steps, attention):
    torch.manual_seed(0)
    head = AMNetHead(AMNetConfig(**{**CFG.to_dict(), "steps": steps, "attention": attention}))
    out = head.eval()(torch.randn(4, 32, 14, 14))
    assert out.score.shape == (4,)
    assert out.step_scores.shape == (4, steps)
    assert out.attention.shape == (4, steps, 14, 14)
    assert torch.isfinite(out.score).all() and torch.isfinite(out.attention).all()
    if steps:
        torch.testing.assert_close(out.attention.sum((2, 3)), torch.ones(4, steps))
        torch.testing.assert_close(out.score, out.step_scores.mean(1))


def test_no_attention_is_uniform():
    head = AMNetHead(AMNetConfig(**{**CFG.to_dict(), "attention": False})).eval()
    att = head(torch.randn(2, 32, 7, 9)).attention
    torch.testing.assert_close(att, torch.full_like(att, 1 / 63))


def test_attention_depends_on_the_image():
    torch.manual_seed(1)
    head = AMNetHead(CFG).eval()
    a = head(torch.randn(2, 32, 14, 14)).attention
    assert not torch.allclose(a[0], a[1])
    assert a.std() > 0


def test_every_head_parameter_gets_a_gradient():
    torch.manual_seed(0)
    head = AMNetHead(CFG).train()
    out = head(torch.randn(4, 32, 14, 14))
    (out.raw.pow(2).mean() + out.attention.pow(2).mean()).backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_target_normalisation_round_trip():
    cfg = AMNetConfig(**{**CFG.to_dict(), "target_mean": 0.6, "target_scale": 4.0})
    head = AMNetHead(cfg).eval()
    out = head(torch.randn(3, 32, 14, 14))
    torch.testing.assert_close(out.score, out.raw / 4.0 + 0.6)


@pytest.mark.parametrize(
    "bad", [{"steps": -1}, {"hidden_size": 0}, {"dropout_fc": 1.0}, {"target_scale": 0.0}]
)
def test_config_is_validated(bad):
    with pytest.raises(ValueError):
        AMNetConfig(**bad)


def test_config_from_dict_rejects_unknown_fields():
    with pytest.raises(ValueError, match="unknown"):
        AMNetConfig.from_dict({"steps": 3, "bogus": 1})


def test_ensemble_averages_heads_and_round_trips(tmp_path):
    from conftest import _tiny_spec

    from amnet.checkpoint import load_checkpoint, save_checkpoint
    from amnet.model.amnet import AMNetEnsemble

    torch.manual_seed(0)
    cfg = AMNetConfig(**{**CFG.to_dict(), "in_channels": 16})
    heads = [AMNetHead(cfg).eval() for _ in range(3)]
    ens = AMNetEnsemble(heads).eval()
    x = torch.randn(2, 16, 14, 14)
    out = ens(x)
    torch.testing.assert_close(out.score, torch.stack([h(x).score for h in heads]).mean(0))
    torch.testing.assert_close(out.attention.sum((2, 3)), torch.ones(2, 3))
    path = save_checkpoint(tmp_path / "e.safetensors", ens, trunk=_tiny_spec().name)
    loaded, meta = load_checkpoint(path)
    assert isinstance(loaded, AMNetEnsemble) and len(meta["ensemble"]) == 3
    torch.testing.assert_close(loaded(x).score, out.score, rtol=0, atol=0)


def test_ensemble_with_a_linear_prior_blends_scores_not_attention(tmp_path):
    from conftest import _tiny_spec

    from amnet.checkpoint import load_checkpoint, save_checkpoint
    from amnet.model.amnet import AMNetEnsemble
    from amnet.model.prior import LinearPrior

    torch.manual_seed(0)
    cfg = AMNetConfig(**{**CFG.to_dict(), "in_channels": 16})
    heads = [AMNetHead(cfg).eval() for _ in range(2)]
    prior = LinearPrior(16)
    prior.weight.normal_(0, 4)
    prior.bias.fill_(0.3)
    ens = AMNetEnsemble(heads, prior, 0.25).eval()
    x = torch.randn(32, 16, 14, 14)
    plain = AMNetEnsemble(heads).eval()(x)
    p = (x.mean((2, 3)) @ prior.weight + 0.3).clamp(0, 1)  # (B,)
    assert ((p == 0) | (p == 1)).any() and ((p > 0) & (p < 1)).any()  # both cases covered
    out = ens(x)
    torch.testing.assert_close(out.score, 0.75 * plain.score + 0.25 * p)
    torch.testing.assert_close(out.step_scores, 0.75 * plain.step_scores + 0.25 * p[:, None])
    torch.testing.assert_close(out.attention, plain.attention)
    path = save_checkpoint(tmp_path / "p.safetensors", ens, trunk=_tiny_spec().name, half=True)
    loaded, meta = load_checkpoint(path)
    assert meta["prior_mix"] == 0.25 and loaded.prior is not None
    torch.testing.assert_close(loaded.prior.bias, prior.bias, rtol=0, atol=0)  # kept float32
    with pytest.raises(ValueError, match="prior"):
        AMNetEnsemble(heads, prior, 0.0)
    with pytest.raises(ValueError, match="prior"):
        AMNetEnsemble(heads, None, 0.5)
    with pytest.raises(ValueError, match="prior"):
        AMNetEnsemble(heads, prior, 1.5)
    # prior_mix=1: the score is the prior's, every step too; the heads give the attention
    only = AMNetEnsemble(heads, prior, 1.0).eval()(x)
    torch.testing.assert_close(only.score, p)
    torch.testing.assert_close(only.step_scores, p[:, None].expand(-1, cfg.steps))
    torch.testing.assert_close(only.attention, plain.attention)
