"""Ray batch prediction (amnet.apps.ray.engine) on a local Ray started by these tests.

Ray must only ever use loopback, so the ``local_ray`` fixture first moves this test process
into a new network namespace in which only ``lo`` exists (``unshare(CLONE_NEWNET)``, as
``unshare -n`` does), starts Ray there (its processes inherit the namespace), and moves the
process back when the module is done. That needs root (CI runs as root); elsewhere the Ray
tests are skipped, except under ``CI=true`` where they fail. The workers import
``tests/ray_worker.py`` as Ray's ``worker_process_setup_hook`` to register the tiny trunk."""

from __future__ import annotations

import contextlib
import csv
import ctypes
import fcntl
import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
from PIL import Image

import amnet
from amnet.apps.ray.engine import RayPredictConfig, predict_ray
from amnet.apps.writers import record
from amnet.cli.main import main

TESTS = Path(__file__).resolve().parent
CLONE_NEWNET = 0x40000000
HOST_NETNS = os.readlink("/proc/self/ns/net")


# -- a private, loopback-only network for Ray -----------------------------------------------


def _bring_up_loopback() -> None:
    """``ip link set lo up`` without iproute2: SIOCGIFFLAGS / SIOCSIFFLAGS on ``lo``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(s, 0x8913, ifreq))[1]
        fcntl.ioctl(s, 0x8914, struct.pack("16sh", b"lo", flags | 0x1))  # IFF_UP


@contextlib.contextmanager
def loopback_only_network() -> Iterator[None]:
    """Run the block (and every process it starts) in a new network namespace holding only
    ``lo``; the process returns to its own namespace afterwards."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        if libc.unshare(CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise PermissionError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")
        try:
            _bring_up_loopback()
            yield
        finally:
            if libc.setns(home, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back to the original network")
    finally:
        os.close(home)


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory) -> Iterator[Path]:
    """A 2-CPU Ray on loopback in a private network namespace; yields the workers' state
    folder (see tests/ray_worker.py)."""
    state = tmp_path_factory.mktemp("ray-state")
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
           "AMNET_TEST_RAY_STATE": str(state)}  # fmt: skip
    saved = os.environ.get("RAY_USAGE_STATS_ENABLED")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    try:
        with loopback_only_network():
            assert [name for _, name in socket.if_nameindex()] == ["lo"]
            ray.init(
                num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
                object_store_memory=200 << 20, logging_level="warning",
                runtime_env={"env_vars": env, "worker_process_setup_hook": "ray_worker.setup"},
            )  # fmt: skip
            try:
                yield state
            finally:
                ray.shutdown()
    except PermissionError as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"Ray tests need root to give Ray a loopback-only network ({e})")
    finally:
        if saved is None:
            os.environ.pop("RAY_USAGE_STATS_ENABLED", None)
        else:
            os.environ["RAY_USAGE_STATS_ENABLED"] = saved


# -- helpers ------------------------------------------------------------------------------


def _local(checkpoint: Path, paths: list[str]) -> dict[str, dict]:
    """The local Predictor's rows (as the writers record them), by path."""
    return {r["path"]: r for r in map(record, amnet.load(checkpoint).predict_iter(paths))}


def _assert_same_rows(rows: list[dict], expected: dict[str, dict]) -> None:
    """Every expected path exactly once, with the same error and (nearly) the same scores."""
    assert sorted(r["path"] for r in rows) == sorted(expected)
    for r in rows:
        e = expected[r["path"]]
        assert r["error"] == e["error"]
        if e["error"] is None:
            assert r["score"] == pytest.approx(e["score"], abs=2e-6)
            assert r["step_scores"] == pytest.approx(e["step_scores"], abs=2e-6)
        else:
            assert r["score"] is None and not r["step_scores"]


def _csv_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return [
            {"path": r["path"], "score": float(r["score"]) if r["score"] else None,
             "step_scores": [float(s) for s in r["step_scores"].split()],
             "error": r["error"] or None}
            for r in csv.DictReader(f)
        ]  # fmt: skip


def _many_images(folder: Path, n: int) -> list[str]:
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(n):
        Image.fromarray((rng.random((32, 40, 3)) * 255).astype(np.uint8)).save(
            folder / f"{i:03d}.png"
        )
    return sorted(str(p) for p in folder.iterdir())


