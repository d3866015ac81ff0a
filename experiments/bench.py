"""``rlscale bench``: speed figures, always against a baseline measured in the same run.

``sim``: request-stage events per second of the simulator on the video pipeline over the bursty trace with the
``static-max`` configuration (median of ``repeats`` runs), and of the naive reference simulator
(`rlscale.sim.naive`, one heap event per request per stage) on exactly the same arrivals and configuration.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from agents.static import StaticPolicy
from rlscale.sim.engine import Simulator
from rlscale.sim.naive import simulate_naive
from rlscale.spec import load_spec
from rlscale.workload import load_trace


def bench_sim(pipeline: str = "video", trace_name: str = "bursty", repeats: int = 5) -> dict[str, Any]:
    spec = load_spec(pipeline)
    trace = load_trace(trace_name)
    config = StaticPolicy(spec, "max", trace.peak_rps).config
    fast: list[float] = []
    naive: list[float] = []
    events = 0
    for _ in range(repeats):
        t = time.perf_counter()
        sim = Simulator(spec, trace, config, seed=0)
        while not sim.done:
            sim.step()
        sim.drain()
        elapsed = time.perf_counter() - t
        events = sim.events
        fast.append(events / elapsed)
        t = time.perf_counter()
        ref = simulate_naive(spec, config, sim.entry_s)
        elapsed = time.perf_counter() - t
        naive.append(int(ref["events"][0]) / elapsed)
    fast_med = statistics.median(fast)
    naive_med = statistics.median(naive)
    return {
        "events_per_s": round(fast_med),
        "naive_events_per_s": round(naive_med),
        "ratio": round(fast_med / naive_med, 2),
        "events": events,
        "repeats": repeats,
        "workload": f"{pipeline}/{trace_name}/static-max",
    }


def run_bench(repeats: int = 5) -> dict[str, Any]:
    """Every section that exists; sections not built yet are absent, never faked."""
    return {"sim": bench_sim(repeats=repeats)}
