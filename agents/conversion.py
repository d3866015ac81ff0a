"""Stable-baselines3 models and the actor files made of them: export, conversion, saving.

`export_actor` turns a trained PPO model (SB3's default MLP policy) into an `agents.actor.Actor` with the codec
settings of its run (`codec_settings`); `actor_from_model_zip` reads a ``model.zip`` for that (TRUSTED INPUT ONLY:
it unpickles), and `agreement` checks that the numpy actor picks SB3's actions. ``python -m agents.ppo MODEL.zip
OUT.npz`` (`agents.ppo`) is the command around them. Training code: torch and stable-baselines3 are imported inside
the functions that need them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from agents.actor import Actor
from agents.inference import ACTOR_FILE, TRAIN_EXTRA_HINT
from envs.codecs import CAPACITY_LEVELS, HEADROOMS, HEADROOMS_V1, HOLD_DELTA, TILTS
from rlscale.errors import RlscaleError
from rlscale.inputs import MAX_SETTINGS_BYTES, read_json_limited
from rlscale.paths import atomic_path, atomic_write_text
from rlscale.spec import PipelineSpec, load_spec


def actor_from_model_zip(path: Path) -> Actor:
    """Load a stable-baselines3 ``model.zip`` (needs torch) and export its actor.

    TRUSTED INPUT ONLY: stable-baselines3 unpickles the model's ``data`` member, so a model from anyone else can run
    any code here. Only ``python -m agents.ppo`` (converting a model the user trained) calls this; ``--agent``
    never does.

    The codec settings come from the training settings saved beside it (``{stem}.json`` or the run's
    ``config.json``); without them the agent cannot be used.

    Raises:
        RlscaleError: torch or stable-baselines3 missing, an unreadable model, or no usable settings.
    """
    try:
        from stable_baselines3 import PPO
    except ImportError:
        raise RlscaleError(
            f"{path} is a training run's model.zip, which needs torch and stable-baselines3: {TRAIN_EXTRA_HINT}, "
            f"or pass the run's {ACTOR_FILE} instead"
        ) from None
    try:
        model = PPO.load(path, device="cpu")
    except Exception as exc:  # noqa: BLE001 - a corrupt or foreign zip: one clear line
        raise RlscaleError(f"{path}: cannot load the agent: {one_line(exc)}") from None
    settings = _read_settings(path)
    return export_actor(
        model,
        _spec_name(settings, path),
        float(settings["load_scale_rps"]),
        training=settings,
        **codec_settings(settings),
    )


def codec_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The actor's codec keys for a run's settings (``config.json``): runs before issue 15 (no ``action_design``)
    observed absolute loads and acted directly; planner runs record the action's levels under ``codec`` (the
    first ones did not: they had `HEADROOMS_V1` and no hold-unless-gain choice)."""
    design = settings.get("action_design")
    if design is None:
        return {"observation": "absolute", "action": "direct"}
    levels = settings.get("codec")
    if levels is None:  # a direct run (the levels are unused), or a planner run of the first planner agents
        first = design == "planner"
        levels = {"headrooms": list(HEADROOMS_V1 if first else HEADROOMS), "tilts": list(TILTS), "hold_delta": None}
    return {
        "observation": "conditioned",
        "action": str(design),
        "headrooms": tuple(float(x) for x in levels["headrooms"]),
        "tilts": tuple(float(x) for x in levels["tilts"]),
        "hold_delta": None if levels["hold_delta"] is None else float(levels["hold_delta"]),
    }


