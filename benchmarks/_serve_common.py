"""Shared by the serve benchmarks: a model to serve and an ``amnet serve`` process on loopback."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

LNSIM_IMAGES = Path(__file__).resolve().parents[1].parent / "shared/datasets/lnsim/images"


def untrained_resnet152(folder: Path) -> Path:
    """A checkpoint on the real ResNet-152 trunk with an untrained (random, seeded) head: the
    speed is the real model's, the scores mean nothing."""
    import torch

    from amnet.checkpoint import save_checkpoint
    from amnet.model.head import AMNetConfig, AMNetHead

    torch.manual_seed(0)
    head = AMNetHead(AMNetConfig()).eval()
    return save_checkpoint(folder / "untrained-head-resnet152.safetensors", head, trunk="resnet152")


def model_or_untrained(model: str | None, folder: Path) -> tuple[str, str]:
    """(model to serve, a description for the report)."""
    if model:
        return model, model
    from amnet.checkpoint import list_models

    if "default" in list_models():
        return "default", "default (registered)"
    return str(untrained_resnet152(folder)), "resnet152 trunk + UNTRAINED head (speed only)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(model: str, *args: str, start_timeout_s: float = 300.0) -> Iterator[str]:
    """Run ``amnet serve --model MODEL ARGS`` on 127.0.0.1 until the block ends."""
    port = free_port()
    cmd = [sys.executable, "-m", "amnet.cli.main", "serve", "--model", model, "--host", "127.0.0.1",
           "--port", str(port), *args]  # fmt: skip
    proc = subprocess.Popen(cmd)
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.monotonic()
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"amnet serve exited with status {proc.returncode}")
            if time.monotonic() - t0 > start_timeout_s:
                raise RuntimeError("amnet serve did not start in time")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            time.sleep(0.25)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
