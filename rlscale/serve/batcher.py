"""A stage replica's batching queue, as the simulator models it, and the per-stage metrics the sidecar reads.

Requests queue in arrival order (FIFO). When the model is idle it takes the queued requests, oldest first, up to
``max_batch_size`` items, or, with fewer queued, waits until that many are queued or the oldest has waited
``batch_timeout_s`` (from its arrival), whichever comes first. One batch runs at a time, in a thread of its own,
so requests keep arriving (and are counted) while the model computes. A request of n items (a tensor of n rows)
counts as n requests everywhere and is never split; one of more than ``max_batch_size`` items runs alone.

MLServer's own adaptive batching is not used: it batches in the server's front process, out of a runtime's
sight, and starts a batch while the previous one still runs, so neither the queue nor the waiting time the
sidecar reads could be measured, and its batches are not the simulator's.

Metrics (prometheus-client, labels ``pipeline`` and ``stage``; the first four are what the sidecar reads by
default, `rlscale.promql.DEFAULT_TEMPLATES`):

| metric | type | meaning |
|---|---|---|
| ``rlscale_requests_total`` | counter | requests (items) that arrived |
| ``rlscale_request_latency_seconds`` | histogram | arrival to answer: queue wait + service |
| ``rlscale_queue_length`` | gauge | items waiting for a batch (not the one running) |
| ``rlscale_busy_seconds_total`` | counter | seconds the model spent running batches |
| ``rlscale_model_cpu_seconds_total`` | counter | CPU seconds the model's thread used running batches |
| ``rlscale_dropped_requests_total`` | counter (``pipeline`` only) | items whose batch failed (no answer) |
| ``rlscale_batch_size`` | histogram | items per batch run (not read by the sidecar: shows batching works) |

``rlscale_model_cpu_seconds_total`` is the model thread's own CPU time (`time.thread_time`), where
``rlscale_busy_seconds_total`` is wall time: with requests arriving while a batch runs, the server's event loop
shares the core (and the GIL) with the model, and the wall time counts its work too. The process's CPU
(``process_cpu_seconds_total``) less the model's is the serving overhead ``rlscale profile --url`` measures
(`rlscale.profiling.overhead`); threads the model's framework starts beyond its own are not in it.

The gauge sums over processes (``livesum``) when prometheus-client runs in multiprocess mode.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from rlscale.profiling.worker import describe

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 15, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class BatchFailed(RuntimeError):
    """The batch a request was in failed: the model raised, or answered with the wrong rows."""


@dataclass
class _Families:
    requests: Counter
    latency: Histogram
    queue: Gauge
    busy: Counter
    model_cpu: Counter
    dropped: Counter
    batch: Histogram


_FAMILIES: dict[int, _Families] = {}  # one set per registry: a registry refuses a name twice


def _families(registry: CollectorRegistry) -> _Families:
    if id(registry) not in _FAMILIES:
        labels = ["pipeline", "stage"]
        _FAMILIES[id(registry)] = _Families(
            requests=Counter("rlscale_requests", "requests (items) that arrived", labels, registry=registry),
            latency=Histogram(
                "rlscale_request_latency_seconds",
                "stage latency of a request: queue wait + service",
                labels,
                buckets=LATENCY_BUCKETS_S,
                registry=registry,
            ),
            queue=Gauge(
                "rlscale_queue_length",
                "items waiting for a batch",
                labels,
                multiprocess_mode="livesum",
                registry=registry,
            ),
            busy=Counter("rlscale_busy_seconds", "seconds the model spent running batches", labels, registry=registry),
            model_cpu=Counter(
                "rlscale_model_cpu_seconds",
                "CPU seconds the model's thread used running batches",
                labels,
                registry=registry,
            ),
            dropped=Counter(
                "rlscale_dropped_requests", "requests (items) whose batch failed", ["pipeline"], registry=registry
            ),
            batch=Histogram(
                "rlscale_batch_size", "items per batch run", labels, buckets=BATCH_BUCKETS, registry=registry
            ),
        )
    return _FAMILIES[id(registry)]


class StageMetrics:
    """The stage's series in a registry (prometheus-client's default one, which MLServer's /metrics serves)."""

    def __init__(self, pipeline: str, stage: str, registry: CollectorRegistry = REGISTRY) -> None:
        f = _families(registry)
        self.requests = f.requests.labels(pipeline, stage)
        self.latency = f.latency.labels(pipeline, stage)
        self.queue = f.queue.labels(pipeline, stage)
        self.busy = f.busy.labels(pipeline, stage)
        self.model_cpu = f.model_cpu.labels(pipeline, stage)
        self.dropped = f.dropped.labels(pipeline)
        self.batch = f.batch.labels(pipeline, stage)
        self.queue.set(0)


