"""Training the AMNet head on cached trunk features: compound loss, Adam, cosine schedule,
early stopping at the best validation Spearman rho, a resumable checkpoint every epoch."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from amnet.model.head import AMNetConfig, AMNetHead, AMNetOutput
from amnet.training.cache import FeatureSet
from amnet.training.metrics import spearman


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation of the head; saved beside every output and inside checkpoints."""

    epochs: int = 30
    batch_size: int = 32
    lr: float = 3e-4
    min_lr_ratio: float = 0.05  # cosine decay to lr * min_lr_ratio
    weight_decay: float = 1e-4  # L2 weight decay (Adam's, as in the paper)
    att_weight: float = 1e-3  # weight of the attention regulariser
    att_norm: int = 2  # 1 or 2: L1 or L2 attention regulariser
    patience: int = 8  # epochs without a better validation rho before stopping
    seed: int = 0
    augment_flip: bool = True  # train on the flipped view too, when it is cached
    augment_crops: bool = True  # train on the crop views too, when they are cached
    views: bool = True  # test-time views: average the image and its mirror when predicting

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise ValueError("epochs, batch_size and patience must be >= 1")
        if not self.lr > 0 or self.weight_decay < 0 or self.att_weight < 0:
            raise ValueError("lr must be > 0; weight_decay and att_weight >= 0")
        if self.att_norm not in (1, 2):
            raise ValueError("att_norm must be 1 or 2")
        if not 0 < self.min_lr_ratio <= 1:
            raise ValueError("min_lr_ratio must be in (0, 1]")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        if "tta_flip" in d:  # its name before "views" was the one word for test-time views
            d["views"] = d.pop("tta_flip")
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {sorted(unknown)}")
        return cls(**d)


@dataclass
class FitResult:
    head: AMNetHead  # the best head (highest validation rho), eval mode
    history: list[dict]
    best_epoch: int
    best_rho: float


def attention_penalty(attention: torch.Tensor, norm: int) -> torch.Tensor:
    """Regulariser on the attention weights (B, T, H, W): the L1/L2 distance between the
    attention summed over the T steps and an even spread T/L over the L locations, so the
    glimpses together cover the image instead of collapsing onto one place."""
    B, T = attention.shape[:2]
    if T == 0:
        return attention.new_zeros(())
    total = attention.flatten(2).sum(1)  # (B, L)
    d = total - T / total.shape[1]
    return (d.abs() if norm == 1 else d.pow(2)).sum(1).mean()


def loss_fn(out: AMNetOutput, y: torch.Tensor, cfg: AMNetConfig, tc: TrainConfig):
    target = (y - cfg.target_mean) * cfg.target_scale  # normalised units
    mse = torch.mean((out.raw - target) ** 2)
    return mse + tc.att_weight * attention_penalty(out.attention, tc.att_norm), mse


@torch.inference_mode()
def predict_features(
    head: AMNetHead, data: FeatureSet, *, batch_size: int = 128, views: bool = True,
    reduced: bool = False,
) -> np.ndarray:  # fmt: skip
    """Scores (N,) on the [0, 1] scale, averaged over the test-time views (original and
    mirror image, never the crops) when ``views``, else of the original view alone.
    ``reduced``: the features already went through the head's fixed reduction."""
    head.eval()
    forward = head.forward_reduced if reduced else head
    maps = data.views[: data.n_test_views] if views else data.views[:1]
    out = np.zeros(len(data), np.float64)
    for v in maps:
        for i in range(0, len(data), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(v[i : i + batch_size])).float()
            out[i : i + batch_size] += forward(x).score.double().numpy()
    return out / len(maps)


