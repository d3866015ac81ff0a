"""Gymnasium environments wrapping any `Cluster`, registered on import as they are trained.

Registered ids (each the environment ``rlscale train`` builds with its default settings, `TRAINED_KWARGS`, and the
action design named; keyword arguments to ``gymnasium.make`` override any of them, e.g. ``pipeline="sum-qa"``):

- ``rlscale/Pipeline-v0``: the planner action (every bundled agent's; ``rlscale train``'s default).
- ``rlscale/PipelineDirect-v0``: the direct action (``rlscale train --action-design direct``: the ablation).

Agents trained before issue 15 (absolute loads, no objective in the observation) have no registered id: build their
environment with ``PipelineEnv(pipeline, action_design=None)`` or with the agent's codec (``codec=``).
"""

from types import MappingProxyType

from gymnasium.envs.registration import register, registry

from envs.pipeline_env import Codec, PipelineEnv, TrainingTraces
from rlscale.workload import TRAINING_DAYS

ENV_ID = "rlscale/Pipeline-v0"
DIRECT_ENV_ID = "rlscale/PipelineDirect-v0"

TRAINED_KWARGS = MappingProxyType(
    {
        "pipeline": "video",
        "action_design": "planner",
        "sample_objective": True,
        "load_scales": (0.25, 3.0),
        "training_days": (0, TRAINING_DAYS - 1),
    }
)
"""`PipelineEnv`'s arguments as ``rlscale train`` sets them by default (`agents.ppo.make_env` for a default
`agents.ppo.TrainConfig`: sampled weights, load scales 0.25-3, the last training day kept for validation); the other
arguments' defaults are already training's. tests/envs checks that the two agree."""

REGISTERED = MappingProxyType(
    {
        ENV_ID: TRAINED_KWARGS,
        DIRECT_ENV_ID: MappingProxyType({**TRAINED_KWARGS, "action_design": "direct"}),
    }
)
"""Every registered id and its keyword arguments."""

for _id, _kwargs in REGISTERED.items():
    if _id not in registry:
        register(id=_id, entry_point="envs.pipeline_env:PipelineEnv", kwargs=dict(_kwargs))

__all__ = ["DIRECT_ENV_ID", "ENV_ID", "REGISTERED", "TRAINED_KWARGS", "Codec", "PipelineEnv", "TrainingTraces"]
