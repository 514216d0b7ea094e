"""Evaluation pieces that run without training: the ridge floor and CVConfig."""

import numpy as np
import pytest

from amnet.training.cache import FeatureStore
from amnet.training.cv import CVConfig, ridge_floor
from amnet.training.data import read_split_file


def test_ridge_floor_uses_only_the_test_time_views(synthetic_dataset, tiny_trunk_name, tmp_path):
    recs = read_split_file(synthetic_dataset / "scores.txt", synthetic_dataset / "images")[:60]
    store = FeatureStore(tiny_trunk_name, [r.path for r in recs], crops=2, root=tmp_path,
                         log=lambda m: None)  # fmt: skip
    data = store.featureset(recs)
    parts = [data.subset(np.arange(a, b)) for a, b in ((0, 36), (36, 48), (48, 60))]
    pred = ridge_floor(*parts)
    assert np.array_equal(pred, ridge_floor(*(d.test_views() for d in parts)))
    every_view = [type(d)(d.views, d.targets, d.ids) for d in parts]  # crops counted as TTA
    assert not np.array_equal(pred, ridge_floor(*every_view))


def test_cv_config_records_crops_and_checks_them():
    cfg = CVConfig("lnsim25", "root", "out", crops=4)
    assert cfg.to_dict()["crops"] == 4 and CVConfig("lnsim25", "r", "o").crops == 0
    with pytest.raises(ValueError, match="crops must be in"):
        CVConfig("lnsim25", "root", "out", crops=-1)
