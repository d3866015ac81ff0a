"""The load: a trace window scaled to a peak, its arrivals drawn exactly as the simulator draws them, and an
open-loop generator that sends each request through the stages when it is due, whatever the earlier ones did.

The generator (asyncio + aiohttp, uvloop where installed) encodes each stage's body once, sends a request's stage
s+1 call when stage s has answered, and records per request its send time, each stage's client-side latency and
its end-to-end latency from its *due* time (as the simulator counts from arrival). A warm-up phase runs first on
the same connections (a new session's first second holds a stall); garbage collection is off while it measures
(a full collection pauses its event loop, which would count in every answer it is reading then).
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlscale.errors import RlscaleError
from rlscale.sim.arrivals import arrival_times_s
from rlscale.workload import Trace, scale_trace

REQUEST_TIMEOUT_S = 60.0
"""The longest one request (all its stages) may take before it counts as failed."""
WARMUP_S = 3.0
WARMUP_MAX_RPS = 50.0


def window_trace(trace: Trace, start_s: int, end_s: int, peak_rps: float) -> Trace:
    """Seconds ``[start_s, end_s)`` of ``trace``, scaled so that its peak is ``peak_rps``.

    Raises:
        RlscaleError: the window is outside the trace or holds no request.
    """
    rps = trace.rps[start_s:end_s]
    if rps.size < end_s - start_s or rps.size == 0 or rps.max() <= 0:
        raise RlscaleError(f"trace {trace.name}: no window with load in seconds [{start_s}, {end_s})")
    window = Trace(name=f"{trace.name}[{start_s}:{end_s}]", rps=rps.copy(), description=trace.description)
    return scale_trace(window, peak_rps / float(rps.max()))


def schedule_s(trace: Trace, arrivals: str, seed: int) -> np.ndarray:
    """The window's arrival times: what the simulator draws for ``seed`` (`rlscale.sim.cluster.Simulator` draws the
    request table first from ``default_rng(seed)``)."""
    times, _ = arrival_times_s(trace.rps, arrivals, np.random.default_rng(seed))
    return times


def warmup_times(rps: float = WARMUP_MAX_RPS, seconds: float = WARMUP_S) -> np.ndarray:
    """Requests at ``rps`` for ``seconds``, untimed before a run: connections, allocations, lazy initialisation."""
    rps = max(1.0, min(rps, WARMUP_MAX_RPS))
    return np.arange(max(1, int(rps * seconds))) / rps


@dataclass
class LoadResult:
    """What the open-loop generator measured, per request (seconds; NaN where a stage did not answer).

    Attributes:
        scheduled_s: when each request was due, from the run's start.
        lateness_s: its send time minus its due time.
        stage_s: per stage, client-side latency (send to full answer), shape (stages, requests).
        stage_end_s: per stage, when the answer was complete, from the run's start.
        e2e_s: last answer minus the *due* time.
        errors: per request, the first error ("" if none).
        cpu_s: the generator's CPU time (user + system) over the run.
        wall_s: the run's wall time.
    """

    scheduled_s: np.ndarray
    lateness_s: np.ndarray
    stage_s: np.ndarray
    stage_end_s: np.ndarray
    e2e_s: np.ndarray
    errors: list[str] = field(default_factory=list)
    cpu_s: float = 0.0
    wall_s: float = 0.0


async def _phase(session: Any, urls: Sequence[str], bodies: Sequence[bytes], times: np.ndarray, lead_s: float):
    """One open-loop phase on an open session: a request per time in ``times`` (seconds from now + ``lead_s``)."""
    import aiohttp

    n, k = times.size, len(urls)
    sent = np.full(n, np.nan)
    stage_s = np.full((k, n), np.nan)
    stage_end = np.full((k, n), np.nan)
    errors = [""] * n
    headers = {"Content-Type": "application/json"}
    clock = time.monotonic
    start = clock() + lead_s

    async def one(i: int) -> None:
        sent[i] = clock() - start
        try:
            for s in range(k):
                t = clock()
                async with session.post(urls[s], data=bodies[s], headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        errors[i] = f"stage {s}: HTTP {r.status}"
                        return
                end = clock()
                stage_s[s, i] = end - t
                stage_end[s, i] = end - start
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            errors[i] = f"{type(exc).__name__}: {exc}"

    tasks = []
    for i, due in enumerate(times):
        delay = start + float(due) - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return LoadResult(
        scheduled_s=times,
        lateness_s=sent - times,
        stage_s=stage_s,
        stage_end_s=stage_end,
        e2e_s=stage_end[-1] - times,
        errors=errors,
    )


async def _drive(
    urls: Sequence[str],
    bodies: Sequence[bytes],
    times: np.ndarray,
    lead_s: float,
    warmup: np.ndarray,
    before: Callable[[], object] | None,
) -> LoadResult:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        if warmup.size:
            await _phase(session, urls, bodies, warmup, 0.0)
        if before is not None:
            await asyncio.to_thread(before)
        gc.collect()
        gc.disable()
        try:
            cpu0, wall0 = time.process_time(), time.monotonic()
            result = await _phase(session, urls, bodies, times, lead_s)
            result.cpu_s, result.wall_s = time.process_time() - cpu0, time.monotonic() - wall0
        finally:
            gc.enable()
    return result


def run_load(
    urls: Sequence[str],
    bodies: Sequence[bytes],
    times: np.ndarray,
    lead_s: float = 0.5,
    warmup: np.ndarray | None = None,
    before: Callable[[], object] | None = None,
) -> LoadResult:
    """Send one request per time in ``times`` (seconds from now + ``lead_s``) through the stages in order, open
    loop: stage s+1 is called when stage s has answered, each request when it is due whatever the others do.

    Args:
        urls: each stage's infer URL, in order.
        bodies: each stage's request body (one item), JSON-encoded.
        warmup: times of untimed requests sent first, on the same connections (`warmup_times`).
        before: called (in a thread) between the warm-up and the run: a snapshot of the servers' metrics.

    Raises:
        RlscaleError: aiohttp (the serve extra) is not installed.
    """
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        raise RlscaleError(
            "the load generator needs aiohttp: install the serve extra (pip install 'rlscale[serve]')"
        ) from None
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    empty = np.empty(0)
    return runner(
        _drive(urls, bodies, np.asarray(times, dtype=float), lead_s, empty if warmup is None else warmup, before)
    )
