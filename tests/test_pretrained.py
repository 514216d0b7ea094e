"""The models shipped inside the package: registered, verified, loadable offline, and giving
the same prediction as when they were accepted (golden values).

Regenerate the golden file after retraining on purpose:
    AMNET_ACCEPT_GOLDEN=1 .venv/bin/python -m pytest tests/test_pretrained.py
"""

import json
import os
from pathlib import Path

import pytest

import amnet
from amnet.checkpoint import get_model_entry, list_models, resolve_model
from amnet.fileio import sha256_file

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
GOLDEN = Path(__file__).resolve().parent / "golden" / "pretrained.json"
SHIPPED = [n for n in list_models() if get_model_entry(n).file]


def test_the_default_alias_names_a_shipped_model():
    assert get_model_entry("default").name in SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_file_matches_its_sha256_and_size_limit(name):
    entry = get_model_entry(name)
    path = resolve_model(name)  # verifies the sha256; never downloads (no URL)
    assert entry.url is None and sha256_file(path) == entry.sha256
    assert path.stat().st_size <= 60e6


@pytest.mark.parametrize("name", SHIPPED)
def test_golden_prediction_on_an_example(name):
    p = amnet.load(name)
    r = p.predict(EXAMPLES / "chelsea.jpg")
    got = {"score": r.score, "step_scores": list(r.step_scores)}
    golden = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    if os.environ.get("AMNET_ACCEPT_GOLDEN"):
        golden[name] = got
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(golden, indent=1) + "\n")
    assert name in golden, "no golden value: run with AMNET_ACCEPT_GOLDEN=1 once"
    assert got["score"] == pytest.approx(golden[name]["score"], abs=1e-4)
    assert got["step_scores"] == pytest.approx(golden[name]["step_scores"], abs=1e-4)
    assert 0.0 < r.score < 1.0
    assert r.attention.shape == (len(r.step_scores), 14, 14)


def test_weights_read_once_give_the_same_model_as_read_twice():
    """The default loads the trunk's weights once and gives the kernel prior's descriptor the
    layers after the cut (create_trunk_and_tail); with trunk_weights given, the trunk and the
    descriptor load them separately, as before: the same scores, bit for bit."""
    from amnet.inference.predictor import Predictor
    from amnet.trunks.registry import get_trunk_spec, resolve_weights

    name = get_model_entry("default").name
    once = Predictor.from_checkpoint(name)
    path = resolve_weights(get_trunk_spec(once.meta["trunk"]))
    twice = Predictor.from_checkpoint(name, trunk_weights=str(path))
    a, b = once.predict(EXAMPLES / "rocket.jpg"), twice.predict(EXAMPLES / "rocket.jpg")
    assert a.score == b.score and a.step_scores == b.step_scores
    assert (a.attention == b.attention).all()
