"""Real photos for the guidance and faithfulness benchmarks, drawn with a seed: LNSIM (outdoor
scenes with human scores; every one of the 2,000 here trained both shipped models) and the pool
of everyday photos (unlabelled; none trained them). Read from ../shared/datasets, never copied."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
DOMAINS = {"lnsim": SHARED / "lnsim" / "images", "pool": SHARED / "pool" / "images"}
SUFFIXES = {".jpg", ".jpeg", ".png"}


def sample_photos(domain: str, n: int, seed: int = 0) -> list[Path]:
    """``n`` photos of ``domain`` ("lnsim" or "pool": all its folders together), drawn without
    replacement with ``seed``, in the order drawn."""
    files = sorted(p for p in DOMAINS[domain].rglob("*") if p.suffix.lower() in SUFFIXES)
    if len(files) < n:
        raise SystemExit(f"need {n} photos in {DOMAINS[domain]}, found {len(files)}")
    pick = np.random.default_rng(seed).choice(len(files), size=n, replace=False)
    return [files[i] for i in pick]


def label(path: Path) -> str:
    """A short name: the path under its domain's folder (e.g. ``sun/x.jpg``, ``0123.jpg``)."""
    for root in DOMAINS.values():
        if path.is_relative_to(root):
            return path.relative_to(root).as_posix()
    return path.name
