"""The batching queue: the simulator's replica (FIFO; an idle model takes up to b items or waits for the oldest's
timeout; one batch at a time) and the metrics it counts, with a model the test holds and releases."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from rlscale.serve.batcher import Batcher, BatchFailed, StageMetrics


class HeldModel:
    """Doubles its rows; records each batch; each batch waits until the test releases it (if ``hold``)."""

    def __init__(self, hold: bool = False) -> None:
        self.batches: list[list[float]] = []
        self.started = threading.Semaphore(0)
        self.release = threading.Semaphore(0)
        self.hold = hold

    def __call__(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        self.batches.append(rows[:, 0].tolist())
        self.started.release()
        if self.hold:
            assert self.release.acquire(timeout=10)
        if (rows < 0).any():
            raise ValueError("negative input")
        return {"output-0": rows * 2}


def request(*ids: float) -> np.ndarray:
    """A request of one row per id: ``[[id, 0], ...]``."""
    return np.array([[i, 0.0] for i in ids])


async def started(model: HeldModel) -> None:
    """Wait (without blocking the loop) until the model has started one more batch."""
    await asyncio.to_thread(model.started.acquire, True, 10)


def test_requests_queued_while_the_model_runs_go_together_oldest_first():
    model = HeldModel(hold=True)

    async def main():
        batcher = Batcher(model, max_batch_size=4, batch_timeout_s=0.0)
        first = asyncio.ensure_future(batcher.infer(request(0)))
        await started(model)  # the model runs request 0 alone: nothing else was queued
        later = [asyncio.ensure_future(batcher.infer(request(i))) for i in range(1, 6)]
        await asyncio.sleep(0)  # let them queue
        for _ in range(3):
            model.release.release()
        answers = await asyncio.gather(first, *later)
        await batcher.close()
        return answers

    answers = asyncio.run(main())
    assert model.batches == [[0], [1, 2, 3, 4], [5]]
    assert [a["output-0"][:, 0].tolist() for a in answers] == [[2.0 * i] for i in range(6)]  # each its own row


def test_an_idle_model_waits_for_a_full_batch_at_most_the_timeout():
    model = HeldModel()

    async def main():
        batcher = Batcher(model, max_batch_size=4, batch_timeout_s=0.2)
        t0 = time.monotonic()
        await asyncio.gather(batcher.infer(request(1)), batcher.infer(request(2)))
        waited = time.monotonic() - t0
        batcher.batch_timeout_s = 30.0  # a full batch does not wait for the timeout
        t0 = time.monotonic()
        await asyncio.gather(*(batcher.infer(request(i)) for i in range(4)))
        full = time.monotonic() - t0
        await batcher.close()
        return waited, full

    waited, full = asyncio.run(main())
    assert model.batches == [[1, 2], [0, 1, 2, 3]]
    assert waited >= 0.2 and full < 5


def test_a_request_larger_than_the_batch_runs_alone_and_fifo_is_kept():
    model = HeldModel(hold=True)

    async def main():
        batcher = Batcher(model, max_batch_size=2, batch_timeout_s=0.0)
        busy = asyncio.ensure_future(batcher.infer(request(0)))
        await started(model)
        queued = [batcher.infer(request(1)), batcher.infer(request(2, 3, 4)), batcher.infer(request(5))]
        queued = [asyncio.ensure_future(q) for q in queued]
        await asyncio.sleep(0)
        for _ in range(4):
            model.release.release()
        answers = await asyncio.gather(busy, *queued)
        await batcher.close()
        return answers

    answers = asyncio.run(main())
    assert model.batches == [[0], [1], [2, 3, 4], [5]]  # 1 + 3 > 2: request 1 does not wait for 5 to pass it
    assert answers[2]["output-0"][:, 0].tolist() == [4, 6, 8]


def test_metrics_count_items_queue_latency_busy_and_drops():
    registry = CollectorRegistry()
    model = HeldModel(hold=True)

    def value(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, {"pipeline": "p", "stage": "s", **labels}) or 0.0

    async def main():
        batcher = Batcher(model, 8, 0.0, StageMetrics("p", "s", registry=registry))
        busy = asyncio.ensure_future(batcher.infer(request(0)))
        await started(model)
        queued = [asyncio.ensure_future(batcher.infer(request(1, 2))), asyncio.ensure_future(batcher.infer(request(3)))]
        await asyncio.sleep(0)
        in_queue = value("rlscale_queue_length")
        arrived = value("rlscale_requests_total")
        model.release.release()
        model.release.release()
        await asyncio.gather(busy, *queued)
        failed = asyncio.ensure_future(batcher.infer(request(-1, 5)))
        model.release.release()
        with pytest.raises(BatchFailed, match="the model failed on a batch of 2: ValueError: negative input"):
            await failed
        await batcher.close()
        return in_queue, arrived

    in_queue, arrived = asyncio.run(main())
    assert (in_queue, arrived) == (3, 4)  # request 0 runs; 1, 2 and 3 wait; 4 items arrived
    assert value("rlscale_requests_total") == 6
    assert value("rlscale_queue_length") == 0
    assert value("rlscale_request_latency_seconds_count") == 4  # answered items; the failed two have no latency
    assert value("rlscale_batch_size_count") == 3 and value("rlscale_batch_size_sum") == 6
    assert value("rlscale_busy_seconds_total") > 0
    assert registry.get_sample_value("rlscale_dropped_requests_total", {"pipeline": "p"}) == 2


def test_the_metrics_of_two_stages_share_a_registry():
    registry = CollectorRegistry()
    StageMetrics("p", "a", registry=registry).requests.inc()
    StageMetrics("p", "b", registry=registry).requests.inc(2)  # no 'Duplicated timeseries'
    assert registry.get_sample_value("rlscale_requests_total", {"pipeline": "p", "stage": "b"}) == 2


def test_close_fails_what_is_queued_or_running():
    model = HeldModel(hold=True)

    async def main():
        batcher = Batcher(model, 1, 0.0)
        busy = asyncio.ensure_future(batcher.infer(request(0)))
        await started(model)
        queued = asyncio.ensure_future(batcher.infer(request(1)))
        await asyncio.sleep(0)
        await batcher.close()
        model.release.release()
        for answer in (busy, queued):
            with pytest.raises(BatchFailed, match="stopping"):
                await answer

    asyncio.run(main())