# -- without Ray ---------------------------------------------------------------------------


def test_refuses_a_non_empty_output_folder_and_bad_config(tmp_path, photo_dir):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.parquet").touch()
    with pytest.raises(ValueError, match="not empty"):
        predict_ray(photo_dir, tmp_path / "out")
    with pytest.raises(ValueError, match="num_actors"):
        RayPredictConfig(num_actors=0)


# -- on Ray --------------------------------------------------------------------------------


def test_csv_table_to_csv_shards(local_ray, tiny_checkpoint, photo_dir, tmp_path):  # 1 actor
    names = sorted(p.name for p in photo_dir.iterdir()) + ["missing.jpg"]
    table = photo_dir / "list.csv"
    table.write_text("id,file\n" + "".join(f"{i},{n}\n" for i, n in enumerate(names)))
    out = tmp_path / "shards.csv"
    s = predict_ray(table, f"{out}/", model=str(tiny_checkpoint), column="file", batch_size=2)
    assert (s.rows, s.failed) == (6, 1)
    shards = sorted(out.glob("*.csv"))
    assert len(shards) > 1
    rows = [r for f in shards for r in _csv_rows(f)]
    _assert_same_rows(rows, _local(tiny_checkpoint, [str(photo_dir / n) for n in names]))


def test_killed_actor_loses_and_duplicates_no_image(local_ray, tiny_checkpoint, tmp_path):
    paths = _many_images(tmp_path / "many", 24)
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(paths) + "\n")
    killed: list[tuple[int, float]] = []
    done = threading.Event()

    def kill_the_stalled_actor() -> None:
        victim = local_ray / "victim.pid"
        while not done.is_set():
            text = victim.read_text() if victim.exists() else ""
            if text:
                os.kill(int(text), signal.SIGKILL)
                killed.append((int(text), time.time()))
                return
            time.sleep(0.05)

    (local_ray / "stall").touch()  # the first actor at its 2nd model call waits to be killed
    killer = threading.Thread(target=kill_the_stalled_actor, daemon=True)
    killer.start()
    try:
        s = predict_ray(listing, tmp_path / "out/", model=str(tiny_checkpoint), num_actors=2,
                        batch_size=2)  # fmt: skip
    finally:
        done.set()
        killer.join()
        (local_ray / "stall").unlink()
    assert len(killed) == 1, "no actor was stalled and killed"
    pid, t_kill = killed[0]
    restarted = [p for p in local_ray.glob("worker-*") if p.stat().st_mtime > t_kill]
    assert restarted, "Ray started no worker after the kill"
    assert (s.rows, s.failed) == (24, 0)
    rows = pq.read_table(tmp_path / "out").to_pylist()
    _assert_same_rows(rows, _local(tiny_checkpoint, paths))


def test_cli_engine_ray_equals_local_predict(
    local_ray, tiny_checkpoint, photo_dir, tmp_path, monkeypatch
):
    (photo_dir / "broken.jpg").write_bytes(b"not an image")
    monkeypatch.chdir(tmp_path)  # relative paths, while the workers run in other folders
    common = ["photos", "--model", tiny_checkpoint.name, "--batch-size", "2"]
    assert main(["predict", *common, "--out", "local.csv"]) == 1
    ray_args = ["--engine", "ray", "--actors", "2"]
    assert main(["predict", *common, "--out", "ray.csv", *ray_args]) == 1  # 1 failed, 5 written
    rows, local = _csv_rows(tmp_path / "ray.csv"), _csv_rows(tmp_path / "local.csv")
    assert [r["path"] for r in rows] == [r["path"] for r in local]  # input order, as given
    assert rows[1]["path"] == os.path.join("photos", "img0.png")
    _assert_same_rows(rows, {r["path"]: r for r in local})
    assert rows[0]["path"].endswith("broken.jpg") and rows[0]["error"]
    assert (tmp_path / "ray.csv").read_text().splitlines()[0] == "path,score,step_scores,error"
    # the actors ran in the private network namespace, not the host's
    nets = {p.read_text() for p in local_ray.glob("worker-*")}
    assert nets and HOST_NETNS not in nets