@dataclass
class _Request:
    rows: np.ndarray
    arrival: float
    future: asyncio.Future = field(repr=False)

    @property
    def items(self) -> int:
        return len(self.rows)


class Batcher:
    """The queue in front of one model (module docstring). Use it from one event loop.

    Args:
        run: runs one batch of rows (``StageModel.run``): outputs by name, one row per input row.
        max_batch_size: the most items a batch takes (a larger request runs alone).
        batch_timeout_s: how long the oldest queued request may wait for a full batch while the model is idle.
        metrics: where to count (None: nowhere).
        clock: monotonic seconds.
    """

    def __init__(
        self,
        run: Callable[[np.ndarray], dict[str, np.ndarray]],
        max_batch_size: int,
        batch_timeout_s: float,
        metrics: StageMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_batch_size < 1 or not batch_timeout_s >= 0:
            raise ValueError(f"max_batch_size >= 1 and batch_timeout_s >= 0, got {max_batch_size}, {batch_timeout_s}")
        self._run = run
        self.max_batch_size = max_batch_size
        self.batch_timeout_s = batch_timeout_s
        self._metrics = metrics
        self._clock = clock
        self._queue: collections.deque[_Request] = collections.deque()
        self._queued_items = 0
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._running: list[_Request] = []
        # one thread: one batch at a time, always on the same thread (torch's inference mode is per thread)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rlscale-model")

    async def infer(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Queue a request's rows and wait for its outputs (each with the request's rows).

        Raises:
            BatchFailed: the batch it ran in failed.
        """
        loop = asyncio.get_running_loop()
        if self._arrived is None:
            self._arrived = asyncio.Event()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._serve(), name="rlscale-batcher")
        request = _Request(rows, self._clock(), loop.create_future())
        self._queue.append(request)
        self._queued_items += request.items
        if self._metrics:
            self._metrics.requests.inc(request.items)
            self._metrics.queue.set(self._queued_items)
        self._arrived.set()
        return await request.future

    async def close(self) -> None:
        """Stop batching: the requests queued and running fail (the running batch's thread is left to finish)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for request in [*self._running, *self._take(self._queued_items)]:
            if not request.future.done():
                request.future.set_exception(BatchFailed("the server is stopping"))
        self._executor.shutdown(wait=False)

    async def _serve(self) -> None:
        assert self._arrived is not None
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            deadline = self._queue[0].arrival + self.batch_timeout_s
            while self._queued_items < self.max_batch_size and (remaining := deadline - self._clock()) > 0:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    break
            batch = [r for r in self._take(self.max_batch_size) if not r.future.done()]  # done: its client left
            if not batch:
                continue
            rows = batch[0].rows if len(batch) == 1 else np.concatenate([r.rows for r in batch])
            start = self._clock()
            self._running = batch  # until it ends; if this task is cancelled meanwhile, `close` fails them
            try:
                outputs = await loop.run_in_executor(self._executor, self._run_counted, rows)
            except Exception as exc:  # noqa: BLE001 - the model's error is each request's answer, not the loop's end
                self._running = []
                error = BatchFailed(f"the model failed on a batch of {len(rows)}: {describe(exc)}")
                self._finish(batch, start, None, error)
                continue
            self._running = []
            self._finish(batch, start, outputs, None)

    def _run_counted(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """``run(rows)`` on the model's thread, its CPU time counted (``rlscale_model_cpu_seconds_total``)."""
        start = time.thread_time()
        try:
            return self._run(rows)
        finally:
            if self._metrics:
                self._metrics.model_cpu.inc(time.thread_time() - start)

    def _take(self, items: int) -> list[_Request]:
        """The oldest requests, up to ``items`` items (at least one request if any is queued); out of the queue."""
        taken: list[_Request] = []
        total = 0
        while self._queue and (not taken or total + self._queue[0].items <= items):
            request = self._queue.popleft()
            taken.append(request)
            total += request.items
        self._queued_items -= total
        if self._metrics:
            self._metrics.queue.set(self._queued_items)
        return taken

    def _finish(
        self, batch: list[_Request], start: float, outputs: dict[str, np.ndarray] | None, error: BatchFailed | None
    ) -> None:
        end = self._clock()
        items = sum(r.items for r in batch)
        if self._metrics:
            self._metrics.busy.inc(end - start)
            self._metrics.batch.observe(items)
            if error is not None:
                self._metrics.dropped.inc(items)
        offset = 0
        for request in batch:
            n = request.items
            if self._metrics and error is None:
                for _ in range(n):
                    self._metrics.latency.observe(end - request.arrival)
            if not request.future.done():
                if error is not None:
                    request.future.set_exception(error)
                else:
                    assert outputs is not None
                    request.future.set_result({name: out[offset : offset + n] for name, out in outputs.items()})
            offset += n
