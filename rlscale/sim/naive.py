"""A naive reference simulator, written the obvious way: one heap event per request per stage, pure Python.

It implements the same semantics as `rlscale.sim.engine.Engine` (through `rlscale.sim.cluster.Simulator`) for a
*fixed* configuration (no reconfiguration), and serves two purposes: the baseline that ``rlscale bench`` compares
the engine's speed with, and an independent implementation the tests compare the engine's per-request results with.
"""

from __future__ import annotations

import heapq
import math
from collections import deque

import numpy as np

from rlscale.errors import RlscaleError
from rlscale.spec import PipelineSpec
from rlscale.types import PipelineConfig

_ARRIVE, _FREE, _TIMEOUT = 0, 1, 2


def simulate_naive(spec: PipelineSpec, config: PipelineConfig, entry_s: np.ndarray) -> dict[str, np.ndarray]:
    """Simulate requests entering at ``entry_s`` (sorted) through the pipeline with a fixed, warm ``config``.

    Returns:
        ``finish_s`` (stages x requests, NaN if not served there), ``dropped_at`` (stage index or -1) and
        ``events`` (number of request-stage events processed, an array of one element).
    """
    if config.most_pools > 1:
        raise RlscaleError(f"the naive reference simulates one pool per stage, not {config}")
    n_stages = len(spec.stages)
    n = len(entry_s)
    finish = np.full((n_stages, n), math.nan)
    dropped_at = np.full(n, -1, dtype=np.int64)
    deadline = [float(t) + spec.drop_limit_s for t in entry_s]
    timeout = spec.batch_timeout_s
    lat = []
    for st, sc in zip(spec.stages, config.stages, strict=True):
        lat.append([0.0] + [st.latency.latency_s(sc.variant, k, sc.cores) for k in range(1, sc.batch + 1)])
    queues: list[deque] = [deque() for _ in range(n_stages)]  # (arrival time at stage, request id)
    # idle replicas per stage: heap of (available since, replica index)
    idle: list[list[tuple[float, int]]] = [[(0.0, i) for i in range(sc.replicas)] for sc in config.stages]
    timeout_pending: list[float | None] = [None] * n_stages
    events: list[tuple] = []
    seq = 0
    for rid, t in enumerate(entry_s):
        events.append((float(t), _ARRIVE, seq, 0, rid))
        seq += 1
    heapq.heapify(events)
    processed = 0

    def dispatch(s: int, now: float) -> None:
        nonlocal seq, processed
        q = queues[s]
        b = config.stages[s].batch
        while q and idle[s]:
            while q and deadline[q[0][1]] < now:
                _t, rid = q.popleft()
                dropped_at[rid] = s
                processed += 1
            if not q:
                return
            if len(q) < b and now < q[0][0] + timeout:
                due = q[0][0] + timeout
                if timeout_pending[s] != due:
                    timeout_pending[s] = due
                    heapq.heappush(events, (due, _TIMEOUT, seq, s, -1))
                    seq += 1
                return
            _since, rep = heapq.heappop(idle[s])
            taken = [q.popleft() for _ in range(min(b, len(q)))]
            served = []
            for _t, rid in taken:
                processed += 1
                if deadline[rid] < now:
                    dropped_at[rid] = s
                else:
                    served.append(rid)
            if not served:
                heapq.heappush(idle[s], (now, rep))
                continue
            done = now + lat[s][len(served)]
            for rid in served:
                finish[s, rid] = done
                if s + 1 < n_stages:
                    heapq.heappush(events, (done, _ARRIVE, seq, s + 1, rid))
                    seq += 1
            heapq.heappush(events, (done, _FREE, seq, s, rep))
            seq += 1

    while events:
        now, kind, _seq, s, x = heapq.heappop(events)
        if kind == _ARRIVE:
            queues[s].append((now, x))
        elif kind == _FREE:
            heapq.heappush(idle[s], (now, x))
        else:
            timeout_pending[s] = None
        # events at the same instant are all applied before anyone dispatches
        if events and events[0][0] == now:
            continue
        for stage in range(n_stages):
            dispatch(stage, now)
    return {"finish_s": finish, "dropped_at": dropped_at, "events": np.array([processed])}
