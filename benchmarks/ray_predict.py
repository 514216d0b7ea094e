"""Images/s of ``amnet.apps.ray.engine.predict_ray`` with 1 and 2 actors on this machine's cores,
on real photos (LNSIM), beside the local Predictor in one process.

Ray may only use loopback here, so run it in a private network namespace:

    unshare -n bash -c 'ip link set lo up; nice -n 10 .venv/bin/python benchmarks/ray_predict.py'

The model is an untrained AMNet head on the real ResNet-152 trunk (speed only: the scores mean
nothing) unless ``--model`` names a checkpoint. Each setting scores ``--n`` and ``--n-small``
images; it reports the end-to-end rate (Ray start-up of actors and model loading included) and
the steady rate ``(n - n_small) / (t_n - t_small)``, which leaves the fixed start-up cost out.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import time
from pathlib import Path

LNSIM = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "lnsim" / "images"


def untrained_checkpoint(folder: Path, trunk: str) -> Path:
    import torch

    from amnet.checkpoint import save_checkpoint
    from amnet.model.head import AMNetConfig, AMNetHead
    from amnet.trunks.registry import get_trunk_spec

    torch.manual_seed(0)
    head = AMNetHead(AMNetConfig(in_channels=get_trunk_spec(trunk).channels)).eval()
    return save_checkpoint(folder / f"untrained-{trunk}.safetensors", head, trunk=trunk)


def time_local(model: str, paths: list[str], batch_size: int) -> float:
    import torch

    import amnet

    torch.set_num_threads(os.cpu_count() or 1)
    t0 = time.perf_counter()
    predictor = amnet.load(model, batch_size=batch_size)
    n = sum(1 for p in predictor.predict_iter(paths) if p.ok)
    assert n == len(paths), f"{len(paths) - n} images failed"
    return time.perf_counter() - t0


def time_ray(model: str, paths: list[str], out: Path, **kw) -> float:
    from amnet.apps.ray.engine import predict_ray

    t0 = time.perf_counter()
    s = predict_ray(paths, out, model=model, **kw)
    assert (s.rows, s.failed) == (len(paths), 0), s
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=Path, default=LNSIM)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--n-small", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--model", help="a checkpoint (default: untrained head on --trunk)")
    ap.add_argument("--trunk", default="resnet152")
    args = ap.parse_args()

    nets = [name for _, name in socket.if_nameindex()]
    if nets != ["lo"]:
        raise SystemExit(f"run me in a loopback-only network namespace (have {nets}): see --help")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    cpus = os.cpu_count() or 1
    images = sorted(str(p) for p in args.images.iterdir() if p.suffix.lower() == ".jpg")
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(untrained_checkpoint(Path(tmp), args.trunk))
        ray.init(num_cpus=cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                 logging_level="warning")  # fmt: skip
        settings = [("local, 1 process", None)] + [
            (f"ray, {a} actor(s) x {cpus // a} CPU", {"num_actors": a, "cpus_per_actor": cpus // a})
            for a in (1, 2)
        ]  # fmt: skip
        results = []
        for name, kw in settings:
            times = {}
            for n in (args.n_small, args.n):
                paths = images[:n]
                if kw is None:
                    times[n] = time_local(model, paths, args.batch_size)
                else:
                    out = Path(tmp) / f"{len(results)}-{n}.parquet"
                    times[n] = time_ray(model, paths, out, batch_size=args.batch_size, **kw)
            steady = (args.n - args.n_small) / (times[args.n] - times[args.n_small])
            r = {"setting": name, "n": args.n, "seconds": round(times[args.n], 1),
                 "images_per_s": round(args.n / times[args.n], 2),
                 "steady_images_per_s": round(steady, 2),
                 "seconds_small": round(times[args.n_small], 1)}  # fmt: skip
            results.append(r)
            print(json.dumps(r), flush=True)
        ray.shutdown()
    print(f"\n{cpus} CPUs, trunk {args.trunk}, batch {args.batch_size}, load {os.getloadavg()}")
    print(f"{'setting':28s} {'images/s (n=' + str(args.n) + ')':>18s} {'steady images/s':>16s}")
    for r in results:
        print(f"{r['setting']:28s} {r['images_per_s']:>18.2f} {r['steady_images_per_s']:>16.2f}")


if __name__ == "__main__":
    main()
