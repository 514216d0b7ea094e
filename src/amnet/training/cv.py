"""Evaluation and cross-validation protocols (LaMem 5 splits, SUN 25, LNSIM 25) with the
paper's ablations: no attention, T in {1, 3, 5}, and a ridge-regression floor."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from amnet import fileio as hub
from amnet.model.head import AMNetConfig
from amnet.model.prior import KERNELS
from amnet.model.views import check_views
from amnet.training.cache import CROP_VIEWS, FeatureSet, FeatureStore
from amnet.training.data import DataConfig, load_records
from amnet.training.heads import TrainConfig, fit, predict_features
from amnet.training.metrics import mse, spearman
from amnet.training.priors import KernelDescriptors, fit_prior, predict_prior
from amnet.trunks.registry import get_trunk_spec

PROTOCOLS = {"lamem5": ("lamem", 5, 1), "sun25": ("sun", 25, 1), "lnsim25": ("isola", 25, 0)}
VARIANTS = {  # name -> changes to the AMNet configuration (None: ridge floor)
    "amnet": {},
    "amnet-noatt": {"attention": False},
    "amnet-T1": {"steps": 1},
    "amnet-T5": {"steps": 5},
    "amnet+ridge": {},  # the amnet heads averaged with a ridge prior (PRIOR_MIX)
    "amnet+kernel": {},  # the amnet heads averaged with a kernel prior (PRIOR_MIX)
    "ridge": None,
    "kernel": None,  # the kernel prior alone (amnet.training.priors.fit_kernel_prior)
}
# weight of the prior in the score: the linear prior (ridge) or the kernel prior (kernel)
PRIOR_MIX = {"amnet+ridge": 0.5, "amnet+kernel": 0.8}
PRIOR_VIEWS = ("orig", "flip", "crop4", "crop9")  # the shipped recipe's kernel views


@dataclass(frozen=True)
class CVConfig:
    protocol: str  # lamem5 | sun25 | lnsim25
    root: str
    out: str
    splits: tuple[int, ...] | None = None  # 0-based split indices; None = all
    trunk: str = "resnet152"
    variants: tuple[str, ...] = tuple(VARIANTS)
    model: AMNetConfig = field(default_factory=AMNetConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    val_fraction: float = 0.1
    flip: bool = True  # cache the mirrored view (training augmentation and test-time flip)
    crops: int = 0  # cache this many crop views (training augmentation only)
    cache_root: str | None = None
    kernel: str = "laplace"  # the kernel prior's kernel (amnet.model.head.KERNELS)
    extra_trunk: str | None = None  # a second trunk whose descriptor the kernel prior appends
    # the views the kernel prior's descriptor is averaged over (with test-time flips; without,
    # "orig" alone): the image, its mirror image and the centre crop of both (amnet.model.views)
    prior_views: tuple[str, ...] = PRIOR_VIEWS

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {sorted(PROTOCOLS)}")
        unknown = set(self.variants) - set(VARIANTS)
        if unknown:
            raise ValueError(f"unknown variants {sorted(unknown)}; known: {sorted(VARIANTS)}")
        n = PROTOCOLS[self.protocol][1]
        if self.splits is not None and any(not 0 <= s < n for s in self.splits):
            raise ValueError(f"{self.protocol} has splits 0..{n - 1}")
        if not 0 <= self.crops <= len(CROP_VIEWS):
            raise ValueError(f"crops must be in 0..{len(CROP_VIEWS)}, got {self.crops}")
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {self.kernel!r}")
        if self.extra_trunk is not None:
            get_trunk_spec(self.extra_trunk)  # KeyError naming the registered trunks
        check_views(self.prior_views, with_orig=True)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["splits"] = list(self.splits) if self.splits is not None else None
        d["variants"] = list(self.variants)
        return d


def ridge_floor(train: FeatureSet, val: FeatureSet, test: FeatureSet) -> np.ndarray:
    """Ridge regression on globally pooled trunk features (averaged over the test-time views,
    never the crops), alpha chosen on validation rho."""

    def pooled(d: FeatureSet) -> np.ndarray:
        views = d.views[: d.n_test_views]
        return np.mean([v.astype(np.float32).mean((2, 3)) for v in views], axis=0)

    Xtr, Xva, Xte = pooled(train), pooled(val), pooled(test)
    mu, sd = Xtr.mean(0), Xtr.std(0) + 1e-6
    Xtr, Xva, Xte = (Xtr - mu) / sd, (Xva - mu) / sd, (Xte - mu) / sd
    ymu = train.targets.mean()
    best = (-2.0, None)
    for alpha in 10.0 ** np.arange(0, 6.5, 0.5):
        w = np.linalg.solve(
            Xtr.T @ Xtr + alpha * np.eye(Xtr.shape[1]), Xtr.T @ (train.targets - ymu)
        )
        rho = spearman(Xva @ w + ymu, val.targets)
        if rho > best[0]:
            best = (rho, w)
    return Xte @ best[1] + ymu


def protocol_splits(cfg: CVConfig) -> list[int]:
    kind, n, base = PROTOCOLS[cfg.protocol]
    return list(cfg.splits) if cfg.splits is not None else list(range(n))


def _data_config(cfg: CVConfig, k: int) -> DataConfig:
    kind, _, base = PROTOCOLS[cfg.protocol]
    return DataConfig(kind, cfg.root, split=k + base, val_fraction=cfg.val_fraction, seed=k)


def split_records(cfg: CVConfig, k: int) -> dict[str, list]:
    """The train, val and test records of split k (0-based) of ``cfg``'s protocol."""
    return {p: load_records(_data_config(cfg, k), p) for p in ("train", "val", "test")}


