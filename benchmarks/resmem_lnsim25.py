"""ResMem (Needell & Bainbridge; pip ``resmem`` 1.1.6, trained on LaMem + MemCat) scored
zero-shot on the lnsim25 test halves: what training on the right data buys.

ResMem's forward pass is rebuilt without torchvision in ``speed_resmem.py`` (checked there
with ``--check``); its preprocessing is its own (resize 256x256, centre crop 227, [0, 1] RGB).
Every LNSIM image is scored once (resumable: ``OUT/scores.csv``, and ``OUT/resmem-lnsim.npz``
with the activations of ResMem's fc7, fc9 and fc11 layers, which ``lnsim25_ladder.py`` uses as
features learnt on LaMem); then for k in 0..24 the
scores of the test half of split k (the same halves ``amnet cv --protocol lnsim25`` tests on)
are compared with ``subject_hrs2[k]``. Writes ``OUT/results.csv`` (model,split,rho,mse) and
``OUT/results.md``, the same format as ``amnet cv``.

    python benchmarks/resmem_lnsim25.py --out runs/resmem
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _speed_common import LNSIM  # noqa: E402
from speed_resmem import load_resmem, resmem_tensor  # noqa: E402

from amnet.fileio import atomic_write  # noqa: E402
from amnet.training.cv import result_row, write_results  # noqa: E402
from amnet.training.data import DataConfig, load_records  # noqa: E402

LAYERS = ("fc7", "fc9", "fc11")


def read_store(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """{image name: {"score": (), "fc7": (4096,), ...}} from the resumable npz."""
    if not path.exists():
        return {}
    z = np.load(path)
    return {n: {k: z[k][i] for k in ("score", *LAYERS)} for i, n in enumerate(z["names"])}


def write_store(path: Path, store: dict[str, dict[str, np.ndarray]]) -> None:
    names = sorted(store)
    arrays = {k: np.stack([store[n][k] for n in names]) for k in ("score", *LAYERS)}
    with atomic_write(path) as f:
        np.savez(f, names=np.array(names), **arrays)
    with atomic_write(path.with_name("scores.csv"), "w") as f:
        f.write("image,resmem\n")
        f.writelines(f"{n},{float(store[n]['score']):.6f}\n" for n in names)


@torch.inference_mode()
def score_all(root: Path, out: Path, batch: int, workers: int) -> dict[str, dict]:
    """ResMem's score and fc activations for every image in ``root/images``; resumes."""
    store = read_store(out)
    todo = [p for p in sorted((root / "images").glob("*.jpg")) if p.name not in store]
    if not todo:
        return store
    net = load_resmem().to(memory_format=torch.channels_last)  # same numbers, faster
    t0 = time.time()
    with ThreadPoolExecutor(workers) as pool:
        for i in range(0, len(todo), batch):
            part = todo[i : i + batch]
            x = torch.stack(list(pool.map(resmem_tensor, part)))  # (B, 3, 227, 227)
            y, acts = net.forward_with_activations(x.contiguous(memory_format=torch.channels_last))
            acts = {k: acts[k] for k in LAYERS}
            for j, p in enumerate(part):
                store[p.name] = {"score": y[j].numpy(),
                                 **{k: a[j].half().numpy() for k, a in acts.items()}}  # fmt: skip
            if (i // batch) % 10 == 9 or i + batch >= len(todo):
                write_store(out, store)  # a killed run keeps what it scored
                print(f"resmem {i + len(part)}/{len(todo)} in {time.time() - t0:.0f}s",
                      file=sys.stderr, flush=True)  # fmt: skip
    return store


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=str(LNSIM))
    ap.add_argument("--out", default="runs/resmem")
    ap.add_argument("--splits", type=int, default=25)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root, out = Path(args.root), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = score_all(root, out / "resmem-lnsim.npz", args.batch, args.threads)
    scores = {n: float(v["score"]) for n, v in store.items()}
    values = np.array(list(scores.values()))
    print(f"ResMem on {len(values)} LNSIM images: range {values.min():.3f}-{values.max():.3f}, "
          f"mean {values.mean():.3f}, sd {values.std():.3f}")  # fmt: skip
    rows = []
    for k in range(args.splits):
        test = load_records(DataConfig("isola", str(root), split=k, seed=k), "test")
        pred = np.array([scores[Path(r.path).name] for r in test])
        truth = np.array([r.score for r in test])
        rows.append(result_row("resmem-zeroshot", k, pred, truth, 0))
    write_results(out, rows)
    print((out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
