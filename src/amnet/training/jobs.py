"""Jobs that tie the pieces together for the command line and scripts: train one model,
evaluate a model on a dataset. Each takes one typed config and writes its resolved config
beside its outputs."""

from __future__ import annotations

import csv
import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from amnet import fileio as hub
from amnet.checkpoint import save_checkpoint
from amnet.model.head import AMNetConfig
from amnet.training.cache import CROP_VIEWS, FeatureStore
from amnet.training.data import DataConfig, load_records
from amnet.training.heads import TrainConfig, fit, plot_history, write_log
from amnet.training.metrics import mse, spearman, spearman_amnet
from amnet.trunks.registry import get_trunk_spec


@dataclass(frozen=True)
class TrainJob:
    data: DataConfig
    out: str
    trunk: str = "resnet152"
    model: AMNetConfig = field(default_factory=AMNetConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    flip: bool = True  # cache mirrored views: augmentation and test-time flip
    crops: int = 0  # cache this many crop views: augmentation only (see amnet.training.cache)
    cache: bool = True
    cache_root: str | None = None
    resume: bool = False
    half: bool = False  # store the final checkpoint in float16

    def __post_init__(self) -> None:
        if not 0 <= self.crops <= len(CROP_VIEWS):
            raise ValueError(f"crops must be in 0..{len(CROP_VIEWS)}, got {self.crops}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainJob:
        d = dict(d)
        d["data"] = DataConfig(**d["data"])
        d["model"] = AMNetConfig.from_dict(d.get("model", {}))
        d["train"] = TrainConfig.from_dict(d.get("train", {}))
        if not d.get("out"):
            raise ValueError("a training job needs an output folder: --out")
        return cls(**d)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_train(job: TrainJob, log=_log):
    """Train on the job's train part, select on its val part; write ``best.safetensors``
    (a self-describing checkpoint), the resumable state, ``log.csv`` and ``loss.png``."""
    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = get_trunk_spec(job.trunk)
    model = dataclasses.replace(job.model, in_channels=spec.channels)
    job = dataclasses.replace(job, model=model)
    with hub.atomic_write(out / "config.json", "w") as f:
        json.dump(job.to_dict(), f, indent=1)
    train_r, val_r = load_records(job.data, "train"), load_records(job.data, "val")
    log(f"train {len(train_r)} images, validation {len(val_r)} images")
    store = FeatureStore(
        job.trunk,
        sorted({r.path for r in train_r + val_r}),
        flip=job.flip,
        crops=job.crops,
        cache=job.cache,
        root=job.cache_root,
        log=log,
    )
    for path, err in store.errors.items():
        log(f"skipped {path}: {err}")
    train, val = store.featureset(train_r), store.featureset(val_r)
    res = fit(model, job.train, train, val, out_dir=out, resume=job.resume)
    metrics = {
        "val_rho": res.best_rho,
        "best_epoch": res.best_epoch,
        "n_train": len(train),
        "n_val": len(val),
    }
    save_checkpoint(
        out / "best.safetensors",
        res.head,
        trunk=job.trunk,
        training={"job": job.to_dict()},
        metrics=metrics,
        half=job.half,
    )
    write_log(out / "log.csv", res.history)
    plot_history(out / "loss.png", res.history)
    log(
        f"best validation rho {res.best_rho:.4f} at epoch {res.best_epoch}; "
        f"checkpoint {out / 'best.safetensors'}"
    )
    return res


@dataclass(frozen=True)
class EvalJob:
    model: str  # registry name or checkpoint path
    data: DataConfig
    part: str = "test"
    out: str | None = None  # folder for predictions.csv, metrics.json and scatter.png
    batch_size: int = 16
    workers: int = 2
    device: str = "cpu"


def run_evaluate(job: EvalJob, log=_log) -> dict:
    """Score the images of one dataset part with a model and compare with human scores:
    Spearman rho (tie-aware, and AMNet's tie-unaware formula beside it) and MSE."""
    from amnet.inference.predictor import load

    records = load_records(job.data, job.part)
    predictor = load(job.model, device=job.device, batch_size=job.batch_size, workers=job.workers)
    preds = list(predictor.predict_iter([r.path for r in records]))
    ok = [(r, p) for r, p in zip(records, preds, strict=True) if p.ok]
    for r, p in zip(records, preds, strict=True):
        if not p.ok:
            log(f"skipped {r.path}: {p.error}")
    y = np.array([r.score for r, _ in ok])
    s = np.array([p.score for _, p in ok])
    result = {
        "model": job.model,
        "n": len(ok),
        "failed": len(records) - len(ok),
        "rho": spearman(s, y),
        "rho_amnet_formula": spearman_amnet(s, y),
        "mse": mse(s, y),
        "pred_min": float(s.min()),
        "pred_max": float(s.max()),
    }
    if job.out:
        out = Path(job.out)
        with hub.atomic_write(out / "predictions.csv", "w") as f:
            w = csv.writer(f)
            w.writerow(["path", "score", "target"])
            w.writerows([(str(r.path), f"{p.score:.6f}", f"{r.score:.6f}") for r, p in ok])
        with hub.atomic_write(out / "metrics.json", "w") as f:
            json.dump(result, f, indent=1)
        scatter_plot(out / "scatter.png", s, y, result)
    return result


def scatter_plot(path: Path, pred: np.ndarray, target: np.ndarray, result: dict) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(target, pred, s=4, alpha=0.5)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
    ax.set_xlabel("human memorability")
    ax.set_ylabel("predicted")
    ax.set_title(f"ρ = {result['rho']:.3f}, MSE = {result['mse']:.4f}, n = {result['n']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
