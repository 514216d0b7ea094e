"""Load benchmark of ``amnet serve``: N concurrent clients post real photos (one per request) to
a server on 127.0.0.1, for a bounded number of requests and a bounded time. Prints throughput,
p50/p95 latency, the count of non-2xx answers, and the server's batching figures.

    python benchmarks/serve_load.py                          # 8 clients, 160 requests
    python benchmarks/serve_load.py --clients 16 --requests 300 --max-seconds 300
    python benchmarks/serve_load.py --model my.safetensors --server-args "--max-batch 32"

Without --model it serves the registered "default" model, or else an untrained head on the real
ResNet-152 trunk (the speed is the real model's; the scores mean nothing). Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shlex
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
from _serve_common import LNSIM_IMAGES, model_or_untrained, serving


async def client(url: str, photos: list[tuple[str, bytes]], todo: list[int], deadline: float,
                 seed: int, out: list[tuple[float, int]]) -> None:  # fmt: skip
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=url, timeout=120) as c:
        while todo and time.monotonic() < deadline:
            todo.pop()
            name, data = rng.choice(photos)
            t0 = time.perf_counter()
            try:
                r = await c.post("/v1/predict", files=[("files", (name, data, "image/jpeg"))])
                status = r.status_code
            except httpx.HTTPError:
                status = 0  # no answer: counted as non-2xx
            out.append((time.perf_counter() - t0, status))


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q / 100 * len(xs)) - 1))]


async def run_load(url: str, photos, clients: int, requests: int, max_seconds: float):
    todo = list(range(requests))
    out: list[tuple[float, int]] = []
    t0 = time.monotonic()
    deadline = t0 + max_seconds
    await asyncio.gather(*(client(url, photos, todo, deadline, i, out) for i in range(clients)))
    return out, time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model name or checkpoint (default: see above)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=160, help="total, all clients together")
    ap.add_argument("--max-seconds", type=float, default=240.0, help="stop sending after this")
    ap.add_argument("--photos", type=int, default=200, help="distinct LNSIM photos to draw from")
    ap.add_argument("--server-args", default="", help="extra `amnet serve` options, quoted")
    args = ap.parse_args()
    paths = sorted(LNSIM_IMAGES.glob("*.jpg"))[: args.photos]
    photos = [(p.name, p.read_bytes()) for p in paths]
    with tempfile.TemporaryDirectory() as tmp:
        model, about = model_or_untrained(args.model, Path(tmp))
        with serving(model, *shlex.split(args.server_args)) as url:
            asyncio.run(run_load(url, photos, 2, 4, 120))  # warm-up, not counted
            before = httpx.get(url + "/healthz").json()
            out, wall = asyncio.run(run_load(url, photos, args.clients, args.requests,
                                             args.max_seconds))  # fmt: skip
            after = httpx.get(url + "/healthz").json()
    lat = [t for t, _ in out]
    statuses = Counter(s for _, s in out)
    bad = sum(n for s, n in statuses.items() if not 200 <= s < 300)
    batches = after["batches"] - before["batches"]
    images = after["images"] - before["images"]
    print(f"model            {about}")
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"machine          {os.cpu_count()} CPU cores (load average now {load}), loopback")
    kib = statistics.mean(len(d) for _, d in photos) / 1024
    print(f"clients          {args.clients} concurrent, one photo per request "
          f"({len(photos)} LNSIM photos, mean {kib:.0f} KiB)")  # fmt: skip
    limit = f"limit {args.requests} requests / {args.max_seconds:g} s"
    print(f"requests         {len(out)} in {wall:.1f} s ({limit})")
    print(f"throughput       {len(out) / wall:.2f} requests/s")
    print(f"latency          p50 {percentile(lat, 50) * 1000:.0f} ms, "
          f"p95 {percentile(lat, 95) * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms")  # fmt: skip
    print(f"non-2xx          {bad}  (statuses: {dict(sorted(statuses.items()))})")
    if batches:
        print(f"server batching  {images} images in {batches} model calls, "
              f"mean batch {images / batches:.2f}, largest {after['largest_batch']}")  # fmt: skip


if __name__ == "__main__":
    main()
