"""The environment ids registered with Gymnasium, and their registration.

Registered ids (each the environment ``rlscale train`` builds with its default settings, `TRAINED_KWARGS`, and the
action design named; keyword arguments to ``gymnasium.make`` override any of them, e.g. ``pipeline="sum-qa"``):

- ``rlscale/Pipeline-v0``: the planner action (every bundled agent's; ``rlscale train``'s default).
- ``rlscale/PipelineDirect-v0``: the direct action (``rlscale train --action-design direct``: the ablation).

Importing `envs.pipeline_env` registers them (`register_envs`); this module itself imports no gymnasium at import
time, so the package `envs` stays importable by the agent's numpy inference.
"""

from __future__ import annotations

from types import MappingProxyType

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
"""`PipelineEnv`'s arguments as ``rlscale train`` sets them by default (`agents.training.make_env` for a default
`agents.train_config.TrainConfig`: sampled weights, load scales 0.25-3, the last training day kept for validation);
the other arguments' defaults are already training's. tests/envs checks that the two agree."""

REGISTERED = MappingProxyType(
    {
        ENV_ID: TRAINED_KWARGS,
        DIRECT_ENV_ID: MappingProxyType({**TRAINED_KWARGS, "action_design": "direct"}),
    }
)
"""Every registered id and its keyword arguments."""


def register_envs() -> None:
    """Register every id of `REGISTERED` with Gymnasium (those registered already are left as they are)."""
    from gymnasium.envs.registration import register, registry

    for env_id, kwargs in REGISTERED.items():
        if env_id not in registry:
            register(id=env_id, entry_point="envs.pipeline_env:PipelineEnv", kwargs=dict(kwargs))
