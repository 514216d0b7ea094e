import dataclasses

import numpy as np
import pytest
import torch

from amnet.model.head import AMNetConfig
from amnet.training.cache import FeatureSet, FeatureStore
from amnet.training.data import DataConfig, load_records, random_split, read_split_file
from amnet.training.heads import TrainConfig, attention_penalty, fit, predict_features
from amnet.training.metrics import spearman

MODEL = AMNetConfig(in_channels=16, proj_dim=16, att_dim=8, hidden_size=16, fc_dim=8)
TRAIN = TrainConfig(epochs=12, batch_size=16, lr=3e-3, patience=12)


@pytest.fixture(scope="module")
def crop_sets(synthetic_dataset, tiny_trunk_name, tmp_path_factory):
    """(train, val, test) with the views orig, flip, crop0, crop1."""
    recs = read_split_file(synthetic_dataset / "scores.txt", synthetic_dataset / "images")
    store = FeatureStore(tiny_trunk_name, [r.path for r in recs], flip=True, crops=2,
                         root=tmp_path_factory.mktemp("cache"), log=lambda m: None)  # fmt: skip
    data = store.featureset(recs)
    rest, test = random_split(len(data), 0.75, seed=0)
    tr, va = random_split(len(rest), 0.8, seed=1)
    return data.subset(rest[tr]), data.subset(rest[va]), data.subset(test)


@pytest.fixture(scope="module")
def sets(crop_sets):
    """(train, val, test) with the views orig and flip."""
    return tuple(d.test_views() for d in crop_sets)


def test_learns_a_learnable_function(sets):
    train, val, test = sets
    res = fit(MODEL, TRAIN, train, val, progress=False)
    rho = spearman(predict_features(res.head, test), test.targets)
    assert rho > 0.9, rho
    assert res.best_rho == max(h["val_rho"] for h in res.history)


def test_pca_reduction_learns_too(sets):
    train, val, test = sets
    cfg = AMNetConfig(**{**MODEL.to_dict(), "reduce_dim": 8})
    res = fit(cfg, TRAIN, train, val, progress=False)
    assert spearman(predict_features(res.head, test), test.targets) > 0.85
    # the reduction is fixed: it is not a parameter and did not change in training
    assert "reduce_weight" not in dict(res.head.named_parameters())


def _killed_and_resumed_equals_full(train, val, tc, tmp_path):
    """Train once in full and once killed after 2 epochs then resumed: the same weights,
    history length and best epoch. Returns the full run."""
    full = fit(MODEL, tc, train, val, out_dir=tmp_path / "a", progress=False)
    fit(MODEL, tc, train, val, out_dir=tmp_path / "b", progress=False, stop_after=2)
    resumed = fit(MODEL, tc, train, val, out_dir=tmp_path / "b", resume=True, progress=False)
    assert len(resumed.history) == tc.epochs and resumed.best_epoch == full.best_epoch
    for (k, a), b in zip(full.head.state_dict().items(), resumed.head.state_dict().values(),
                         strict=True):  # fmt: skip
        assert torch.equal(a, b), k
    return full


def test_kill_and_resume_gives_the_same_result(sets, tmp_path):
    train, val, _ = sets
    _killed_and_resumed_equals_full(train, val, TrainConfig(epochs=5, batch_size=16, lr=3e-3),
                                    tmp_path)  # fmt: skip
    assert (tmp_path / "b" / "log.csv").read_text().count("\n") == 6


def test_training_draws_crop_views_and_resumes_exactly(crop_sets, sets, tmp_path):
    train, val, _ = crop_sets
    assert len(train.views) == 4 and train.n_test_views == 2
    tc = TrainConfig(epochs=3, batch_size=16, lr=3e-3)
    full = _killed_and_resumed_equals_full(train, val, tc, tmp_path)
    # the crops change training; without them (or with augment_crops off) nothing changes
    plain = fit(MODEL, tc, sets[0], sets[1], progress=False)
    off = fit(MODEL, dataclasses.replace(tc, augment_crops=False), train, val, progress=False)
    a, b, c = (r.head.state_dict() for r in (full, plain, off))
    assert not all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(b[k], c[k]) for k in b)
    assert [h["val_rho"] for h in off.history] == [h["val_rho"] for h in plain.history]


def test_test_time_averaging_ignores_crop_views(crop_sets):
    train, val, test = crop_sets
    head = fit(MODEL, TrainConfig(epochs=1, batch_size=16), train, val, progress=False).head
    per_view = [predict_features(head, FeatureSet([v], test.targets)) for v in test.views]
    pred = predict_features(head, test)
    np.testing.assert_allclose(pred, (per_view[0] + per_view[1]) / 2, rtol=1e-12)
    assert np.array_equal(pred, predict_features(head, test.test_views()))
    assert not np.allclose(pred, np.mean(per_view, axis=0))  # the crops would have changed it
    assert np.array_equal(predict_features(head, test, views=False), per_view[0])


def test_same_results_with_and_without_the_cache(synthetic_dataset, tiny_trunk_name, tmp_path):
    recs = read_split_file(synthetic_dataset / "scores.txt", synthetic_dataset / "images")[:40]
    paths = [r.path for r in recs]
    kw = {"flip": True, "log": lambda m: None}
    cached = FeatureStore(tiny_trunk_name, paths, root=tmp_path, **kw).featureset(recs)
    again = FeatureStore(tiny_trunk_name, paths, root=tmp_path, **kw).featureset(recs)  # hits
    direct = FeatureStore(tiny_trunk_name, paths, cache=False, **kw).featureset(recs)
    for a, b, c in zip(cached.views, again.views, direct.views, strict=True):
        assert a.dtype == np.float16 and np.array_equal(a, b) and np.array_equal(a, c)
    tc = TrainConfig(epochs=2, batch_size=8)
    r1 = fit(MODEL, tc, cached.subset(np.arange(30)), cached.subset(np.arange(30, 40)),
             progress=False)  # fmt: skip
    r2 = fit(MODEL, tc, direct.subset(np.arange(30)), direct.subset(np.arange(30, 40)),
             progress=False)  # fmt: skip
    for a, b in zip(r1.head.state_dict().values(), r2.head.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_validation_never_contains_test_images(synthetic_dataset):
    # (the isola protocol is covered in test_data; the list layout carves val from train)
    cfg = DataConfig("list", str(synthetic_dataset), file=str(synthetic_dataset / "scores.txt"))
    train, val = load_records(cfg, "train"), load_records(cfg, "val")
    assert not {r.image_id for r in train} & {r.image_id for r in val}
    with pytest.raises(ValueError, match="no test part"):
        load_records(cfg, "test")


def test_attention_penalty_is_zero_for_even_spread_and_positive_for_a_peak():
    even = torch.full((2, 3, 4, 4), 1 / 16)
    peak = torch.zeros(2, 3, 4, 4)
    peak[:, :, 0, 0] = 1
    assert attention_penalty(even, 2) == 0
    assert attention_penalty(peak, 1) > attention_penalty(even, 1)


def test_train_config_is_validated():
    with pytest.raises(ValueError):
        TrainConfig(att_norm=3)
    with pytest.raises(ValueError):
        TrainConfig(epochs=0)
