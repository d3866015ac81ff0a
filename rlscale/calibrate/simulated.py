"""The simulated side: the same window, arrivals and seed through `rlscale.sim.runner.run_episode`, with a policy
holding the configuration (installed warm), then drained; per-request figures shaped as the generator's."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rlscale.errors import RlscaleError
from rlscale.sim.metrics import e2e_latency_s, stage_latency_s
from rlscale.sim.runner import run_episode
from rlscale.spec import PipelineSpec
from rlscale.types import PipelineConfig, PipelineState, StageConfig
from rlscale.workload import Trace


class FixedPolicy:
    """Holds one configuration."""

    def __init__(self, config: PipelineConfig, name: str = "fixed") -> None:
        self.config = config
        self.name = name

    def decide(self, state: PipelineState) -> PipelineConfig:
        return self.config


def fixed_config(variants: Sequence[str], batch: int, cores: int = 1) -> PipelineConfig:
    """One replica of ``cores`` cores per stage, each running its variant at ``batch``."""
    return PipelineConfig(stages=tuple(StageConfig.one(v, batch, 1, cores) for v in variants))


@dataclass
class SimResult:
    """Per-request figures of one simulated run (as `rlscale.calibrate.load.LoadResult`'s).

    Attributes:
        stage_s: per stage, queue + service, shape (stages, requests); NaN where not served.
        stage_end_s: per stage, when the request left it.
        e2e_s: end to end, from arrival (NaN: dropped).
        entry_s: the arrivals (the generator's schedule, checked).
        mean_batch: per stage, the mean size of the batches it ran.
    """

    stage_s: np.ndarray
    stage_end_s: np.ndarray
    e2e_s: np.ndarray
    entry_s: np.ndarray
    mean_batch: list[float]


def simulate(
    spec: PipelineSpec, variants: Sequence[str], batch: int, trace: Trace, arrivals: str, seed: int
) -> SimResult:
    """The window through the simulator with the configuration held (installed warm), then drained."""
    fixed = fixed_config(variants, batch)
    result = run_episode(spec, trace, FixedPolicy(fixed), seed=seed, arrivals=arrivals, initial=fixed)
    sim = result.simulator
    if sim is None:
        raise RlscaleError("the simulator kept no per-request outcomes")
    o = sim.outcomes
    n = sim.requests.n_requests
    ids = np.arange(n)
    stages = len(variants)
    stage_s = np.vstack([stage_latency_s(o, s, ids) for s in range(stages)]) if n else np.full((stages, 0), np.nan)
    e2e = e2e_latency_s(sim.requests, o, ids)
    return SimResult(stage_s, o.finish_s.copy(), e2e, sim.requests.entry_s.copy(), _mean_batch(o.batch_size))


def _mean_batch(batch_size: np.ndarray) -> list[float]:
    """Per stage, the mean size of the batches run (each batch once: requests / sum over requests of 1 / its
    batch's size), as the runtime's ``rlscale_batch_size`` histogram counts it."""
    out = []
    for sizes in batch_size:
        served = sizes[sizes > 0].astype(float)
        out.append(float(served.size / np.sum(1.0 / served)) if served.size else float("nan"))
    return out