def export_actor(
    model,
    pipeline: str,
    load_scale_rps: float,
    capacity_levels: tuple[float, ...] = CAPACITY_LEVELS,
    training: dict[str, Any] | None = None,
    observation: str = "absolute",
    action: str = "direct",
    headrooms: tuple[float, ...] = HEADROOMS,
    tilts: tuple[float, ...] = TILTS,
    hold_delta: float | None = HOLD_DELTA,
) -> Actor:
    """The actor network of an SB3 PPO model as an `Actor` (numpy), with the codec settings it was trained with.

    SB3's ``predict`` builds one torch distribution per sub-action; the argmax of the logits is the same action.

    Raises:
        RlscaleError: not SB3's default MLP policy with tanh activations over a Box observation and a
            MultiDiscrete action (the only architecture ``rlscale train`` builds).
    """
    import torch
    from gymnasium import spaces
    from stable_baselines3.common.torch_layers import FlattenExtractor

    policy = model.policy
    unsupported = RlscaleError(
        "cannot export the agent: only SB3's default MLP policy (tanh, Box observations, MultiDiscrete actions) "
        "has a numpy actor"
    )
    extractor = getattr(policy, "pi_features_extractor", policy.features_extractor)
    if not isinstance(extractor, FlattenExtractor) or not isinstance(model.action_space, spaces.MultiDiscrete):
        raise unsupported
    if len(model.observation_space.shape) != 1:
        raise unsupported
    modules = list(policy.mlp_extractor.policy_net)
    if any(not isinstance(m, torch.nn.Linear | torch.nn.Tanh) for m in modules):
        raise unsupported
    linear = modules[0::2]
    if len(modules) % 2 or not all(isinstance(m, torch.nn.Linear) for m in linear):
        raise unsupported  # Linear, Tanh, Linear, Tanh...
    if not all(isinstance(m, torch.nn.Tanh) for m in modules[1::2]):
        raise unsupported

    def numpy(m) -> tuple[np.ndarray, np.ndarray]:
        return m.weight.detach().cpu().numpy().T.copy(), m.bias.detach().cpu().numpy().copy()

    return Actor(
        pipeline=pipeline,
        layers=tuple(numpy(m) for m in linear),
        head=numpy(policy.action_net),
        nvec=tuple(int(n) for n in model.action_space.nvec),
        load_scale_rps=float(load_scale_rps),
        capacity_levels=tuple(float(x) for x in capacity_levels),
        training=dict(training or {}),
        observation=observation,
        action=action,
        headrooms=tuple(headrooms),
        tilts=tuple(tilts),
        hold_delta=hold_delta,
    )


def _read_settings(model_path: Path) -> dict[str, Any]:
    """The training settings saved beside a model (``{stem}.json``, else the run's ``config.json``).

    Raises:
        RlscaleError: none there, not a JSON object, or without ``load_scale_rps`` (no silent default: an agent
            read with another load scale sees other observations).
    """
    for candidate in (model_path.with_suffix(".json"), model_path.parent / "config.json"):
        if candidate.is_file():
            settings = read_json_limited(candidate, MAX_SETTINGS_BYTES, RlscaleError, "the agent's training settings")
            if not isinstance(settings, dict) or "load_scale_rps" not in settings:
                raise RlscaleError(f"{candidate}: the agent's training settings lack load_scale_rps")
            scale = settings["load_scale_rps"]
            if (
                isinstance(scale, bool)
                or not isinstance(scale, int | float)
                or not (math.isfinite(scale) and scale > 0)
            ):
                raise RlscaleError(f"{candidate}: load_scale_rps must be a number > 0, got {scale!r}")
            return settings
    raise RlscaleError(
        f"{model_path}: no training settings beside it ({model_path.with_suffix('.json').name} or config.json), "
        f"so its load scale is unknown; pass the run's {ACTOR_FILE} instead"
    )


def _spec_name(settings: dict[str, Any], model_path: Path) -> str:
    """The name of the spec a model was trained for: ``spec_name`` in its settings (runs before it was recorded:
    the spec ``pipeline`` names)."""
    name = settings.get("spec_name")
    if isinstance(name, str):
        return name
    pipeline = settings.get("pipeline")
    if isinstance(pipeline, str):
        try:
            return load_spec(pipeline).name
        except RlscaleError:
            pass
    raise RlscaleError(f"{model_path}: its training settings do not say which pipeline it was trained for")


def save_model(model, path: Path, settings: dict[str, Any] | None = None) -> Path:
    """Save ``model`` atomically at ``path``; with ``settings``, them beside it (``.json``, what loading reads)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        model.save(tmp)
    if settings is not None:
        atomic_write_text(path.with_suffix(".json"), json.dumps(settings, indent=2) + "\n")
    return path


def agreement(model, actor: Actor, spec: PipelineSpec, n: int = 400, seed: int = 0) -> int:
    """On how many of ``n`` observations (half from env resets, half sampled from the observation space) the
    actor picks SB3's deterministic action; ``n`` means identical everywhere."""
    from envs.pipeline_env import PipelineEnv

    env = PipelineEnv(spec, codec=actor.make_codec(spec))
    env.observation_space.seed(seed)
    same = 0
    for i in range(n):
        obs = env.observation_space.sample() if i % 2 else env.reset(seed=seed + i)[0]
        expected, _ = model.predict(obs, deterministic=True)
        same += bool(np.array_equal(actor.act(obs), np.asarray(expected)))
    return same


def one_line(exc: BaseException) -> str:
    """An exception's message on one line of at most 300 characters (its type's name when it has none)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
