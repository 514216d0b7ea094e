"""Shared pieces of the speed benchmarks: the photos, our model, timing with the load average.

The machine these figures come from is shared: every printed figure carries the load average
(1-minute) read when it was measured, and comparisons are interleaved batch by batch so that
contention affects both sides alike."""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LNSIM = ROOT.parent / "shared" / "datasets" / "lnsim"
POOL = LNSIM.parent / "pool" / "images"  # unlabelled photos of every kind
# a stand-in head (untrained) for when no "default" model is registered: as big as or bigger
# than the shipped default's heads, on the same trunk (the trunk is ~99% of the FLOPs)
DEFAULT_HEAD = dict(reduce_dim=256, proj_dim=512, att_dim=256, hidden_size=512, fc_dim=256)


def lnsim25_sets(out: Path, splits: int = 25) -> tuple[list[dict], list[str]]:
    """The first ``splits`` lnsim25 splits ({"train", "val", "test"}: records) and every LNSIM
    photo they hold (sorted paths)."""
    from amnet.training.cv import CVConfig, split_records

    cv = CVConfig("lnsim25", str(LNSIM), str(out))
    sets = [split_records(cv, k) for k in range(splits)]
    return sets, sorted({os.fspath(r.path) for s in sets for part in s.values() for r in part})


def engine_layout(*nets):
    """Lay ``nets`` out in place as amnet's torch engine runs them (BatchNorm folded into the
    convolutions, channels-last weights); returns them."""
    import torch

    from amnet.inference.engine import fold_batchnorm

    for net in nets:
        fold_batchnorm(net)
        net.to(memory_format=torch.channels_last)
    return nets


def default_trunk_and_descriptor():
    """The default's ResNet-152 cut after layer3 and its kernel prior's descriptor (layer4 and
    the classifier; the weights read once), in the torch engine's layout."""
    from amnet.builders import build_descriptor
    from amnet.trunks.registry import create_trunk_and_tail

    trunk, tail = create_trunk_and_tail("resnet152")
    return engine_layout(trunk, build_descriptor("resnet152", tail=tail))


def moments(y, r, r_other):
    """ResMem's scores ``r_other`` on the scale of human scores ``y``: the linear map that
    gives ResMem's scores ``r`` of the same photos as ``y`` the mean and sd of ``y``."""
    a = y.std() / r.std()
    return a * r_other + y.mean() - a * r.mean()


def spread(s) -> str:
    """How widely scores ``s`` spread: their sd and 1st-99th percentile range."""
    import numpy as np

    lo, hi = np.percentile(s, [1, 99])
    return f"sd {np.std(s):.3f}, {lo:.2f}-{hi:.2f}"


def rss_mb() -> float:
    """This process's resident memory now (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(x.split()[1]) for x in f if x.startswith("VmRSS")) / 1024
    except (OSError, StopIteration):
        return 0.0


def sampling_rss(fn: Callable[[], object]) -> tuple[object, float, dict]:
    """Run ``fn()`` while a thread samples this process's resident memory every 50 ms:
    (its result, seconds, {"peak_rss_mb": the peak RSS (getrusage), "first_half_max_mb" and
    "second_half_max_mb": the highest sample in each half of the run, the same when nothing
    accumulates}). For measured processes: the peak is the whole process's."""
    import threading

    samples: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            samples.append(rss_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    start = time.perf_counter()
    sampler.start()
    result = fn()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    half = len(samples) // 2
    return (
        result,
        seconds,
        {
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # kB -> MB
            "first_half_max_mb": max(samples[:half], default=0.0),
            "second_half_max_mb": max(samples[half:], default=0.0),
        },
    )


def photos(n: int, offset: int = 0) -> list[Path]:
    """n real photos from LNSIM, in file-name order (the same ones on every run)."""
    files = sorted((LNSIM / "images").iterdir())
    if len(files) < offset + n:
        sys.exit(f"need {offset + n} photos in {LNSIM / 'images'}, found {len(files)}")
    return files[offset : offset + n]


def human_scores() -> dict[str, float]:
    out = {}
    for line in (LNSIM / "scores.txt").read_text().splitlines():
        name, score = line.split()
        out[name] = float(score)
    return out


def model_path() -> tuple[str, bool]:
    """("default", True) when the trained default model is registered; else an untrained head
    of the default's size on the resnet152 trunk (same speed), saved in a temp file."""
    import torch

    from amnet.checkpoint import get_model_entry, save_checkpoint
    from amnet.model.head import AMNetConfig, AMNetHead

    try:
        get_model_entry("default")
        return "default", True
    except KeyError:
        pass
    torch.manual_seed(0)
    head = AMNetHead(AMNetConfig(**DEFAULT_HEAD)).eval()
    path = Path(tempfile.gettempdir()) / "amnet-bench-untrained-r256.safetensors"
    save_checkpoint(path, head, trunk="resnet152")
    return str(path), False


def load() -> float:
    return os.getloadavg()[0]


def cpu_seconds() -> float:
    """CPU time of this process, all threads (user + system)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@dataclass
class Timer:
    """Accumulates wall and CPU seconds and the load averages seen, over several calls."""

    wall: float = 0.0
    cpu: float = 0.0
    items: int = 0
    loads: list[float] = field(default_factory=list)
    samples: list[float] = field(default_factory=list)  # seconds per item, per call

    def time(self, fn: Callable[[], object], items: int) -> object:
        w, c = time.perf_counter(), cpu_seconds()
        out = fn()
        dw = time.perf_counter() - w
        self.wall += dw
        self.cpu += cpu_seconds() - c
        self.items += items
        self.loads.append(load())
        self.samples.append(dw / items)
        return out

    @property
    def rate(self) -> float:
        return self.items / self.wall if self.wall else 0.0

    @property
    def cpu_rate(self) -> float:
        """Items per CPU-second: less sensitive to other processes than wall-clock rate."""
        return self.items / self.cpu if self.cpu else 0.0

    @property
    def load(self) -> str:
        lo, hi = min(self.loads, default=0), max(self.loads, default=0)
        return f"{lo:.1f}-{hi:.1f}"


def header(title: str) -> None:
    import torch

    print(f"# {title}")
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} cores, capability {torch.backends.cpu.get_cpu_capability()}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
          f"load average now {os.getloadavg()}", flush=True)  # fmt: skip
