"""``run_predict``: the library function behind ``amnet predict``."""

import io

import pytest

from amnet.apps.predict import PredictJob, run_predict


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_with_images_per_second_on_a_terminal_only(photo_dir, tiny_checkpoint):
    job = PredictJob((str(photo_dir),), model=str(tiny_checkpoint))
    out, term = io.StringIO(), Terminal()
    summary = run_predict(job, stdout=out, stderr=term)
    assert summary.total == 5 and summary.failed == 0
    assert "5 images" in term.getvalue() and "images/s" in term.getvalue()
    assert len(out.getvalue().splitlines()) == 6  # the table stays whole beside the bar
    out, pipe = io.StringIO(), io.StringIO()  # not a terminal: no bar, only the summary
    run_predict(job, stdout=out, stderr=pipe)
    assert pipe.getvalue().count("\n") == 1 and "\r" not in pipe.getvalue()
    assert pipe.getvalue().startswith("amnet predict: scored 5 of 5 images")


def test_only_the_first_errors_are_echoed_but_all_are_written(tmp_path, tiny_checkpoint):
    paths = tuple(str(tmp_path / f"missing{i}.jpg") for i in range(13))
    job = PredictJob(paths, model=str(tiny_checkpoint), out=str(tmp_path / "s.csv"))
    err = io.StringIO()
    summary = run_predict(job, stderr=err)
    assert summary.failed == 13 and summary.scored == 0
    assert err.getvalue().count("file not found") == 10
    assert "with all 13 errors" in err.getvalue()
    assert (tmp_path / "s.csv").read_text().count("file not found") == 13


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"paths": ()}, "no PATH"),
        ({"batch_size": 0}, "--batch-size"),
        ({"workers": -1}, "--workers"),
        ({"out": "scores.xlsx"}, ".csv, .jsonl, .json"),
    ],
)
def test_job_is_validated_on_creation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PredictJob(**{"paths": ("x.jpg",), **kwargs})


def test_out_and_maps_must_be_a_file_and_a_folder(tmp_path):
    (tmp_path / "f.png").write_bytes(b"")
    (tmp_path / "d.csv").mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        PredictJob(("x.jpg",), out=str(tmp_path / "d.csv"))
    with pytest.raises(ValueError, match="not a folder"):
        PredictJob(("x.jpg",), maps=str(tmp_path / "f.png"))


def test_maps_add_the_whole_score_panel_unless_asked_not_to(photo_dir, tiny_checkpoint, tmp_path):
    from PIL import Image

    widths = {}
    for score_maps in (True, False):
        folder = tmp_path / f"maps{score_maps}"
        job = PredictJob((str(photo_dir / "img0.png"),), model=str(tiny_checkpoint),
                         maps=str(folder), score_maps=score_maps)  # fmt: skip
        err = io.StringIO()
        summary = run_predict(job, stdout=io.StringIO(), stderr=err)
        assert summary.maps_written == 1 and "no whole-score map" not in err.getvalue()
        (png,) = folder.iterdir()
        with Image.open(png) as im:
            widths[score_maps] = im.width
    panel = round(224 * 80 / 60) + 8  # img0.png is 80 x 60
    assert widths[True] == widths[False] + panel
