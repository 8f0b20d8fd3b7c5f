"""Micro-batching for ``serve.py``: the inputs of requests that arrive together run as one batch."""

import asyncio
from collections.abc import Callable

import numpy as np
from starlette.concurrency import run_in_threadpool


class MicroBatcher:
    """Runs ``run`` (a batch of inputs to a batch of outputs, in a worker thread) on the inputs of
    the requests waiting together, one batch at a time.

    The first request of a batch waits at most ``max_wait_s`` for others (0: it takes whatever is
    queued already, adding no wait); a batch stops growing at ``max_size`` inputs (a request is never
    split, so one larger request runs alone). While a batch runs, the requests that arrive queue up
    for the next one: under load the batches grow by themselves.
    """

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], max_size: int, max_wait_s: float) -> None:
        self.run, self.max_size, self.max_wait_s = run, max_size, max_wait_s
        self.queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future]] | None = None
        self.worker: asyncio.Task | None = None

    async def __call__(self, inputs: np.ndarray) -> np.ndarray:
        if self.queue is None:
            self.queue = asyncio.Queue()
            self.worker = asyncio.create_task(self.serve())
        answered = asyncio.get_running_loop().create_future()
        await self.queue.put((inputs, answered))
        return await answered

    async def serve(self) -> None:
        assert self.queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            size, deadline = len(batch[0][0]), loop.time() + self.max_wait_s
            while size < self.max_size:
                if not self.queue.empty():
                    batch.append(self.queue.get_nowait())
                elif (left := deadline - loop.time()) > 0:
                    try:
                        batch.append(await asyncio.wait_for(self.queue.get(), left))
                    except TimeoutError:
                        break
                else:
                    break
                size += len(batch[-1][0])
            await self.run_batch(batch)

    async def run_batch(self, batch: list[tuple[np.ndarray, asyncio.Future]]) -> None:
        try:
            outputs = await run_in_threadpool(self.run, np.concatenate([inputs for inputs, _ in batch]))
        except Exception as error:  # each request waiting on it gets the error
            for _, answered in batch:
                if not answered.done():
                    answered.set_exception(error)
            return
        start = 0
        for inputs, answered in batch:
            if not answered.done():  # a client that went away has its future cancelled
                answered.set_result(outputs[start : start + len(inputs)])
            start += len(inputs)
