"""The PPO agent's inference: the ``ppo`` / ``ppo-raw`` policies' proposals, numpy only.

`PPOPolicy` runs a trained agent's actor (`agents.actor`: the actor file format and its forward pass) on the
observations of its codec (`envs.codecs`). This module and `agents.actor` import no gymnasium, torch or
stable-baselines3, directly or indirectly: simulate, compare, bench, the sidecar and manifests run the bundled
agents without the ``train`` extra (tests/agents/test_inference.py checks it in a fresh interpreter). Training
(`agents.training`) and the model converter (`agents.conversion`, ``python -m agents.ppo``) are the only modules that
need torch.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from agents.actor import Actor, AgentMismatch, load_actor
from rlscale.errors import RlscaleError
from rlscale.inputs import special_file_kind
from rlscale.lstm import LSTMPredictor
from rlscale.paths import check_name, inside
from rlscale.spec import PipelineSpec
from rlscale.types import PipelineConfig, PipelineState

BUNDLED_DIR = Path(__file__).resolve().parent / "data"
ACTOR_FILE = "actor.npz"  # a run's actor, beside its model.zip
TRAIN_EXTRA_HINT = "install the train extra (pip install 'rlscale[train]')"

__all__ = ["ACTOR_FILE", "AgentMismatch", "PPOPolicy", "bundled_agent", "is_model_zip", "load_agent"]


def bundled_agent(pipeline: str) -> Path:
    """Where the bundled agent of ``pipeline`` (its actor file, `agents.actor`) lives: ``agents/data/ppo_{name}.npz``.

    Raises:
        RlscaleError: ``pipeline`` is not a safe name, or the path would leave ``agents/data``.
    """
    check_name(pipeline, "pipeline name")
    return inside(BUNDLED_DIR, f"ppo_{pipeline}.npz", "bundled agent")


class PPOPolicy:
    """A trained agent as a `Policy`: it proposes; the guard in front of it (``ppo``: the safety layer; ``ppo-raw``:
    none) is the registry's (`rlscale.policies.registry.make_policy`) and the control step's (`rlscale.control`).

    Inference is numpy only (`agents.actor.Actor`): an agent file is never unpickled.

    Args:
        spec: the pipeline the agent was trained for.
        model_path: the agent: an actor file (``.npz``: a bundled agent, a run's ``actor.npz``) or an `Actor`;
            default: the bundled agent of the pipeline. A training run's ``model.zip`` is refused (loading it
            unpickles): convert it with ``python -m agents.ppo MODEL.zip OUT.npz``.

    Raises:
        RlscaleError: no such file, not an agent, or a stable-baselines3 model.
        AgentMismatch: an agent of another pipeline (name, observations or action choices).
    """

    def __init__(
        self,
        spec: PipelineSpec,
        model_path: Path | Actor | None = None,
    ) -> None:
        if isinstance(model_path, Actor):
            self.actor, source = model_path, "agent"
        else:
            path = Path(model_path) if model_path is not None else bundled_agent(spec.name)
            if not path.exists():
                raise RlscaleError(
                    f"no agent at {path}; train one with: rlscale train --pipeline {spec.name}, then pass "
                    f"--agent RUN/{ACTOR_FILE}"
                )
            self.actor, source = load_agent(path), str(path)
        self.codec = self.actor.codec(spec, source)
        self.predictor = LSTMPredictor()
        self.name = "ppo"

    def act(self, obs: np.ndarray) -> np.ndarray:
        """The deterministic action (argmax of every sub-action's logits) for one observation."""
        return self.actor.act(obs)

    def decide(self, state: PipelineState) -> PipelineConfig:
        """The agent's proposal for ``state``."""
        predicted = self.predictor.predict(state)
        obs = self.codec.observe(state, predicted)
        return self.codec.decode(self.act(obs), state, predicted)


def is_model_zip(path: Path) -> bool:
    """Whether ``path`` is (the start of) a stable-baselines3 model: a regular file, a zip holding ``policy.pth``
    (read without unpickling anything)."""
    try:
        if special_file_kind(path) is not None:  # a FIFO would block, a device never end
            return False
        with zipfile.ZipFile(path) as zf:
            return "policy.pth" in zf.namelist()
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def load_agent(path: Path) -> Actor:
    """The actor of an agent file (``--agent``): an actor ``.npz`` only, numpy arrays never unpickled.

    A stable-baselines3 model (any zip holding ``policy.pth``, whatever its name) is refused: loading it unpickles
    its ``data`` member, which can run code. `agents.conversion.actor_from_model_zip` (``python -m agents.ppo``)
    converts a model the user trained.

    Raises:
        RlscaleError: a folder, not a regular file, a stable-baselines3 model, or not an actor file.
    """
    path = Path(path)
    if path.is_dir():
        raise RlscaleError(f"{path}: is a folder; pass an agent file (a run's {ACTOR_FILE})")
    return load_actor(path)
