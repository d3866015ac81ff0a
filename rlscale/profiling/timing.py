"""The timing loop both profilers share: warm up, then time each call with `time.perf_counter`.

Standard library only: the in-process worker imports it before the model's framework.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def time_calls(call: Callable[[], object], warmup: int, repeats: int) -> list[float]:
    """Run ``call`` ``warmup`` times untimed, then ``repeats`` times, each timed on its own.

    Args:
        call: one batch through the model (or one request to the server).
        warmup: untimed runs first (allocations, lazy initialisation, caches).
        repeats: timed runs.

    Returns:
        The ``repeats`` wall-clock durations in seconds, in the order they ran.
    """
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return samples
