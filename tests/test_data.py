import numpy as np
import pytest
from conftest import LAMEM_SPLITS, LNSIM

from amnet.training.data import (
    DataConfig,
    DatasetError,
    load_records,
    load_split,
    random_split,
    read_csv,
    read_hrs,
    read_isola,
    read_split_file,
    save_split,
)


def test_real_lamem_split_files_parse_with_scores_from_the_file_in_use(tmp_path):
    train = read_split_file(LAMEM_SPLITS / "train_1.txt", tmp_path, skip_missing=False)
    test = read_split_file(LAMEM_SPLITS / "test_1.txt", tmp_path, skip_missing=False)
    val = read_split_file(LAMEM_SPLITS / "val_1.txt", tmp_path, skip_missing=False)
    assert (len(train), len(val), len(test)) == (45000, 3741, 10000)
    ids = [{r.image_id for r in s} for s in (train, val, test)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    scores = np.array([r.score for r in train])
    assert 0.15 < scores.min() and scores.max() <= 1.0 and 0.7 < scores.mean() < 0.8
    # the same image has a different score in another split: read from the file in use
    other = {r.image_id: r.score for r in read_split_file(LAMEM_SPLITS / "test_2.txt", tmp_path,
                                                          skip_missing=False)}  # fmt: skip
    differ = [r for r in train if r.image_id in other and other[r.image_id] != r.score]
    assert differ


def test_missing_images_are_skipped_with_one_warning(tmp_path, caplog):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(b"x")
    f = tmp_path / "s.txt"
    f.write_text("a.jpg 0.5\nb.jpg 0.6\nc.jpg 0.7\n")
    recs = read_split_file(f, tmp_path / "images")
    assert [r.image_id for r in recs] == ["a.jpg"]
    assert sum("2 of 3 listed images are missing" in m for m in caplog.messages) == 1


@pytest.mark.parametrize(
    "line,match", [("a.jpg", "expected 'name score'"), ("a.jpg abc", "not a number"),
                   ("a.jpg 1.5", "outside"), ("a.jpg nan", "finite")],
)  # fmt: skip
def test_malformed_line_names_file_and_line(tmp_path, line, match):
    f = tmp_path / "s.txt"
    f.write_text(f"ok.jpg 0.5\n{line}\n")
    with pytest.raises(DatasetError, match=match) as e:
        read_split_file(f, tmp_path)
    assert f"{f}:2" in str(e.value)


def test_score_scale(tmp_path):
    f = tmp_path / "s.txt"
    f.write_text("a.jpg 75\n")
    assert read_split_file(f, tmp_path, score_scale=100, skip_missing=False)[0].score == 0.75


def test_lnsim_mat_files_and_missing_columns():
    hrs1 = read_hrs(LNSIM, 1)
    assert hrs1.shape == (25, 2632)
    recs = read_isola(LNSIM, 3, 1)
    assert len(recs) == 2000  # 632 withheld images are skipped
    assert recs[0].image_id == "0001.jpg"
    assert recs[0].score == pytest.approx(hrs1[3, 0])


def test_isola_protocol_halves_are_disjoint_and_targets_from_each_half():
    cfg = DataConfig("isola", str(LNSIM), split=4)
    train, val, test = (load_records(cfg, p) for p in ("train", "val", "test"))
    assert len(train) + len(val) == 1000 and len(test) == 1000
    ids = [{r.image_id for r in s} for s in (train, val, test)]
    assert not (ids[2] & (ids[0] | ids[1])) and not (ids[0] & ids[1])
    hrs2 = read_hrs(LNSIM, 2)
    t = test[0]
    assert t.score == pytest.approx(hrs2[4, int(t.image_id[:4]) - 1])


def test_csv_reader(tmp_path):
    f = tmp_path / "d.tsv"
    f.write_text("file\tmem\nx.png\t0.3\n")
    (tmp_path / "x.png").write_bytes(b"x")
    recs = read_csv(f, path_column="file", score_column="mem")
    assert recs[0].path == tmp_path / "x.png" and recs[0].score == 0.3
    with pytest.raises(DatasetError, match="no column"):
        read_csv(f)


def test_random_split_is_deterministic_and_can_be_saved(tmp_path):
    a, b = random_split(100, 0.3, seed=5)
    a2, _ = random_split(100, 0.3, seed=5)
    a3, _ = random_split(100, 0.3, seed=6)
    assert len(a) == 30 and len(b) == 70 and not set(a) & set(b)
    assert (a == a2).all() and not (a == a3).all()
    save_split(tmp_path / "s.json", {"train": ["x"], "test": ["y"]})
    assert load_split(tmp_path / "s.json") == {"train": ["x"], "test": ["y"]}
