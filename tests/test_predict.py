"""The Python API: ``amnet.load(...).predict`` on paths, PIL images, arrays, tensors, lists."""

import numpy as np
import pytest
import torch
from PIL import Image

import amnet


@pytest.fixture
def predictor(tiny_checkpoint):
    return amnet.load(tiny_checkpoint, batch_size=2)


@pytest.fixture
def image(tmp_path):
    rng = np.random.default_rng(0)
    a = (rng.random((50, 70, 3)) * 255).astype(np.uint8)
    Image.fromarray(a).save(tmp_path / "a.png")  # lossless: every form below is the same picture
    return tmp_path / "a.png", a


def test_every_input_kind_gives_the_same_typed_result(predictor, image):
    path, a = image
    forms = {
        "path": str(path),
        "pathlib": path,
        "pil": Image.open(path),
        "numpy uint8": a,
        "numpy float": a.astype(np.float32) / 255.0,
        "tensor": torch.from_numpy(a).permute(2, 0, 1).float() / 255.0,  # (3, H, W)
    }
    results = {k: predictor.predict(v) for k, v in forms.items()}
    ref = results["path"]
    assert isinstance(ref, amnet.Prediction) and ref.ok and ref.path == str(path)
    assert (ref.width, ref.height) == (70, 50)
    assert len(ref.step_scores) == 3 and ref.attention.shape == (3, 14, 14)
    np.testing.assert_allclose(ref.attention.sum((1, 2)), 1.0, atol=1e-5)
    assert ref.score == pytest.approx(np.mean(ref.step_scores), abs=1e-6)
    for kind, r in results.items():
        assert r.ok and r.score == pytest.approx(ref.score, abs=1e-6), kind
    assert results["pil"].path is None and results["numpy uint8"].path is None


def test_lists_and_batched_tensors_keep_order_and_report_bad_items(predictor, image):
    path, a = image
    t = torch.from_numpy(a).permute(2, 0, 1).float() / 255.0
    out = predictor.predict([str(path), np.zeros((10, 10, 3), np.uint8), "nope.jpg", t])
    assert [type(r) for r in out] == [amnet.Prediction] * 4
    assert [r.ok for r in out] == [True, True, False, True]
    assert out[2].error == "file not found" and out[2].path == "nope.jpg"
    assert out[0].score == pytest.approx(out[3].score, abs=1e-6)
    assert out[0].score != pytest.approx(out[1].score, abs=1e-9)  # different images differ
    batch = predictor.predict(torch.stack([t, t]))  # (B, 3, H, W) -> B results
    assert len(batch) == 2 and batch[1].score == pytest.approx(out[0].score, abs=1e-6)


def test_bad_array_is_an_error_result_not_an_exception(predictor):
    r = predictor.predict(np.zeros((5, 5, 7), np.uint8))
    assert not r.ok and "array must be" in r.error and r.score is None
