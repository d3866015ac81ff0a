"""Gymnasium environments wrapping any `Cluster`; ``rlscale/Pipeline-v0`` is registered on import."""

from gymnasium.envs.registration import register, registry

from envs.pipeline_env import Codec, PipelineEnv, TrainingTraces

ENV_ID = "rlscale/Pipeline-v0"

if ENV_ID not in registry:
    register(id=ENV_ID, entry_point="envs.pipeline_env:PipelineEnv")

__all__ = ["ENV_ID", "Codec", "PipelineEnv", "TrainingTraces"]
