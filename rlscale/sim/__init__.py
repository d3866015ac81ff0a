"""Discrete-event pipeline simulator (a `Cluster`) and the episode runner.

Modules: `arrivals` (the request table), `replicas` (replicas, rollouts, allocated cores), `engine` (the event
loop: per-request outcomes and per-interval counters), `metrics` (interval and run summaries from the same
per-request outcomes), `cluster` (`Simulator`, the `Cluster` protocol), `runner` (episodes, warm start, the
summary record), `naive` (the reference engine).
"""

from rlscale.sim.cluster import Simulator
from rlscale.sim.runner import RunResult, run_episode

__all__ = ["RunResult", "Simulator", "run_episode"]
