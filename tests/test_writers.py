import csv
import json
import os

import pytest

from amnet.apps.writers import open_writer, output_format
from amnet.inference.predictor import Prediction

PREDS = [
    Prediction("a/x.jpg", 0.71234567, (0.7, 0.71, 0.72)),
    Prediction("b/y,z.png", error="not an image: unrecognised or corrupt file format"),
    Prediction("caf\udce9.jpg", 0.5, (0.5, 0.5, 0.5)),  # a file name that is not UTF-8
]


def write(path, preds=PREDS):
    with open_writer(path) as w:
        for p in preds:
            w.write(p)


def test_csv_header_columns_and_empty_error(tmp_path):
    write(tmp_path / "o.csv")
    text = (tmp_path / "o.csv").read_text(encoding="utf-8")
    assert text.splitlines()[0] == "path,score,step_scores,error"
    rows = list(csv.DictReader(text.splitlines()))
    assert rows[0] == {
        "path": "a/x.jpg",
        "score": "0.712346",
        "step_scores": "0.700000 0.710000 0.720000",
        "error": "",
    }
    assert rows[1]["path"] == "b/y,z.png" and rows[1]["score"] == rows[1]["step_scores"] == ""
    assert rows[1]["error"].startswith("not an image")
    assert rows[2]["path"] == "caf\\xe9.jpg"  # odd bytes written visibly, never a crash


def test_jsonl_keys_and_values(tmp_path):
    write(tmp_path / "o.jsonl")
    objs = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [list(o) for o in objs] == [["path", "score", "step_scores", "error"]] * 3
    assert objs[0] == {
        "path": "a/x.jpg",
        "score": 0.712346,
        "step_scores": [0.7, 0.71, 0.72],
        "error": None,
    }
    assert objs[1]["score"] is None and objs[1]["step_scores"] == [] and objs[1]["error"]


@pytest.mark.parametrize("n", [0, 1, 3])
def test_json_is_one_valid_array(tmp_path, n):
    write(tmp_path / "o.json", PREDS[:n])
    got = json.loads((tmp_path / "o.json").read_text())
    assert [o["path"] for o in got] == [p.path.replace("\udce9", "\\xe9") for p in PREDS[:n]]


def test_output_appears_only_when_complete(tmp_path):
    out = tmp_path / "o.csv"
    out.write_text("previous results\n")
    with pytest.raises(KeyboardInterrupt), open_writer(out) as w:
        w.write(PREDS[0])
        raise KeyboardInterrupt
    assert out.read_text() == "previous results\n"  # untouched
    assert os.listdir(tmp_path) == ["o.csv"]  # no temporary file left behind


def test_table_has_header_scores_and_error_lines():
    lines = []
    with open_writer(None, steps=3, emit=lines.append) as w:
        for p in PREDS[:2]:
            w.write(p)
    assert lines[0].split() == ["score", "step", "scores", "path"]
    assert lines[1].split() == ["0.7123", "0.7000", "0.7100", "0.7200", "a/x.jpg"]
    assert lines[2].startswith("error") and "b/y,z.png: not an image" in lines[2]


@pytest.mark.parametrize("name", ["o.txt", "o", "o.csv.gz"])
def test_unknown_output_suffix_is_a_usage_error(name):
    with pytest.raises(ValueError, match=r"\.csv, \.jsonl, \.json"):
        output_format(name)


def test_output_file_gets_the_usual_permissions(tmp_path):
    """Written through a temporary file, yet readable like any file the user creates."""
    from amnet.fileio import _UMASK

    write(tmp_path / "o.csv")
    assert (tmp_path / "o.csv").stat().st_mode & 0o777 == 0o666 & ~_UMASK
