"""A load that is no data, end to end: the sidecar holds the running configuration (issue 11).

The safety layer raises `InvalidLoad` on a NaN, infinite or negative load; the sidecar turns the failed decision
into "holding the current config" and applies nothing. Before the fix a NaN load approved any proposal, so one
bad sample could scale a loaded pipeline down to its smallest configuration.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ilp_baseline.safety import SafetyLayer
from rlscale.kube.sidecar import Sidecar, SidecarSettings
from rlscale.model import plan_fixed_variants
from rlscale.spec import load_spec
from rlscale.types import PipelineConfig, PipelineState, StageConfig


class _Cluster:
    """Observes a fixed load history; records what it is asked to apply."""

    def __init__(self, spec, history: np.ndarray, running: PipelineConfig) -> None:
        self.spec = spec
        self.history = history
        self.running = running
        self.applied: list[PipelineConfig] = []

    def observe(self) -> PipelineState:
        return PipelineState(100.0, 10.0, self.history, self.running, None)

    def apply(self, config):  # pragma: no cover - must not be called
        self.applied.append(config)
        raise AssertionError(f"applied {config} on a load that is no data")


class _Proposes:
    name = "smallest"

    def __init__(self, config: PipelineConfig) -> None:
        self.config = config

    def decide(self, state: PipelineState) -> PipelineConfig:
        return self.config


@pytest.mark.parametrize("bad", [math.nan, math.inf, -5.0])
def test_the_sidecar_holds_when_the_load_is_no_data(bad):
    spec = load_spec("video")
    running = plan_fixed_variants(spec, [st.variants[0].name for st in spec.stages], 40.0)
    smallest = PipelineConfig(tuple(StageConfig.one(st.variant_names[0], 1, 1, 1) for st in spec.stages))
    history = np.full(60, 40.0)
    history[-10:] = bad  # the whole last interval is broken
    cluster = _Cluster(spec, history, running)
    report = Sidecar(cluster, _Proposes(smallest), SafetyLayer(spec), SidecarSettings(0.01)).step()
    assert cluster.applied == []
    assert report.config is None
    assert "holding the current config" in report.message
    assert "InvalidLoad" in report.message
