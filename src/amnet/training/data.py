"""Dataset readers and splits. Data code knows nothing of models: readers return records
``(image_id, path, score)``; splits are deterministic from a seed and can be saved and re-read.

Layouts:
- LaMem: ``<root>/images/`` + ``<root>/splits/{train,val,test}_{1..5}.txt`` (lines ``name score``).
- SUN Memorability as packaged for AMNet: the same with ``train_/test_{1..25}`` and no val split.
- Isola / LNSIM: ``subject_hrs1.mat`` / ``subject_hrs2.mat`` of shape (splits, images); column j
  is image ``%04d.jpg % (j + 1)`` in ``<root>/images/``.
- Any scored folder: a CSV/TSV with a path column and a score column.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("amnet.training.data")


class DatasetError(ValueError):
    """A malformed dataset file; the message names the file and line."""


@dataclass(frozen=True)
class Record:
    image_id: str
    path: Path
    score: float


def _check_score(score: float, where: str, scale: float | None) -> float:
    if not math.isfinite(score):
        raise DatasetError(f"{where}: score is not a finite number")
    if scale is not None:
        score = score / scale
    if not 0.0 <= score <= 1.0:
        raise DatasetError(
            f"{where}: score {score} is outside [0, 1]; pass a scale (e.g. score_scale=100 "
            "for percentages) to divide scores by"
        )
    return score


def _keep_existing(records: list[Record], source: str) -> list[Record]:
    kept = [r for r in records if r.path.is_file()]
    if len(kept) < len(records):
        log.warning("%s: %d of %d listed images are missing and were skipped",
                    source, len(records) - len(kept), len(records))  # fmt: skip
    return kept


def read_split_file(
    path: str | os.PathLike, images_dir: str | os.PathLike, *, score_scale: float | None = None,
    skip_missing: bool = True,
) -> list[Record]:  # fmt: skip
    """Read a LaMem/SUN split file: one ``name score`` per line."""
    path, images_dir = Path(path), Path(images_dir)
    records = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split()
            where = f"{path}:{n}"
            if len(parts) != 2:
                raise DatasetError(f"{where}: expected 'name score', got {line.strip()!r}")
            try:
                score = float(parts[1])
            except ValueError:
                raise DatasetError(f"{where}: score {parts[1]!r} is not a number") from None
            score = _check_score(score, where, score_scale)
            records.append(Record(parts[0], images_dir / parts[0], score))
    return _keep_existing(records, str(path)) if skip_missing else records


def split_files(root: str | os.PathLike, part: str, split: int) -> Path:
    """``<root>/splits/<part>_<split>.txt`` (split numbers start at 1, as in the files)."""
    p = Path(root) / "splits" / f"{part}_{split}.txt"
    if not p.is_file():
        raise FileNotFoundError(f"split file not found: {p}")
    return p


def read_lamem(root: str | os.PathLike, split: int, part: str, **kw) -> list[Record]:
    """LaMem (5 splits, train/val/test) or AMNet's SUN layout (25 splits, train/test)."""
    if part not in ("train", "val", "test"):
        raise ValueError(f"part must be train, val or test, got {part!r}")
    return read_split_file(split_files(root, part, split), Path(root) / "images", **kw)


def read_hrs(root: str | os.PathLike, half: int) -> np.ndarray:
    """The Isola/LNSIM hit-rate matrix ``subject_hrs{half}.mat``: (splits, images) float64."""
    from scipy.io import loadmat

    if half not in (1, 2):
        raise ValueError("half must be 1 or 2")
    path = Path(root) / f"subject_hrs{half}.mat"
    mat = loadmat(path)
    key = f"subject_hrs{half}"
    if key not in mat:
        raise DatasetError(f"{path}: no variable {key!r} (found {sorted(mat)})")
    a = np.asarray(mat[key], dtype=np.float64)
    if a.ndim != 2:
        raise DatasetError(f"{path}: {key} must be 2-D (splits, images), got {a.shape}")
    return a


def read_isola(
    root: str | os.PathLike, row: int, half: int, *, name_format: str = "{:04d}.jpg"
) -> list[Record]:
    """Records of participant split ``row`` (0-based) and half 1 or 2; missing images skipped."""
    hrs = read_hrs(root, half)
    if not 0 <= row < hrs.shape[0]:
        raise ValueError(f"row {row} out of range: the file has {hrs.shape[0]} splits")
    images = Path(root) / "images"
    records = []
    for j, s in enumerate(hrs[row]):
        name = name_format.format(j + 1)
        records.append(Record(name, images / name, _check_score(float(s), f"column {j}", None)))
    return _keep_existing(records, str(Path(root) / f"subject_hrs{half}.mat"))


