import pytest
import torch

from amnet.checkpoint import load_checkpoint, read_metadata, save_checkpoint


def test_round_trip_gives_identical_outputs(tmp_path, tiny_head, tiny_trunk_name):
    path = save_checkpoint(
        tmp_path / "m.safetensors", tiny_head, trunk=tiny_trunk_name, metrics={"rho": 0.5}
    )
    head, meta = load_checkpoint(path)
    assert meta["trunk"] == tiny_trunk_name and meta["metrics"] == {"rho": 0.5}
    assert meta["model"] == tiny_head.cfg.to_dict()
    feats = torch.randn(4, tiny_head.cfg.in_channels, 14, 14)
    a, b = tiny_head.eval()(feats), head(feats)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


def test_float16_checkpoint_is_smaller_and_close(tmp_path, tiny_head, tiny_trunk_name):
    full = save_checkpoint(tmp_path / "f.safetensors", tiny_head, trunk=tiny_trunk_name)
    half = save_checkpoint(tmp_path / "h.safetensors", tiny_head, trunk=tiny_trunk_name, half=True)
    assert half.stat().st_size < 0.75 * full.stat().st_size
    head, _ = load_checkpoint(half)
    assert all(p.dtype == torch.float32 for p in head.parameters())
    feats = torch.randn(4, tiny_head.cfg.in_channels, 14, 14)
    a, b = tiny_head.eval()(feats), head(feats)
    torch.testing.assert_close(b.score, a.score, atol=2e-3, rtol=0)
    torch.testing.assert_close(b.attention, a.attention, atol=2e-3, rtol=0)
    assert not torch.equal(a.score, b.score)  # really rounded to float16


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    (tmp_path / "x.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="not a safetensors checkpoint"):
        read_metadata(tmp_path / "x.safetensors")
