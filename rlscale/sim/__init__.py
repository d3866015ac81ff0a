"""Discrete-event pipeline simulator (a `Cluster`) and the episode runner."""

from rlscale.sim.engine import Simulator
from rlscale.sim.runner import RunResult, run_episode

__all__ = ["RunResult", "Simulator", "run_episode"]
