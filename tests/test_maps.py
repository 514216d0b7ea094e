"""Maps of the whole score (amnet.inference.maps): shapes, the sensitivity map is the
first-order score change of greying each cell, a change planted in one region shows up there
and nowhere else, and the ranking/occlusion helpers of the faithfulness benchmark."""

import numpy as np
import pytest
import torch
from PIL import Image
from test_differentiable import _images, in_float64, kernel_checkpoint  # noqa: F401 - fixture

import amnet
from amnet.inference.maps import (
    GREY,
    cell_sums,
    file_score_map,
    occlude,
    occlusion_map,
    score_maps,
    top_cells,
)


@pytest.fixture
def module(kernel_checkpoint, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("AMNET_HOME", str(tmp_path / "home"))
    return amnet.load(kernel_checkpoint).as_module()


def test_shapes_scores_and_attention_are_the_models(module):
    x = _images(0, 2, 3, 224, 224)
    maps = score_maps(module, x)
    assert maps.score.shape == (2,) and maps.step_scores.shape == (2, 3)
    assert maps.attention.shape == (2, 3, 14, 14) and maps.sensitivity.shape == (2, 14, 14)
    assert torch.isfinite(maps.sensitivity).all() and maps.sensitivity.abs().max() > 0
    with torch.no_grad():
        out = module.outputs(x)
    torch.testing.assert_close(maps.score, out.score)
    torch.testing.assert_close(maps.attention, out.attention)
    assert score_maps(module, _images(1, 1, 3, 90, 130), grid=(4, 6)).sensitivity.shape == (1, 4, 6)
    assert not x.requires_grad and x.grad is None  # the caller's images are left alone
    assert not score_maps(module, x, fill=x).sensitivity.any()  # filled with itself: no change


def test_sensitivity_is_the_first_order_score_drop_of_greying_each_cell(module):
    """Each of the 196 cells moved 1% of the way to grey, re-scored: the drops follow the map.
    (The tiny trunk's ReLU kinks bend a few cells' finite differences, e.g. 17% for one.)"""
    module = in_float64(module)  # a cell moves the score by ~1e-6: beyond float32's reach
    x = _images(2, 1, 3, 224, 224).double()
    sens = score_maps(module, x).sensitivity[0].flatten()  # (196,)
    t = 1e-2
    cells = torch.eye(196, dtype=torch.bool).view(196, 14, 14)
    moved = occlude(x.expand(196, -1, -1, -1), cells, x + t * (GREY - x))  # (196, 3, 224, 224)
    with torch.no_grad():
        drop = (module(x) - torch.cat([module(b) for b in moved.split(28)])) / t  # (196,)
    assert torch.corrcoef(torch.stack([drop, sens]))[0, 1] > 0.99
    assert float((drop / sens).median()) == pytest.approx(1.0, abs=0.02)
    assert sens.abs().max() > 1e-4


def test_a_change_planted_in_one_region_shows_up_there_and_nowhere_else(module):
    module = in_float64(module)  # the tiny model moves little (~1e-6) on a grey image
    x = torch.full(
        (1, 3, 224, 224), GREY, dtype=torch.float64
    )  # grey: greying any cell changes nothing ...
    x[..., 64:96, 160:192] = (_images(3, 3, 32, 32) > 0.5).double()  # ... but a planted patch
    sens = score_maps(module, x, grid=(7, 7)).sensitivity[0]
    occ = occlusion_map(module, x, grid=(7, 7))[0]
    for m in (sens, occ):
        inside = m[2, 5]
        m = m.clone()
        m[2, 5] = 0
        assert inside.abs() > 1e-7 and m.abs().max() < 1e-3 * inside.abs()  # only that cell
    assert torch.sign(sens[2, 5]) == torch.sign(occ[2, 5])  # the estimate has the right sign


def test_top_cells_occlude_and_cell_sums():
    m = torch.arange(16.0).view(1, 4, 4)
    assert not top_cells(m, 0.0).any() and top_cells(m, 1.0).all()
    quarter = top_cells(m, 0.25)
    assert quarter.sum() == 4 and quarter[0, 3].all()  # the four largest: the last row
    ties = top_cells(torch.zeros(1, 2, 2), 0.5)
    assert ties.flatten().tolist() == [True, True, False, False]  # row-major among equals
    x = _images(4, 1, 3, 8, 8)
    out = occlude(x, quarter)
    assert (out[..., 6:, :] == GREY).all() and torch.equal(out[..., :6, :], x[..., :6, :])
    blurred = occlude(x, quarter, torch.zeros_like(x))  # fill with other images
    assert (blurred[..., 6:, :] == 0).all()
    px = _images(5, 2, 12, 12)
    torch.testing.assert_close(cell_sums(px, (3, 3)).sum((1, 2)), px.sum((1, 2)))


def test_file_score_map_is_the_map_of_what_predict_scored(module, tmp_path):
    a = (np.random.default_rng(0).random((60, 90, 3)) * 255).astype(np.uint8)
    Image.fromarray(a).save(tmp_path / "a.png")
    got = file_score_map(module, tmp_path / "a.png")
    assert got.shape == (14, 14) and np.isfinite(got).all()
    img = Image.fromarray(a).resize((224, 224), Image.BILINEAR, reducing_gap=None)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    np.testing.assert_allclose(got, score_maps(module, x).sensitivity[0].numpy(), atol=1e-6)
