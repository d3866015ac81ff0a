"""Protocols that make the simulator and a real cluster, and every policy, interchangeable."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from rlscale.types import IntervalMetrics, PipelineConfig, PipelineState


@runtime_checkable
class Cluster(Protocol):
    """Something that runs a pipeline: the simulator or a Kubernetes cluster."""

    def observe(self) -> PipelineState:
        """What a policy may see now."""
        ...

    def apply(self, config: PipelineConfig) -> object:
        """Start moving to ``config`` (make-before-break; takes effect after the variants' startup delay); returns
        what was done (the Kubernetes actuator's outcome; None in the simulator)."""
        ...

    def step(self) -> IntervalMetrics:
        """Run one adaptation interval and return its metrics."""
        ...

    @property
    def done(self) -> bool:
        """The workload is over (a trace's end in the simulator; never on a live cluster)."""
        ...


@runtime_checkable
class Policy(Protocol):
    """Chooses the next configuration. One method, so PPO, the ILP and the heuristics are interchangeable."""

    name: str

    def decide(self, state: PipelineState) -> PipelineConfig: ...


@runtime_checkable
class Predictor(Protocol):
    """Predicts the load (rps) of the coming interval from the observed history."""

    name: str

    def predict(self, state: PipelineState) -> float: ...