@torch.inference_mode()
def fit_pca(views: list[np.ndarray], dim: int, *, max_rows: int = 60_000, seed: int = 0):
    """PCA of the feature vectors at all locations of all views: (weight (R, C), bias (R,))
    so that ``weight @ f + bias`` are the centred top-R principal components."""
    C = views[0].shape[1]
    rows_per = max(1, max_rows // (len(views) * len(views[0])))
    rng = np.random.default_rng(seed)
    samples = []
    for v in views:
        for i in range(len(v)):
            f = np.asarray(v[i], np.float32).reshape(C, -1)  # (C, L)
            samples.append(f[:, rng.choice(f.shape[1], min(rows_per, f.shape[1]), False)])
    X = torch.from_numpy(np.concatenate(samples, axis=1).T.copy())  # (M, C)
    mean = X.mean(0)
    cov = (X - mean).T @ (X - mean) / max(len(X) - 1, 1)  # (C, C)
    _, vecs = torch.linalg.eigh(cov.double())
    weight = vecs[:, -dim:].flip(-1).T.float()  # (R, C), largest components first
    return weight, -(weight @ mean)


@torch.inference_mode()
def reduce_features(head: AMNetHead, data: FeatureSet, batch_size: int = 256) -> FeatureSet:
    """Apply the head's fixed reduction once: (N, C, H, W) float16 -> (N, R, H, W) float32."""
    views = []
    for v in data.views:
        parts = [
            head.reduce(torch.from_numpy(np.ascontiguousarray(v[i : i + batch_size])).float())
            for i in range(0, len(v), batch_size)
        ]
        views.append(torch.cat(parts).numpy())
    return FeatureSet(views, data.targets, data.ids, data.n_test_views)


def _lr(tc: TrainConfig, epoch: int) -> float:
    t = epoch / max(tc.epochs - 1, 1)
    return tc.lr * (tc.min_lr_ratio + (1 - tc.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def _save_state(path: Path, head, opt, best_state, meta: dict) -> None:
    tensors = {f"model.{k}": v.detach().clone() for k, v in head.state_dict().items()}
    tensors.update({f"best.{k}": v.clone() for k, v in best_state.items()})
    osd = opt.state_dict()
    for idx, st in osd["state"].items():
        for k, v in st.items():
            tensors[f"optim.{idx}.{k}"] = torch.as_tensor(v).clone()
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {**meta, "param_groups": osd["param_groups"]}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp),
              metadata={"state": json.dumps(meta)})  # fmt: skip
    os.replace(tmp, path)


def _load_state(path: Path, head, opt) -> tuple[dict, dict]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["state"])
    t = load_file(str(path))
    head.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")})
    best = {k[5:]: v for k, v in t.items() if k.startswith("best.")}
    state: dict[int, dict] = {}
    for k, v in t.items():
        if k.startswith("optim."):
            _, idx, name = k.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta.pop("param_groups")})
    torch.set_rng_state(t["rng.torch"])
    return meta, best


