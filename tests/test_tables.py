"""Tables of paths in, result tables out (amnet.apps.ray.tables); no Ray needed."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from amnet.apps.files import iter_inputs
from amnet.apps.ray.tables import (
    csv_columns,
    iter_paths,
    output_layout,
    read_path_table,
    result_schema,
    write_one_file,
)


@pytest.mark.parametrize(
    ("out", "layout"),
    [
        ("s.parquet", (".parquet", False)),
        ("a/s.CSV", (".csv", False)),
        ("s.jsonl", (".jsonl", False)),
        ("s.json", (".json", False)),
        ("shards/", (".parquet", True)),
        ("shards", (".parquet", True)),
        ("s.csv/", (".csv", True)),
        ("s.parquet/", (".parquet", True)),
    ],
)
def test_output_layout_follows_the_name(out, layout):
    assert output_layout(out) == layout


@pytest.mark.parametrize("out", ["s.txt", "s.jsonl/", "s.png"])
def test_output_layout_rejects_unknown_formats(out):
    with pytest.raises(ValueError, match="format|Parquet or CSV"):
        output_layout(out)


def test_path_tables_resolve_relative_paths(tmp_path):
    pq.write_table(pa.table({"file": ["a.jpg", "/abs/b.png", None], "n": [1, 2, 3]}),
                   tmp_path / "t.parquet")  # fmt: skip
    (tmp_path / "t.csv").write_text("id,file\n1,a.jpg\n2,sub/c.jpg\n")
    assert read_path_table(str(tmp_path / "t.parquet"), "file") == [
        str(tmp_path / "a.jpg"), "/abs/b.png"
    ]  # fmt: skip
    assert read_path_table(str(tmp_path / "t.csv"), "file") == [
        str(tmp_path / "a.jpg"), str(tmp_path / "sub" / "c.jpg")
    ]  # fmt: skip
    with pytest.raises(ValueError, match="no column 'path'"):
        read_path_table(str(tmp_path / "t.parquet"))


def test_iter_paths_mixes_tables_with_local_inputs(tmp_path, photo_dir):
    (tmp_path / "t.csv").write_text("path\nx.jpg\n")
    got = list(iter_paths([str(tmp_path / "t.csv"), str(photo_dir)]))
    assert got == [str(tmp_path / "x.jpg"), *iter_inputs([str(photo_dir)])]


def test_parquet_file_keeps_order_types_and_counts(tmp_path):
    rows = [
        {"path": "b.jpg", "score": 0.5, "step_scores": [0.4, 0.5], "error": None},
        {"path": "a.jpg", "score": None, "step_scores": [], "error": "cannot read"},
    ]

    batches = [pa.Table.from_pylist([r], schema=result_schema()) for r in rows]
    assert write_one_file(batches, str(tmp_path / "s.parquet"), ".parquet") == (2, 1)
    table = pq.read_table(tmp_path / "s.parquet")
    assert table.schema == result_schema() and table.to_pylist() == rows
    assert write_one_file(batches, str(tmp_path / "s.jsonl"), ".jsonl") == (2, 1)
    assert (tmp_path / "s.jsonl").read_text().splitlines()[1] == (
        '{"path": "a.jpg", "score": null, "step_scores": [], "error": "cannot read"}'
    )
    csv_cols = csv_columns(pa.Table.from_pylist(rows, schema=result_schema())).to_pylist()
    assert csv_cols == [
        {"path": "b.jpg", "score": "0.500000", "step_scores": "0.400000 0.500000", "error": ""},
        {"path": "a.jpg", "score": "", "step_scores": "", "error": "cannot read"},
    ]
