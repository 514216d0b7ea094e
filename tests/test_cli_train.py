"""`amnet cache/train/evaluate/cv` called in-process on tiny synthetic data."""

import csv
import json

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from amnet.checkpoint import read_metadata
from amnet.cli.main import main
from amnet.training import cv as evaluate

FAST = ["--epochs", "2", "--batch-size", "8", "--hidden-size", "8", "--proj-dim", "8",
        "--att-dim", "4"]  # fmt: skip


@pytest.fixture(scope="module")
def isola_root(tmp_path_factory):
    """A miniature Isola/LNSIM layout: 40 images (3 listed ones missing), 25 rows per half."""
    root = tmp_path_factory.mktemp("isola")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    n = 43
    base = rng.random(n) * 0.6 + 0.2
    for j in range(n - 3):
        v = int(base[j] * 255)
        a = np.clip(rng.normal(v, 20, (48, 48, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(a).save(root / "images" / f"{j + 1:04d}.jpg")
    for half in (1, 2):
        hrs = np.clip(base[None, :] + rng.normal(0, 0.05, (25, n)), 0, 1)
        savemat(root / f"subject_hrs{half}.mat", {f"subject_hrs{half}": hrs})
    return root


def test_train_evaluate_and_resume(synthetic_dataset, tiny_trunk_name, tmp_path, capsys):
    out = tmp_path / "run"
    data = ["--data", "list", "--root", str(synthetic_dataset), "--file",
            str(synthetic_dataset / "scores.txt"), "--cache-root", str(tmp_path / "c")]  # fmt: skip
    assert main(["train", *data, "--trunk", tiny_trunk_name, "--out", str(out), *FAST]) == 0
    ckpt = out / "best.safetensors"
    meta = read_metadata(ckpt)
    assert meta["trunk"] == tiny_trunk_name and meta["model"]["hidden_size"] == 8
    assert -1 <= meta["metrics"]["val_rho"] <= 1
    assert json.loads((out / "config.json").read_text())["train"]["epochs"] == 2
    assert len(list(csv.DictReader(open(out / "log.csv")))) == 2
    # resume a finished run with more epochs from its config file
    assert main(["train", "--config", str(out / "config.json"), "--resume", "--epochs", "3"]) == 0
    assert len(list(csv.DictReader(open(out / "log.csv")))) == 3
    capsys.readouterr()
    ev = ["evaluate", "--model", str(ckpt), "--part", "val", "--out", str(tmp_path / "ev"),
          *data[:6]]  # fmt: skip
    assert main(ev) == 0
    printed = capsys.readouterr().out
    assert "Spearman rho" in printed and "tie-unaware" in printed
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["n"] == 16 and m["failed"] == 0


def test_cache_and_train_with_crop_views(synthetic_dataset, tiny_trunk_name, tmp_path, capsys):
    cache = tmp_path / "c"
    data = ["--data", "list", "--root", str(synthetic_dataset), "--file",
            str(synthetic_dataset / "scores.txt"), "--cache-root", str(cache)]  # fmt: skip
    assert main(["cache", *data, "--trunk", tiny_trunk_name, "--crops", "2"]) == 0
    assert "160 images cached" in capsys.readouterr().out
    for view in ("orig", "flip", "crop0", "crop1"):
        (folder,) = cache.glob(f"{tiny_trunk_name}-{view}-*")
        assert len(list(folder.glob("*/*.npy"))) == 160, view
    assert not list(cache.glob(f"{tiny_trunk_name}-crop2-*"))
    out = tmp_path / "run"
    args = ["train", *data, "--trunk", tiny_trunk_name, "--out", str(out), "--crops", "2",
            "--no-flip", *FAST]  # fmt: skip
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "features crop1: 160 cached, 0 computed" in err and "features flip" not in err
    job = json.loads((out / "config.json").read_text())
    assert job["crops"] == 2 and job["flip"] is False
    assert read_metadata(out / "best.safetensors")["training"]["job"]["crops"] == 2
    assert main(["train", *data, "--out", str(out), "--crops", "11"]) == 2
    assert "crops must be in 0..10" in capsys.readouterr().err


def test_cv_records_crops(isola_root, tiny_trunk_name, tmp_path):
    out = tmp_path / "cv"
    args = ["cv", "--protocol", "lnsim25", "--root", str(isola_root), "--out", str(out),
            "--splits", "1", "--variants", "amnet,ridge", "--crops", "1", "--trunk",
            tiny_trunk_name, "--cache-root", str(tmp_path / "c"), *FAST]  # fmt: skip
    assert main(args) == 0
    assert json.loads((out / "config.json").read_text())["crops"] == 1
    assert len(list((tmp_path / "c").glob(f"{tiny_trunk_name}-crop0-*"))) == 1
    assert len(list(csv.DictReader(open(out / "results.csv")))) == 2


def test_cv_lnsim25_layout_with_ablations(isola_root, tiny_trunk_name, tmp_path, capsys):
    out = tmp_path / "cv"
    args = ["cv", "--protocol", "lnsim25", "--root", str(isola_root), "--out", str(out),
            "--splits", "0,3", "--trunk", tiny_trunk_name, "--cache-root", str(tmp_path / "c"),
            *FAST]  # fmt: skip
    assert main(args) == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert {r["model"] for r in rows} == {
        "amnet",
        "amnet-noatt",
        "amnet-T1",
        "amnet-T5",
        "amnet+ridge",
        "amnet+kernel",
        "ridge",
        "kernel",
    }
    assert sorted({int(r["split"]) for r in rows}) == [0, 3] and len(rows) == 16
    assert all(-1 <= float(r["rho"]) <= 1 and float(r["mse"]) >= 0 for r in rows)
    assert "| amnet |" in (out / "results.md").read_text()
    assert "amnet " in capsys.readouterr().out
    # a rerun finds every row done and trains nothing
    before = (out / "results.csv").read_text()
    assert main(args) == 0
    assert (out / "results.csv").read_text() == before


def test_amnet_plus_ridge_averages_the_amnet_head_with_the_prior(
    isola_root, tiny_trunk_name, tmp_path, monkeypatch
):
    from amnet.model.head import AMNetConfig
    from amnet.training.cache import FeatureStore
    from amnet.training.cv import CVConfig, _data_config
    from amnet.training.heads import TrainConfig
    from amnet.training.priors import fit_prior, predict_prior

    calls = []
    real_fit = evaluate.fit
    monkeypatch.setattr(evaluate, "fit", lambda *a, **k: calls.append(1) or real_fit(*a, **k))
    cfg = CVConfig("lnsim25", str(isola_root), str(tmp_path / "cv"), splits=(0,),
                   trunk=tiny_trunk_name, variants=("amnet", "amnet+ridge"),
                   cache_root=str(tmp_path / "c"),
                   model=AMNetConfig(in_channels=16, proj_dim=8, att_dim=4, hidden_size=8,
                                     fc_dim=8), train=TrainConfig(epochs=2))  # fmt: skip
    evaluate.run_cv(cfg, log=lambda m: None)
    assert len(calls) == 1  # amnet+ridge reuses the amnet head of the same split

    def preds(name):
        rows = csv.DictReader(open(tmp_path / "cv" / "predictions" / f"{name}-split0.csv"))
        return {r["image"]: (float(r["target"]), float(r["prediction"])) for r in rows}

    amnet, blend = preds("amnet"), preds("amnet+ridge")
    assert amnet.keys() == blend.keys() and len(amnet) >= 15
    # recompute the prior independently: blend = (amnet + prior) / 2
    recs = {p: evaluate.load_records(_data_config(cfg, 0), p) for p in ("train", "val", "test")}
    store = FeatureStore(tiny_trunk_name, sorted({r.path for v in recs.values() for r in v}),
                         root=tmp_path / "c", log=lambda m: None)  # fmt: skip
    prior, _ = fit_prior(store.featureset(recs["train"]), store.featureset(recs["val"]))
    test = store.featureset(recs["test"])
    expected = (np.array([amnet[i][1] for i in test.ids]) + predict_prior(prior, test)) / 2
    np.testing.assert_allclose([blend[i][1] for i in test.ids], expected, atol=2e-6)
    assert np.abs(expected - [amnet[i][1] for i in test.ids]).max() > 1e-4


def test_usage_errors_exit_2(capsys):
    assert main(["cv", "--protocol", "nope", "--root", "x", "--out", "y"]) == 2
    assert main(["train", "--epochs", "1"]) == 2
    assert "--out is required" in capsys.readouterr().err


def test_amnet_plus_kernel_blends_the_amnet_head_with_the_kernel_prior(
    isola_root, tiny_trunk_name, tmp_path
):
    from amnet.builders import build_descriptor
    from amnet.model.head import AMNetConfig
    from amnet.training.cache import FeatureStore
    from amnet.training.cv import PRIOR_MIX, CVConfig, _data_config
    from amnet.training.descriptors import block_sizes, describe_views
    from amnet.training.heads import TrainConfig
    from amnet.training.priors import fit_kernel_prior, predict_kernel

    cfg = CVConfig("lnsim25", str(isola_root), str(tmp_path / "cv"), splits=(0,),
                   trunk=tiny_trunk_name, variants=("amnet", "amnet+kernel", "kernel"),
                   cache_root=str(tmp_path / "c"),
                   model=AMNetConfig(in_channels=16, proj_dim=8, att_dim=4, hidden_size=8,
                                     fc_dim=8), train=TrainConfig(epochs=2))  # fmt: skip
    evaluate.run_cv(cfg, log=lambda m: None)

    def preds(name):
        rows = csv.DictReader(open(tmp_path / "cv" / "predictions" / f"{name}-split0.csv"))
        return {r["image"]: float(r["prediction"]) for r in rows}

    head, blend, kern = preds("amnet"), preds("amnet+kernel"), preds("kernel")
    recs = {p: evaluate.load_records(_data_config(cfg, 0), p) for p in ("train", "val", "test")}
    # the kernel prior's four views computed again, without the cache
    assert cfg.prior_views == ("orig", "flip", "crop4", "crop9") and cfg.kernel == "laplace"
    store = FeatureStore(tiny_trunk_name, sorted({r.path for v in recs.values() for r in v}),
                         views=cfg.prior_views, cache=False, log=lambda m: None)  # fmt: skip
    fit_on = store.featureset(recs["train"] + recs["val"])
    d = build_descriptor(tiny_trunk_name)
    prior, _ = fit_kernel_prior(d, describe_views(d, fit_on), fit_on.targets,
                                block_sizes(d, 16), cfg.kernel)  # fmt: skip
    test = store.featureset(recs["test"])
    want = predict_kernel(prior, describe_views(d, test))
    np.testing.assert_allclose([kern[i] for i in test.ids], want, atol=2e-6)
    m = PRIOR_MIX["amnet+kernel"]
    expected = (1 - m) * np.array([head[i] for i in test.ids]) + m * want
    np.testing.assert_allclose([blend[i] for i in test.ids], expected, atol=2e-6)


def test_cv_resumed_with_a_blend_reuses_the_saved_head(isola_root, tiny_trunk_name, tmp_path,
                                                        monkeypatch):  # fmt: skip
    """Adding amnet+kernel to a finished amnet run blends the saved head predictions instead
    of training the head again."""
    from amnet.model.head import AMNetConfig
    from amnet.training.cv import PRIOR_MIX, CVConfig
    from amnet.training.heads import TrainConfig

    kw = dict(splits=(0,), trunk=tiny_trunk_name, cache_root=str(tmp_path / "c"),
              model=AMNetConfig(in_channels=16, proj_dim=8, att_dim=4, hidden_size=8, fc_dim=8),
              train=TrainConfig(epochs=2))  # fmt: skip
    out = str(tmp_path / "cv")
    evaluate.run_cv(CVConfig("lnsim25", str(isola_root), out, variants=("amnet",), **kw),
                    log=lambda m: None)  # fmt: skip

    def no_training(*a, **k):
        raise AssertionError("the head was trained again")

    monkeypatch.setattr(evaluate, "fit", no_training)
    cfg = CVConfig("lnsim25", str(isola_root), out, variants=("amnet", "amnet+kernel", "kernel"),
                   **kw)  # fmt: skip
    evaluate.run_cv(cfg, log=lambda m: None)

    def preds(name):
        return evaluate.read_predictions(tmp_path / "cv" / "predictions" / f"{name}-split0.csv")

    head, blend, kern = preds("amnet"), preds("amnet+kernel"), preds("kernel")
    m = PRIOR_MIX["amnet+kernel"]
    for i in head:
        assert blend[i] == pytest.approx((1 - m) * head[i] + m * kern[i], abs=2e-6)


def test_train_and_cv_take_the_same_config_file(synthetic_dataset, tiny_trunk_name, tmp_path,
                                                capsys):  # fmt: skip
    """One schema: the 'model' and 'train' sections of configs/lnsim25-cpu.json configure
    `amnet train` as they configure `amnet cv`; flags override the file, and a missing --data
    is a one-line error that says what to add."""
    shipped = json.loads(open("configs/lnsim25-cpu.json").read())
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({**shipped, "train": {**shipped["train"], "epochs": 1}}))
    out = tmp_path / "run"
    data = ["--data", "list", "--root", str(synthetic_dataset), "--file",
            str(synthetic_dataset / "scores.txt"), "--cache-root", str(tmp_path / "c")]  # fmt: skip
    assert (
        main(
            [
                "train",
                "--config",
                str(cfg),
                "--out",
                str(out),
                "--trunk",
                tiny_trunk_name,
                "--lr",
                "0.002",
                "--reduce-dim",
                "0",
                *data,
            ]
        )
        == 0
    )  # fmt: skip (16 channels)
    job = json.loads((out / "config.json").read_text())
    assert job["model"]["reduce_dim"] == 0 and shipped["model"]["reduce_dim"] == 64  # the flag
    assert job["model"]["hidden_size"] == shipped["model"]["hidden_size"] == 128  # from the file
    assert job["train"]["batch_size"] == shipped["train"]["batch_size"]
    assert job["train"]["epochs"] == 1 and job["train"]["lr"] == 0.002  # file, then the flag
    capsys.readouterr()
    assert (
        main(["train", "--config", "configs/lnsim25-cpu.json", "--out", str(tmp_path / "x")]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--data" in err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": {"epochz": 3}}))
    assert main(["train", "--config", str(bad), "--out", str(out), *data]) == 2
    assert "epochz" in capsys.readouterr().err


def test_every_config_field_is_a_flag():
    """Flags are generated from AMNetConfig and TrainConfig: a field without a flag fails."""
    import dataclasses

    from amnet.cli.main import build_parser
    from amnet.model.head import AMNetConfig
    from amnet.training.heads import TrainConfig

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for verb in ("train", "cv"):
        flags = {s for a in sub.choices[verb]._actions for s in a.option_strings}
        for cls, skip in ((AMNetConfig, {"in_channels"}), (TrainConfig, set())):
            for f in dataclasses.fields(cls):
                if f.name not in skip:
                    assert f"--{f.name.replace('_', '-')}" in flags, (verb, f.name)
        assert {"--views", "--no-views", "--no-attention"} <= flags