def result_row(model: str, split: int, pred, targets, seconds: float) -> dict:
    """One row of ``results.csv``: Spearman rho and MSE of ``pred`` against ``targets``."""
    return {"model": model, "split": split, "rho": f"{spearman(pred, targets):.6f}",
            "mse": f"{mse(pred, targets):.6f}", "seconds": f"{seconds:.1f}"}  # fmt: skip


def _read_results(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_results(out: Path, rows: list[dict]) -> None:
    """``out``/results.csv and results.md (the folder is made if need be), written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    with hub.atomic_write(out / "results.csv", "w") as f:
        w = csv.DictWriter(f, fieldnames=["model", "split", "rho", "mse", "seconds"])
        w.writeheader()
        w.writerows(rows)
    with hub.atomic_write(out / "results.md", "w") as f:
        f.write(markdown_table(rows))


def read_predictions(path: str | Path) -> dict[str, float]:
    """{image: prediction} from a file written by ``write_predictions``."""
    with open(path, newline="") as f:
        return {r["image"]: float(r["prediction"]) for r in csv.DictReader(f)}


def write_predictions(path: Path, test: FeatureSet, pred: np.ndarray) -> None:
    """One model's test predictions on one split (image,target,prediction), so that models
    can be compared image by image, blended or re-scored later."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with hub.atomic_write(path, "w") as f:
        f.write("image,target,prediction\n")
        f.writelines(f"{i},{t:.6f},{p:.6f}\n" for i, t, p in zip(test.ids, test.targets, pred,
                                                                strict=True))  # fmt: skip


def summarise(rows: list[dict]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for name in dict.fromkeys(r["model"] for r in rows):
        rs = [r for r in rows if r["model"] == name]
        rho = np.array([float(r["rho"]) for r in rs])
        err = np.array([float(r["mse"]) for r in rs])
        secs = np.array([float(r.get("seconds") or 0) for r in rs])
        out[name] = {
            "n": len(rs),
            "rho_mean": rho.mean(),
            "rho_std": rho.std(),
            "mse_mean": err.mean(),
            "mse_std": err.std(),
            "seconds": secs.mean(),
        }
    return out


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| model | splits | Spearman ρ (mean ± std) | MSE (mean ± std) | s / split |",
        "|---|---|---|---|---|",
    ]
    for name, s in summarise(rows).items():
        lines.append(
            f"| {name} | {s['n']} | {s['rho_mean']:.3f} ± {s['rho_std']:.3f} | "
            f"{s['mse_mean']:.4f} ± {s['mse_std']:.4f} | {s['seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


class _KernelData:
    """The kernel prior of each split (``KernelDescriptors``: descriptors computed once for
    every image, on first use), fitted on the split's train + val parts."""

    def __init__(self, cfg: CVConfig, store: FeatureStore, log) -> None:
        self.cfg, self.store, self.log = cfg, store, log
        self.data: KernelDescriptors | None = None
        self.preds: dict[int, np.ndarray] = {}

    def _kept(self, records) -> tuple[list[str], np.ndarray]:
        """Paths and scores of the readable ``records`` (as FeatureStore.featureset keeps
        them, in order)."""
        keep = [r for r in records if os.fspath(r.path) in self.store.index]
        return [os.fspath(r.path) for r in keep], np.array([r.score for r in keep])

    def predict(self, k: int, parts: dict) -> np.ndarray:
        """Split k's test predictions of the kernel prior fitted on its train + val parts
        (penalty by leave-one-out), computed once per split."""
        if k not in self.preds:
            if self.data is None:
                t0 = time.time()
                views = self.cfg.prior_views if self.cfg.train.views else ("orig",)
                paths = sorted(self.store.index, key=self.store.index.get)  # row order
                self.data = KernelDescriptors(
                    self.cfg.trunk, paths, views, kernel=self.cfg.kernel, have=self.store,
                    extra_trunk=self.cfg.extra_trunk, root=self.cfg.cache_root, log=self.log,
                )  # fmt: skip
                self.log(f"kernel descriptors {self.data.X.shape} in {time.time() - t0:.0f}s")
            prior, _ = self.data.fit(*self._kept(parts["train"] + parts["val"]))
            self.preds[k] = self.data.predict(prior, self._kept(parts["test"])[0])
        return self.preds[k]


def run_cv(cfg: CVConfig, log=None) -> list[dict]:
    """Train and evaluate every (variant, split); resumable: finished rows in
    ``out/results.csv`` are kept and skipped. Returns all rows."""
    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    with hub.atomic_write(out / "config.json", "w") as f:
        json.dump(cfg.to_dict(), f, indent=1)
    splits = protocol_splits(cfg)
    sets = {k: split_records(cfg, k) for k in splits}
    for k, s in sets.items():  # model selection must never see test images
        test_ids = {r.image_id for r in s["test"]}
        if test_ids & {r.image_id for r in s["train"] + s["val"]}:
            raise RuntimeError(f"split {k}: test images in the training/validation part")
    paths = sorted({r.path for s in sets.values() for p in s.values() for r in p})
    store = FeatureStore(
        cfg.trunk, paths, flip=cfg.flip, crops=cfg.crops, root=cfg.cache_root, log=log
    )
    if store.errors:
        log(f"{len(store.errors)} images could not be read and were left out")
    rows = _read_results(out / "results.csv")
    done = {(r["model"], int(r["split"])) for r in rows}
    kernel = _KernelData(cfg, store, log)
    for k in splits:
        train, val, test = (store.featureset(sets[k][p]) for p in ("train", "val", "test"))
        heads: dict[AMNetConfig, np.ndarray] = {}  # test predictions of the heads trained so far
        for name in cfg.variants:
            if (name, k) in done:
                continue
            t0 = time.time()
            change = VARIANTS[name]
            if name == "kernel":
                pred = kernel.predict(k, sets[k])
            elif change is None:
                pred = ridge_floor(train, val, test)
            else:
                mcfg = dataclasses.replace(cfg.model, **change)
                base = name.partition("+")[0]  # amnet, amnet+ridge, amnet+kernel: one head
                saved = out / "predictions" / f"{base}-split{k}.csv"
                if mcfg not in heads and (base, k) in done and saved.is_file():
                    got = read_predictions(saved)  # resumed: the head's saved predictions
                    heads[mcfg] = np.array([got[i] for i in test.ids])
                if mcfg not in heads:
                    tc = dataclasses.replace(cfg.train, seed=cfg.train.seed + k)
                    res = fit(mcfg, tc, train, val, progress=False)
                    heads[mcfg] = predict_features(res.head, test, views=tc.views)
                pred = heads[mcfg]
                mix = PRIOR_MIX.get(name, 0.0)
                if name.endswith("+kernel"):
                    pred = (1 - mix) * pred + mix * kernel.predict(k, sets[k])
                elif mix:
                    prior, _ = fit_prior(train, val)
                    prior_pred = predict_prior(prior, test, views=cfg.train.views)
                    pred = (1 - mix) * pred + mix * prior_pred
            write_predictions(out / "predictions" / f"{name}-split{k}.csv", test, pred)
            row = result_row(name, k, pred, test.targets, time.time() - t0)
            rows.append(row)
            write_results(out, rows)
            log(
                f"split {k} {name:12s} rho {float(row['rho']):.4f}  mse {float(row['mse']):.4f}"
                f"  ({row['seconds']}s)"
            )
    return rows
