"""Queue concurrent requests and run them through the model in batches, off the event loop.

Scores are batch-independent (per-image noise seeds, calibrated scale), so batching changes speed only.
"""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

__all__ = ["Batcher", "Result"]


@dataclass(frozen=True)
class Result:
    score: float
    amap: torch.Tensor  # (H, W)
    reconstruction: torch.Tensor  # (3, H, W) in [0, 1]
    queue_ms: float
    model_ms: float
    batch_size: int
    info: dict = field(default_factory=dict)  # the method's per-image values (Prediction.info)


class Batcher:
    def __init__(self, detector, max_batch: int = 8, max_wait_ms: float = 10.0, max_queue: int = 256):
        self.detector = detector
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=max_queue)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ddad-model")
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def submit(self, image: torch.Tensor) -> Result:
        """image (3, H, W) at the model size. Raises asyncio.QueueFull when the service is saturated."""
        fut = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((image, fut, time.perf_counter()))
        return await fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            deadline = loop.time() + self.max_wait
            while len(items) < self.max_batch:
                try:
                    items.append(await asyncio.wait_for(self.queue.get(), max(0.0, deadline - loop.time())))
                except asyncio.TimeoutError:
                    break
            t0 = time.perf_counter()
            try:
                pred = await loop.run_in_executor(self.pool, self.detector.predict, torch.stack([i[0] for i in items]))
            except Exception as e:  # hand the error to every waiting request; keep serving
                for _, fut, _ in items:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            model_ms = (time.perf_counter() - t0) * 1000
            for k, (_, fut, queued) in enumerate(items):
                if not fut.done():
                    fut.set_result(Result(float(pred.scores[k]), pred.maps[k], pred.reconstructions[k],
                                          (t0 - queued) * 1000, model_ms, len(items),
                                          {name: float(v[k]) for name, v in pred.info.items()}))