def read_csv(
    path: str | os.PathLike, *, path_column: str = "path", score_column: str = "score",
    score_scale: float | None = None, root: str | os.PathLike | None = None,
) -> list[Record]:  # fmt: skip
    """A CSV (or TSV, by extension) with a path column and a score column; relative paths are
    resolved against ``root`` (default: the CSV's folder)."""
    path = Path(path)
    base = Path(root) if root else path.parent
    delim = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    records = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter=delim)
        for col in (path_column, score_column):
            if col not in (reader.fieldnames or []):
                raise DatasetError(f"{path}: no column {col!r} (found {reader.fieldnames})")
        for n, row in enumerate(reader, 2):
            where = f"{path}:{n}"
            try:
                score = float(row[score_column])
            except (TypeError, ValueError):
                raise DatasetError(
                    f"{where}: score {row[score_column]!r} is not a number"
                ) from None
            p = Path(row[path_column])
            records.append(Record(p.name, p if p.is_absolute() else base / p,
                                  _check_score(score, where, score_scale)))  # fmt: skip
    return _keep_existing(records, str(path))


def random_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic split of ``range(n)``: (first ``round(fraction*n)`` indices, the rest),
    each sorted. The same seed always gives the same split."""
    if not 0.0 < fraction < 1.0:
        raise ValueError("fraction must be in (0, 1)")
    perm = np.random.default_rng(seed).permutation(n)
    k = int(round(fraction * n))
    return np.sort(perm[:k]), np.sort(perm[k:])


def save_split(path: str | os.PathLike, parts: dict[str, Sequence[str]]) -> None:
    """Write named lists of image ids (e.g. train/val/test) as JSON, atomically."""
    from amnet.fileio import atomic_write

    with atomic_write(path, "w") as f:
        json.dump({k: list(v) for k, v in parts.items()}, f, indent=1)


def load_split(path: str | os.PathLike) -> dict[str, list[str]]:
    return json.loads(Path(path).read_text())


@dataclass(frozen=True)
class DataConfig:
    """Which images and scores to use. ``kind``: ``lamem`` / ``sun`` (split files under
    ``root/splits``, ``split`` numbered from 1), ``isola`` (``root/subject_hrs{1,2}.mat``,
    ``split`` = row from 0: train on one random half with hrs1 targets, test on the other half
    with hrs2 targets), ``list`` (a ``name score`` file, ``file``, images in ``root/images``)
    or ``csv`` (``file`` with ``path_column`` / ``score_column``)."""

    kind: str
    root: str
    split: int = 1
    file: str | None = None
    path_column: str = "path"
    score_column: str = "score"
    score_scale: float | None = None
    val_fraction: float = 0.1  # carved from the training part when the dataset has no val
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("lamem", "sun", "isola", "list", "csv"):
            raise ValueError(f"unknown dataset kind {self.kind!r}")
        if self.kind in ("list", "csv") and not self.file:
            raise ValueError(f"dataset kind {self.kind!r} needs a file")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError("val_fraction must be in (0, 1)")


def _carve(records: list[Record], cfg: DataConfig, part: str) -> list[Record]:
    val_idx, train_idx = random_split(len(records), cfg.val_fraction, cfg.seed + 7919)
    return [records[i] for i in (val_idx if part == "val" else train_idx)]


def load_records(cfg: DataConfig, part: str) -> list[Record]:
    """The records of ``part`` (train, val or test). Validation never overlaps test: it is
    the dataset's own val split, or carved from the training part with a fixed seed."""
    if part not in ("train", "val", "test"):
        raise ValueError(f"part must be train, val or test, got {part!r}")
    kw = {"score_scale": cfg.score_scale}
    if cfg.kind == "lamem":
        return read_lamem(cfg.root, cfg.split, part, **kw)
    if cfg.kind == "sun":
        if part == "test":
            return read_lamem(cfg.root, cfg.split, "test", **kw)
        return _carve(read_lamem(cfg.root, cfg.split, "train", **kw), cfg, part)
    if cfg.kind == "isola":
        half = 2 if part == "test" else 1
        records = read_isola(cfg.root, cfg.split, half)
        first, second = random_split(len(records), 0.5, cfg.split)
        if part == "test":
            return [records[i] for i in second]
        return _carve([records[i] for i in first], cfg, part)
    if part == "test":
        raise ValueError(f"dataset kind {cfg.kind!r} has no test part; evaluate on another file")
    if cfg.kind == "list":
        records = read_split_file(cfg.file, Path(cfg.root) / "images", **kw)
    else:
        records = read_csv(cfg.file, path_column=cfg.path_column,
                           score_column=cfg.score_column, root=cfg.root, **kw)  # fmt: skip
    return _carve(records, cfg, part)
