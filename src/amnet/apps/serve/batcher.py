"""Dynamic batching for a server: coroutines submit one image tensor each; one model thread
scores whatever has arrived together as a single batch, so the event loop never runs the model."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch


class Batcher:
    """Collects tensors (3, S, S) into batches of at most ``max_batch`` for ``fn``.

    A batch starts with the first waiting tensor and takes every tensor that arrives within
    ``max_wait_s`` (while the model is busy, new tensors simply queue and form the next batch).
    ``fn`` gets (B, 3, S, S) and returns B results, in order. It runs in a thread of its own.
    The batcher binds to the running event loop on first use (and rebinds if the loop changes,
    as it does between test clients)."""

    def __init__(
        self, fn: Callable[[torch.Tensor], Sequence[Any]], max_batch: int = 16,
        max_wait_s: float = 0.005,
    ) -> None:  # fmt: skip
        self.fn, self.max_batch, self.max_wait_s = fn, max_batch, max_wait_s
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="amnet-model")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self.batches = 0
        self.images = 0
        self.largest = 0

    def stats(self) -> dict:
        return {"batches": self.batches, "images": self.images, "largest_batch": self.largest}

    def _ensure(self) -> asyncio.Queue:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._task is None or self._task.done():
            self._loop, self._queue = loop, asyncio.Queue()
            self._task = loop.create_task(self._run(self._queue))
        assert self._queue is not None
        return self._queue

    async def submit(self, x: torch.Tensor) -> Any:
        """Score one tensor (3, S, S) in the next batch; returns ``fn``'s result for it."""
        fut = asyncio.get_running_loop().create_future()
        self._ensure().put_nowait((x, fut))
        return await fut

    async def stop(self) -> None:
        if self._task is not None and self._loop is asyncio.get_running_loop():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._task = None

    async def _run(self, queue: asyncio.Queue) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            deadline = loop.time() + self.max_wait_s
            while len(batch) < self.max_batch:
                if not queue.empty():
                    batch.append(queue.get_nowait())
                    continue
                left = deadline - loop.time()
                if left <= 0:
                    break
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait({getter}, timeout=left)
                if not getter.done():
                    getter.cancel()  # safe: an item it did not take stays in the queue
                    break
                batch.append(getter.result())
            batch = [(x, f) for x, f in batch if not f.done()]  # drop timed-out requests
            if not batch:
                continue
            x = torch.stack([x for x, _ in batch])  # (B, 3, S, S)
            try:
                out = await loop.run_in_executor(self._pool, self.fn, x)
            except Exception as e:  # noqa: BLE001 - handed to every waiting request
                for _, f in batch:
                    if not f.done():
                        f.set_exception(e)
                continue
            self.batches += 1
            self.images += len(batch)
            self.largest = max(self.largest, len(batch))
            for (_, f), r in zip(batch, out, strict=True):
                if not f.done():
                    f.set_result(r)
