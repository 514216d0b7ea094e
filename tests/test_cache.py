"""Views of the feature cache: orig and flip as always, crops as extra training views."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from amnet.training.cache import (
    CACHE_VERSION,
    CROP_VIEWS,
    FeatureCache,
    FeatureSet,
    FeatureStore,
    apply_view,
)
from amnet.training.data import read_split_file
from amnet.trunks.registry import create_trunk, get_trunk_spec


@pytest.fixture(scope="module")
def records(synthetic_dataset):
    return read_split_file(synthetic_dataset / "scores.txt", synthetic_dataset / "images")[:12]


def test_crop_view_geometry():
    x = torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).reshape(2, 3, 16, 16)
    assert apply_view(x, "orig") is x
    assert torch.equal(apply_view(x, "flip"), x.flip(-1))
    top_left = F.interpolate(x[..., :14, :14], size=(16, 16), mode="bilinear", antialias=True)
    bottom_right = F.interpolate(x[..., 2:, 2:], size=(16, 16), mode="bilinear", antialias=True)
    assert torch.equal(apply_view(x, "crop0"), top_left)
    assert torch.equal(apply_view(x, "crop1"), bottom_right)
    assert torch.equal(apply_view(x, "crop5"), top_left.flip(-1))  # crops 5..9 are mirrored
    crops = [apply_view(x, v) for v in CROP_VIEWS]
    assert all(c.shape == x.shape for c in crops)
    assert len({c.sum().item() for c in crops[:5]}) == 5  # five different places
    with pytest.raises(ValueError, match="view must be one of"):
        apply_view(x, "crop10")


def test_cache_key_differs_per_view_and_orig_flip_keep_theirs(tiny_trunk_name, tmp_path):
    trunk, pp = create_trunk(tiny_trunk_name), get_trunk_spec(tiny_trunk_name).preprocess
    views = ("orig", "flip", *CROP_VIEWS)
    caches = {v: FeatureCache(trunk, pp, view=v, root=tmp_path) for v in views}
    assert len({c.dir for c in caches.values()}) == len(caches)
    # existing caches stay valid: the key of orig and flip has exactly the fields it always had
    legacy = {"version", "trunk", "weights_sha256", "stop", "preprocess", "view"}
    assert CACHE_VERSION == 1
    assert set(caches["orig"].key) == set(caches["flip"].key) == legacy
    top_right = {"side": 0.875, "top": 0.0, "left": 1.0, "mirror": False}
    assert caches["crop2"].key["crop"] == {**top_right, "resize": "bilinear, antialias"}
    with pytest.raises(ValueError, match="view must be one of"):
        FeatureCache(trunk, pp, view="crop99", root=tmp_path)


def test_crop_views_differ_from_orig_and_are_deterministic(records, tiny_trunk_name, tmp_path):
    paths = [r.path for r in records]
    kw = {"log": lambda m: None}
    plain = FeatureStore(tiny_trunk_name, paths, root=tmp_path / "a", **kw)
    cropped = FeatureStore(tiny_trunk_name, paths, crops=2, root=tmp_path / "a", **kw)
    again = FeatureStore(tiny_trunk_name, paths, crops=2, root=tmp_path / "b", **kw)
    direct = FeatureStore(tiny_trunk_name, paths, crops=2, cache=False, **kw)
    assert cropped.names == ("orig", "flip", "crop0", "crop1") and cropped.n_test_views == 2
    for a, b, c in zip(cropped.views, again.views, direct.views, strict=True):
        assert np.array_equal(a, b) and np.array_equal(a, c)
    for a, b in zip(plain.views, cropped.views[:2], strict=True):  # orig, flip unchanged
        assert np.array_equal(a, b)
    orig, flip, crop0, crop1 = cropped.views
    assert not np.array_equal(crop0, orig) and not np.array_equal(crop1, orig)
    assert not np.array_equal(crop0, crop1) and not np.array_equal(crop0, flip)
    no_flip = FeatureStore(tiny_trunk_name, paths, flip=False, crops=1, root=tmp_path / "a", **kw)
    assert no_flip.names == ("orig", "crop0") and no_flip.n_test_views == 1
    assert np.array_equal(no_flip.views[1], crop0)
    with pytest.raises(ValueError, match="crops must be in 0..10"):
        FeatureStore(tiny_trunk_name, paths, crops=11, root=tmp_path / "a", **kw)


def test_featureset_keeps_track_of_test_time_views(records, tiny_trunk_name, tmp_path):
    store = FeatureStore(tiny_trunk_name, [r.path for r in records], crops=1, root=tmp_path,
                         log=lambda m: None)  # fmt: skip
    data = store.featureset(records)
    assert len(data.views) == 3 and data.n_test_views == 2
    sub = data.subset(np.array([3, 1]))
    assert sub.n_test_views == 2 and len(sub.views) == 3 and sub.ids == [data.ids[3], data.ids[1]]
    assert np.array_equal(sub.views[2], data.views[2][[3, 1]])
    tta = data.test_views()
    assert len(tta.views) == 2 and tta.n_test_views == 2 and tta.views[1] is data.views[1]
    assert FeatureSet(data.views, data.targets).n_test_views == 3  # default: every view
    with pytest.raises(ValueError, match="n_test_views"):
        FeatureSet(data.views, data.targets, n_test_views=4)