def fit(
    model_cfg: AMNetConfig, tc: TrainConfig, train: FeatureSet, val: FeatureSet, *,
    out_dir: str | os.PathLike | None = None, resume: bool = False,
    progress: bool | None = None, stop_after: int | None = None,
) -> FitResult:  # fmt: skip
    """Train a head on ``train``, select the epoch with the best Spearman rho on ``val``.

    With ``out_dir``, writes ``last.state.safetensors`` (full training state) after every
    epoch and a CSV log; ``resume=True`` continues from it and ends exactly as an
    uninterrupted run would. ``stop_after`` ends after that many epochs (to simulate a kill).
    Each sample is drawn from a random view every epoch: the original, its mirror image
    (``augment_flip``) and the crops (``augment_crops``), as far as ``train`` holds them."""
    if len(train) < 2 or len(val) < 2:
        raise ValueError("training and validation sets need at least 2 images each")
    val = val.test_views()  # crops are never used for validation
    if not tc.augment_crops:
        train = train.test_views()
    mean = float(np.mean(train.targets))
    scale = 1.0 / max(float(np.std(train.targets)), 1e-3)
    cfg = dataclasses.replace(model_cfg, target_mean=mean, target_scale=scale)
    torch.manual_seed(tc.seed)
    head = AMNetHead(cfg)
    if cfg.reduce_dim:
        head.set_reduction(*fit_pca(train.views, cfg.reduce_dim, seed=tc.seed))
        train, val = reduce_features(head, train), reduce_features(head, val)
    opt = torch.optim.Adam(head.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    out = Path(out_dir) if out_dir else None
    state_path = out / "last.state.safetensors" if out else None
    history: list[dict] = []
    best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
    best_rho, best_epoch, start = -math.inf, -1, 0
    if resume and state_path and state_path.exists():
        meta, best_state = _load_state(state_path, head, opt)
        history, best_rho, best_epoch = meta["history"], meta["best_rho"], meta["best_epoch"]
        start = meta["epoch"] + 1
    # the views a sample may be drawn from: original, mirror image, crops
    pool = torch.tensor([0, *range(1, train.n_test_views if tc.augment_flip else 1),
                         *range(train.n_test_views, len(train.views))])  # fmt: skip
    targets = torch.from_numpy(train.targets.astype(np.float32))
    show = sys.stderr.isatty() if progress is None else progress
    for epoch in range(start, tc.epochs):
        if epoch - best_epoch > tc.patience and best_epoch >= 0:
            break
        if stop_after is not None and epoch >= stop_after:
            break
        t0 = time.time()
        lr = _lr(tc, epoch)
        for g in opt.param_groups:
            g["lr"] = lr
        gen = torch.Generator().manual_seed(tc.seed * 100_003 + epoch)
        order = torch.randperm(len(train), generator=gen)
        view_of = pool[torch.randint(len(pool), (len(train),), generator=gen)]
        head.train()
        total, seen = 0.0, 0
        batches = range(0, len(train), tc.batch_size)
        if show:
            from tqdm import tqdm

            batches = tqdm(batches, desc=f"epoch {epoch + 1}/{tc.epochs}", leave=False)
        for i in batches:
            idx = order[i : i + tc.batch_size]
            if len(idx) < 2:
                continue  # BatchNorm needs two samples
            x = torch.stack(
                [torch.from_numpy(np.asarray(train.views[int(view_of[j])][int(j)])) for j in idx]
            ).float()  # (B, C, H, W)
            loss, mse = loss_fn(head.forward_reduced(x), targets[idx], cfg, tc)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(mse.detach()) * len(idx)
            seen += len(idx)
        pred = predict_features(head, val, views=tc.views, reduced=True)
        rho = spearman(pred, val.targets)
        row = {"epoch": epoch + 1, "lr": lr, "train_mse": total / max(seen, 1),
               "val_rho": rho, "val_mse": float(np.mean((pred - val.targets) ** 2)),
               "seconds": time.time() - t0}  # fmt: skip
        history.append(row)
        if rho > best_rho:
            best_rho, best_epoch = rho, epoch
            best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
        if out:
            out.mkdir(parents=True, exist_ok=True)
            meta = {
                "epoch": epoch, "history": history, "best_rho": best_rho,
                "best_epoch": best_epoch, "model": cfg.to_dict(), "train": tc.to_dict(),
            }  # fmt: skip
            _save_state(state_path, head, opt, best_state, meta)
            write_log(out / "log.csv", history)
        if show:
            print(f"epoch {epoch + 1}: train mse {row['train_mse']:.4f}  val rho {rho:.4f}  "
                  f"({row['seconds']:.1f}s)", file=sys.stderr)  # fmt: skip
    head.load_state_dict(best_state)
    return FitResult(head.eval(), history, best_epoch + 1, best_rho)


def write_log(path: Path, history: list[dict]) -> None:
    from amnet.fileio import atomic_write

    with atomic_write(path, "w") as f:
        w = csv.DictWriter(f, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)


def plot_history(path: Path, history: list[dict]) -> bool:
    """PNG of training loss and validation rho per epoch (needs matplotlib: ``amnet[train]``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(ep, [h["train_mse"] for h in history], label="train MSE (normalised)", color="C0")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train MSE")
    ax2 = ax.twinx()
    ax2.plot(ep, [h["val_rho"] for h in history], label="validation rho", color="C1")
    ax2.set_ylabel("validation Spearman rho")
    fig.legend(loc="upper center", ncol=2, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
