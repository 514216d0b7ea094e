import numpy as np
import pytest
from PIL import Image

from amnet.apps.figures import (
    attention_overlays,
    figure,
    heatmap,
    jet,
    map_filename,
    overlay,
    save_map,
    signed_overlay,
)
from amnet.inference.predictor import Prediction


def peaked(h=14, w=14, at=(0, 0)) -> np.ndarray:
    a = np.full((h, w), 1e-4, dtype=np.float32)
    a[at] = 1.0
    return a / a.sum()


def test_jet_goes_from_blue_to_red():
    lo, mid, hi = jet(np.array([0.0, 0.5, 1.0]))
    assert lo[2] > 100 and lo[0] == 0  # blue
    assert mid[1] == 255  # green in the middle
    assert hi[0] > 100 and hi[2] == 0  # red


def test_heatmap_is_smooth_stretched_and_sized_like_the_image():
    rng = np.random.default_rng(0)
    h = heatmap(rng.random((14, 14)), (300, 200))
    assert h.shape == (200, 300) and h.min() >= 0.0 and h.max() <= 1.0
    assert h.max() > 0.95 and h.min() < 0.05
    assert len(np.unique(h)) > 20 * 14 * 14  # interpolated, not 14x14 blocks
    assert np.abs(np.diff(h, axis=1)).max() < 0.2  # no block edges
    assert not heatmap(np.full((14, 14), 1 / 196), (30, 20)).any()  # uniform: nothing stands out


def test_overlay_is_hot_where_attention_is():
    grey = Image.new("RGB", (280, 140), (128, 128, 128))
    out = np.asarray(overlay(grey, peaked(7, 14, at=(0, 0))), dtype=int)
    assert out.shape == (140, 280, 3)
    r, g, b = out[2, 2]
    assert r > b + 50  # attended corner: red
    r, g, b = out[-3, -3]
    assert b > r + 50  # elsewhere: blue


def test_attention_overlays_one_per_step():
    img = Image.new("RGB", (50, 40), "white")
    outs = attention_overlays(img, np.stack([peaked(), peaked(at=(5, 5)), peaked(at=(13, 13))]))
    assert [o.size for o in outs] == [(50, 40)] * 3
    assert not np.array_equal(np.asarray(outs[0]), np.asarray(outs[2]))
    with pytest.raises(ValueError):
        attention_overlays(img, peaked())


def test_figure_shows_the_image_then_each_step():
    img = Image.new("RGB", (400, 200), (0, 200, 0))
    fig = figure(img, np.stack([peaked()] * 3), (0.1, 0.2, 0.3), 0.2, panel=100)
    # four panels of 200x100 plus margins, a title line above and captions below
    assert fig.width == 4 * 200 + 5 * 8 and fig.height > 100 + 30
    a = np.asarray(fig)
    col = a[:, 8 + 100]  # through the middle of the first panel
    assert (np.abs(col.astype(int) - [0, 200, 0]).sum(1) < 10).sum() == 100  # the image itself
    no_steps = figure(img, np.zeros((0, 14, 14)), (), 0.5, panel=100)
    assert no_steps.width == 200 + 2 * 8


def test_map_names_do_not_collide_and_are_stable():
    names = {map_filename("a/x.jpg"), map_filename("b/x.jpg"), map_filename("x.jpg")}
    assert len(names) == 3 and all(n.startswith("x_") and n.endswith(".png") for n in names)
    assert map_filename("a/x.jpg") == map_filename("a/x.jpg")
    assert "/" not in map_filename("we ird/na:me?.jpg")[:-4]


def test_save_map_writes_a_png_figure(tmp_path):
    Image.new("RGB", (64, 48), "red").save(tmp_path / "r.jpg")
    pred = Prediction(str(tmp_path / "r.jpg"), 0.5, (0.4, 0.6), np.stack([peaked()] * 2))
    path = save_map(pred, tmp_path / "maps", panel=64)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width == 3 * round(64 * 64 / 48) + 4 * 8
    with pytest.raises(ValueError):
        save_map(Prediction("x.jpg", error="file not found"), tmp_path)


def test_signed_overlay_is_red_where_positive_blue_where_negative_and_clear_at_zero():
    grey = Image.new("RGB", (140, 140), (128, 128, 128))
    m = np.zeros((7, 7), np.float32)
    m[0, 0], m[6, 6] = 1.0, -0.5
    out = np.asarray(signed_overlay(grey, m), dtype=int)
    r, g, b = out[5, 5]
    assert r > 180 and b < 80  # positive: red, at full strength
    r, g, b = out[-6, -6]
    assert b > r + 50  # negative: blue, half as strong
    assert (np.abs(out[70, 70] - 128) <= 2).all()  # zero: the image itself
    assert np.array_equal(np.asarray(signed_overlay(grey, np.zeros((7, 7)))), np.asarray(grey))


def test_figure_with_a_score_map_adds_a_panel_and_labels_what_each_shows():
    img = Image.new("RGB", (400, 200), (0, 200, 0))
    att, steps = np.stack([peaked()] * 3), (0.1, 0.2, 0.3)
    plain = figure(img, att, steps, 0.2, panel=100)
    fig = figure(img, att, steps, 0.2, panel=100, score_map=np.ones((14, 14)), heads_share=0.2)
    assert fig.width == plain.width + 200 + 8  # one more panel
    assert fig.height > plain.height  # a line of labels above the panels
    a = np.asarray(fig)
    last = a[fig.height // 2, -8 - 100]  # the middle of the whole-score panel: all red
    assert last[0] > 150 and last[1] < 120
    labels = a[
        : fig.height - plain.height + 30, 8 + 200 + 8 :
    ]  # the label line, right of the image
    assert (labels.min(-1) < 100).sum() > 50  # some text was drawn there
    labelled = figure(img, att, steps, 0.2, panel=100, heads_share=1.0)
    assert labelled.width == plain.width and labelled.height == fig.height
