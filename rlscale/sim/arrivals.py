"""The workload side of the simulator: the request table built from a trace (DESIGN.md section 4).

``rps[t]`` requests arrive in second t, spread evenly inside the second (``t + i/rps``, IPA's load generator) or,
with ``mode="poisson"``, as a Poisson process of rate ``rps[t]`` in that second. Every random draw comes from the
`numpy.random.Generator` handed in; ``even`` draws nothing.

Deadlines (DESIGN.md section 4): a request's SLO deadline is its arrival + ``sla_s``, or, where the spec has a
``request_slo``, its arrival + its remaining budget ``sla_s - payload / bandwidth(arrival)`` (`rlscale.bandwidth`).
The drop deadline is always arrival + ``drop_limit_s``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rlscale.bandwidth import remaining_budget_s
from rlscale.errors import RlscaleError
from rlscale.spec import PipelineSpec
from rlscale.workload import Trace

ARRIVAL_MODES = ("even", "poisson")


@dataclass(frozen=True)
class RequestTable:
    """Per-request inputs of one run, indexed by request id (ids are in arrival order).

    Attributes:
        entry_s: time each request enters the pipeline, sorted.
        drop_deadline_s: ``entry_s + drop_limit_s``: a request whose batch would start later is dropped.
        counts: requests per second of the trace (as drawn).
        slo_deadline_s: each request's SLO deadline (arrival + its budget); None: arrival + the spec's SLA.
        budget_s: each request's remaining budget on arrival (``request_slo``); None: every request has the SLA.
    """

    entry_s: np.ndarray
    drop_deadline_s: np.ndarray
    counts: np.ndarray
    slo_deadline_s: np.ndarray | None = None
    budget_s: np.ndarray | None = None

    @property
    def n_requests(self) -> int:
        return int(self.entry_s.size)


def arrival_times_s(rps: np.ndarray, mode: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Arrival times (sorted) and per-second counts for a per-second rate ``rps``.

    Args:
        rps: requests per second, one value per second.
        mode: ``even`` or ``poisson`` (see the module docstring).
        rng: source of every random draw.
    """
    if mode not in ARRIVAL_MODES:
        raise RlscaleError(f"arrivals must be one of {', '.join(ARRIVAL_MODES)}, got {mode!r}")
    if mode == "poisson":
        counts = rng.poisson(rps)
    else:
        counts = np.rint(rps).astype(np.int64)
    total = int(counts.sum())
    seconds = np.repeat(np.arange(counts.size, dtype=float), counts)
    if mode == "poisson":
        offsets = rng.random(total)
        order = np.lexsort((offsets, seconds))
        times = seconds[order] + offsets[order]
    else:
        starts = np.repeat(np.cumsum(counts) - counts, counts)
        idx = np.arange(total) - starts
        times = seconds + idx / np.repeat(np.maximum(counts, 1), counts)
    return times, counts


def request_table(spec: PipelineSpec, trace: Trace, rng: np.random.Generator, mode: str = "even") -> RequestTable:
    """The request table of ``trace`` for ``spec``: arrival times, each request's drop deadline and, with a
    ``request_slo``, its remaining budget and SLO deadline."""
    entry_s, counts = arrival_times_s(trace.rps, mode, rng)
    drop = entry_s + spec.drop_limit_s
    slo = spec.request_slo
    if slo is None:
        return RequestTable(entry_s=entry_s, drop_deadline_s=drop, counts=counts)
    budget = remaining_budget_s(spec.sla_s, slo.payload_kb, slo.trace, entry_s)
    return RequestTable(entry_s, drop, counts, slo_deadline_s=entry_s + budget, budget_s=budget)
