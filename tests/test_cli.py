"""``amnet predict`` called in-process through ``amnet.cli.main``."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

import amnet
from amnet import checkpoint as weights
from amnet.cli.main import main


@pytest.fixture
def cli(capsys):
    def run(*argv: str) -> tuple[int, str, str]:
        rc = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        assert "Traceback" not in err + out
        return rc, out, err

    return run


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_csv_output_scores_every_image(cli, photo_dir, tiny_checkpoint, tmp_path):
    rc, out, err = cli(
        "predict", photo_dir, "--model", tiny_checkpoint, "--out", tmp_path / "s.csv"
    )
    assert rc == 0 and out == ""
    assert (tmp_path / "s.csv").read_text().startswith("path,score,step_scores,error\n")
    rows = read_csv(tmp_path / "s.csv")
    assert [r["path"] for r in rows] == [str(p) for p in sorted(photo_dir.iterdir())]
    for r in rows:
        steps = [float(s) for s in r["step_scores"].split(" ")]
        assert len(steps) == 3 and r["error"] == ""
        assert float(r["score"]) == pytest.approx(np.mean(steps), abs=2e-6)
    assert "scored 5 of 5 images" in err


def test_cli_gives_the_same_scores_as_the_python_api(cli, photo_dir, tiny_checkpoint, tmp_path):
    cli("predict", photo_dir, "--model", tiny_checkpoint, "--out", tmp_path / "s.jsonl")
    got = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert [list(o) for o in got] == [["path", "score", "step_scores", "error"]] * 5
    api = amnet.load(tiny_checkpoint).predict(sorted(str(p) for p in photo_dir.iterdir()))
    for o, p in zip(got, api, strict=True):
        assert o["path"] == p.path and o["error"] is None
        assert o["score"] == pytest.approx(p.score, abs=1e-6)
        assert o["step_scores"] == pytest.approx(p.step_scores, abs=1e-6)


def test_batch_size_and_workers_do_not_change_results_or_order(
    cli, photo_dir, tiny_checkpoint, tmp_path
):
    args = ("predict", photo_dir, "missing.jpg", photo_dir, "--model", tiny_checkpoint)
    cli(*args, "--out", tmp_path / "a.json", "--batch-size", "1", "--workers", "0")
    cli(*args, "--out", tmp_path / "b.json", "--batch-size", "3", "--workers", "3")
    a, b = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert len(a) == 11 and a[5]["error"] == "file not found"
    assert [o["path"] for o in a] == [o["path"] for o in b]
    assert np.allclose([o["score"] or 0 for o in a], [o["score"] or 0 for o in b], atol=1e-6)


def test_table_on_stdout_without_out(cli, photo_dir, tiny_checkpoint):
    rc, out, err = cli(
        "predict", photo_dir / "img0.png", photo_dir / "img1.jpg", "--model", tiny_checkpoint
    )
    lines = out.splitlines()
    assert rc == 0 and lines[0].split() == ["score", "step", "scores", "path"]
    assert len(lines) == 3 and lines[2].endswith("img1.jpg") and len(lines[1].split()) == 5


def test_some_failed_exit_1_and_the_rest_is_written(cli, photo_dir, tiny_checkpoint, tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    rc, out, err = cli(
        "predict",
        photo_dir / "img0.png",
        tmp_path / "bad.jpg",
        tmp_path / "no.png",
        "--model",
        tiny_checkpoint,
        "--out",
        tmp_path / "s.csv",
    )
    assert rc == 1
    rows = read_csv(tmp_path / "s.csv")
    assert [bool(r["error"]) for r in rows] == [False, True, True]
    assert rows[1]["score"] == "" and rows[1]["error"].startswith("not an image")
    assert rows[2]["error"] == "file not found"
    assert "scored 1 of 3 images (2 failed)" in err and "no.png: file not found" in err


def test_folders_globs_lists_and_recursive(cli, photo_dir, tiny_checkpoint, tmp_path):
    sub = photo_dir / "sub"
    sub.mkdir()
    Image.new("RGB", (30, 20), "blue").save(sub / "deep.png")
    (tmp_path / "list.txt").write_text("photos/img0.png\nphotos/img3.jpg\n")
    rc, _, _ = cli(
        "predict",
        tmp_path / "list.txt",
        f"{photo_dir}/*.jpg",
        photo_dir,
        "--recursive",
        "--model",
        tiny_checkpoint,
        "--out",
        tmp_path / "s.csv",
    )
    paths = [r["path"] for r in read_csv(tmp_path / "s.csv")]
    assert rc == 0 and len(paths) == 2 + 2 + 6 and paths[-1].endswith("sub/deep.png")
    assert paths[:4] == [
        str(photo_dir / n) for n in ("img0.png", "img3.jpg", "img1.jpg", "img3.jpg")
    ]


def test_maps_one_png_per_scored_image_and_names_do_not_collide(cli, tiny_checkpoint, tmp_path):
    for d, colour in (("a", "red"), ("b", "blue")):
        (tmp_path / d).mkdir()
        Image.new("RGB", (40, 30), colour).save(tmp_path / d / "x.jpg")
    rc, _, err = cli(
        "predict",
        tmp_path / "a/x.jpg",
        tmp_path / "b/x.jpg",
        tmp_path / "c/x.jpg",
        "--model",
        tiny_checkpoint,
        "--maps",
        tmp_path / "maps",
        "--out",
        tmp_path / "s.csv",
    )
    maps = sorted((tmp_path / "maps").iterdir())
    assert rc == 1 and len(maps) == 2 and "2 maps in" in err  # c/x.jpg does not exist
    first = [np.asarray(Image.open(m))[60, 20] for m in maps]  # a pixel of each input panel
    assert {tuple(int(v) > 128 for v in px) for px in first} == {
        (True, False, False),
        (False, False, True),
    }


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--out", "scores.txt"], "must end in .csv, .jsonl, .json"),
        (["--batch-size", "0"], "--batch-size"),
        (["--workers", "-1"], "--workers"),
        (["--model", "no-such-model"], "unknown model 'no-such-model'"),
        (["--model", "missing.safetensors"], "checkpoint not found"),
        (["--device", "tpu"], "device"),
    ],
)
def test_usage_errors_exit_2_with_a_one_line_message(
    cli, photo_dir, tiny_checkpoint, extra, message
):
    args = ["predict", photo_dir, "--model", tiny_checkpoint, *extra]
    rc, out, err = cli(*args)
    assert rc == 2 and message in err and out == ""


def test_without_a_default_model_it_says_to_pass_model(cli, photo_dir, monkeypatch):

    monkeypatch.setattr(weights, "_ALIASES", {})
    monkeypatch.setattr(weights, "_MODELS", {})
    rc, _, err = cli("predict", photo_dir)
    assert rc == 2 and "no default model" in err and "--model FILE" in err


def test_no_paths_is_a_usage_error(cli):
    rc, _, err = cli("predict")
    assert rc == 2 and "PATH" in err


def test_empty_folder_exits_1_and_says_so(cli, tmp_path, tiny_checkpoint):
    rc, _, err = cli("predict", tmp_path, "--model", tiny_checkpoint, "--out", tmp_path / "s.csv")
    assert rc == 1 and "no images found" in err
    assert (tmp_path / "s.csv").read_text() == "path,score,step_scores,error\n"


def test_no_score_map_drops_the_whole_score_panel(cli, tiny_checkpoint, tmp_path):
    Image.new("RGB", (40, 30), "green").save(tmp_path / "x.jpg")
    widths = {}
    for flag in ("--score-map", "--no-score-map"):
        out = tmp_path / flag
        rc, _, _ = cli("predict", tmp_path / "x.jpg", "--model", tiny_checkpoint, "--maps", out,
                       "--out", tmp_path / f"{flag}.csv", flag)  # fmt: skip
        (png,) = out.iterdir()
        assert rc == 0
        widths[flag] = Image.open(png).width
    assert widths["--no-score-map"] < widths["--score-map"]  # one panel fewer
