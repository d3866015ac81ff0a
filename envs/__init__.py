"""Gymnasium environments wrapping any `Cluster`, and the agent's codecs.

- `envs.codecs`: the observation and action codecs (gym-free: the deployed agent's numpy inference imports them).
- `envs.pipeline_env`: the environment, `PipelineEnv`; importing it registers the ids of `envs.registration`
  (``rlscale/Pipeline-v0``: the planner action, ``rlscale/PipelineDirect-v0``: the direct action), each the
  environment ``rlscale train`` builds by default. ``import envs.pipeline_env`` (or ``from envs import PipelineEnv``)
  before ``gymnasium.make``, or name the module in the id: ``gymnasium.make("envs.pipeline_env:rlscale/Pipeline-v0")``.
- `envs.curriculum`: the curriculum against IPA's planner.

Importing this package imports no gymnasium (nor any of its modules): `PipelineEnv`, `TrainingTraces` and `Codec` are
loaded when first named here.

Agents trained before issue 15 (absolute loads, no objective in the observation) have no registered id: build their
environment with ``PipelineEnv(pipeline, action_design=None)`` or with the agent's codec (``codec=``).
"""

from __future__ import annotations

from typing import Any

from envs.registration import DIRECT_ENV_ID, ENV_ID, REGISTERED, TRAINED_KWARGS

__all__ = ["DIRECT_ENV_ID", "ENV_ID", "REGISTERED", "TRAINED_KWARGS", "Codec", "PipelineEnv", "TrainingTraces"]


def __getattr__(name: str) -> Any:
    """`PipelineEnv` and `TrainingTraces` (gymnasium's) and `Codec`, imported when first asked for."""
    if name in ("PipelineEnv", "TrainingTraces"):
        from envs import pipeline_env

        return getattr(pipeline_env, name)
    if name == "Codec":
        from envs.codecs import Codec

        return Codec
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
