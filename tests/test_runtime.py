"""Speed options (amnet.inference.engine, amnet.inference.onnx): each gives the plain float32
scores within a tolerance, on the tiny trunk; ONNX export, cache and ``--runtime onnx``
through the CLI."""

import json

import numpy as np
import pytest
import torch
from torch import nn

import amnet
from amnet.cli.main import main
from amnet.inference.engine import RunOptions, fold_batchnorm
from amnet.trunks.resnet import ResNet

PLAIN = RunOptions(channels_last=False, fold_bn=False, trunk_batch=0)


def _randomise_bn(net: nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.1)


def test_fold_batchnorm_keeps_the_function_of_a_resnet():
    torch.manual_seed(0)
    net = ResNet((1, 1, 1, 1)).eval()
    _randomise_bn(net)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        want = net.forward_features(x, "layer3")
        n = fold_batchnorm(net)
        got = net.forward_features(x, "layer3")
    assert n == 1 + 4 * 3 + 4  # stem, three per bottleneck, one per downsample
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_fold_batchnorm_leaves_untraceable_modules_alone():
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

        def forward(self, x):
            return self.bn(self.conv(x)) if x.sum() > 0 else x  # data-dependent: not traceable

    m = Branchy().eval()
    assert fold_batchnorm(m) == 0 and isinstance(m.bn, nn.BatchNorm2d)


def _scores(predictor, paths):
    return np.array([r.score for r in predictor.predict(paths)])


@pytest.mark.parametrize(
    "options, atol",
    [
        (RunOptions(), 1e-5),  # the default: folded BatchNorm + channels-last
        (RunOptions(channels_last=True, fold_bn=False), 1e-5),
        (RunOptions(trunk_batch=2), 1e-5),  # 5 images: chunks of 2, 2 and 1
        (RunOptions(bfloat16=True), 2e-2),  # bf16 keeps 8 bits of mantissa
        (RunOptions(runtime="onnx"), 1e-5),
    ],
    ids=["default", "channels_last", "trunk_batch", "bfloat16", "onnx"],
)
def test_options_give_the_plain_scores(options, atol, tiny_checkpoint, photo_dir, monkeypatch,
                                       tmp_path):  # fmt: skip
    monkeypatch.setenv("AMNET_HOME", str(tmp_path / "home"))
    paths = sorted(str(p) for p in photo_dir.iterdir())
    want = _scores(amnet.load(tiny_checkpoint, options=PLAIN), paths)
    got = _scores(amnet.load(tiny_checkpoint, options=options), paths)
    assert np.ptp(want) > 1e-4  # the images get different scores, so the check means something
    np.testing.assert_allclose(got, want, rtol=0, atol=atol)


def test_run_options_are_validated():
    with pytest.raises(ValueError, match="unknown runtime"):
        RunOptions(runtime="tensorrt")
    with pytest.raises(ValueError, match="not with runtime 'onnx'"):
        RunOptions(runtime="onnx", bfloat16=True)
    with pytest.raises(ValueError, match="needs runtime 'onnx'"):
        RunOptions(onnx_file="x.onnx")
    with pytest.raises(ValueError, match="trunk_batch"):
        RunOptions(trunk_batch=-1)


def test_onnx_export_and_predict_through_the_cli(tiny_checkpoint, photo_dir, tmp_path, capsys,
                                                 monkeypatch):  # fmt: skip
    home = tmp_path / "home"
    monkeypatch.setenv("AMNET_HOME", str(home))
    onnx_file = tmp_path / "m.onnx"
    assert main(["export", "--onnx", str(onnx_file), "--model", str(tiny_checkpoint)]) == 0
    err = capsys.readouterr().err
    assert "wrote" in err and "licence: test only" in err
    assert float(err.split("<= ")[1].split()[0].rstrip(";")) < 1e-5

    runs = {
        "torch": ["--model", str(tiny_checkpoint)],
        "file": ["--model", str(onnx_file)],
        "cached": ["--model", str(tiny_checkpoint), "--runtime", "onnx"],
    }
    scores = {}
    for name, extra in runs.items():
        out = tmp_path / f"{name}.jsonl"
        assert main(["predict", str(photo_dir), "--out", str(out), *extra]) == 0
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(rows) == 5 and all(len(r["step_scores"]) == 3 for r in rows)
        scores[name] = np.array([r["score"] for r in rows])
    np.testing.assert_allclose(scores["file"], scores["torch"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(scores["cached"], scores["torch"], rtol=0, atol=1e-5)

    cached = list((home / "onnx").glob("*.onnx"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    amnet.load(tiny_checkpoint, options=RunOptions(runtime="onnx"))  # reuses the file
    assert [p.stat().st_mtime_ns for p in (home / "onnx").glob("*.onnx")] == [stamp]


def test_onnx_cache_is_keyed_on_the_weights(tiny_trunk_name, tiny_head, monkeypatch, tmp_path):
    from amnet.inference.onnx import cached_export
    from amnet.trunks.registry import create_trunk

    monkeypatch.setenv("AMNET_HOME", str(tmp_path))
    trunk = create_trunk(tiny_trunk_name)
    a = cached_export(trunk, tiny_head)
    with torch.no_grad():
        tiny_head.fc2.bias.add_(0.1)
    b = cached_export(trunk, tiny_head)
    assert a != b and a.is_file() and b.is_file()


def test_onnx_model_file_rejects_torch_options_and_foreign_files(tmp_path, tiny_checkpoint):
    onnx_file = tmp_path / "m.onnx"
    assert main(["export", "--onnx", str(onnx_file), "--model", str(tiny_checkpoint),
                 "--no-check"]) == 0  # fmt: skip
    with pytest.raises(ValueError, match="torch options"):
        amnet.load(onnx_file, options=RunOptions(bfloat16=True))
    import onnx

    bare = onnx.load(str(onnx_file))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    with pytest.raises(ValueError, match="no metadata"):
        amnet.load(tmp_path / "bare.onnx")
