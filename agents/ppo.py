"""The PPO agent: training on training windows only, and the ``ppo`` / ``ppo-raw`` policies.

Training runs stable-baselines3's PPO on `envs.PipelineEnv` (safety layer on, so the agent learns what the
projected configurations do), over random windows of the training traffic (``traces``: the Twitter training split,
days 0-12, and/or the user's own CSV traces, their last part held out for validation) and synthetic variations of
them; the evaluation windows are only ever *evaluated on*, for the logs, and never used to pick a model. A run
folder ``{pipeline}__ppo__{seed}__{time}`` holds the resolved config (``config.json``), TensorBoard
logs (``tb/``), checkpoints (every ``checkpoint_every`` steps and every ``checkpoint_minutes``), the final
``model.zip`` (SB3's, for ``--resume``), its actor as numpy (``actor.npz``, `agents.actor`: what ``--agent`` and
the bundled agents use) and ``eval.json``. A stop request (SIGINT/SIGTERM through `rlscale.interrupts`) ends
learning at the next step: ``model.zip`` and ``actor.npz`` are saved, ``interrupted.json`` says where it stopped,
and `TrainingInterrupted` tells the caller; ``--resume`` continues from that model. Models are written atomically
(a temporary file, then ``os.replace``), so a checkpoint is whole or absent.

Only training imports torch and stable-baselines3 (inside the functions that need them): `PPOPolicy` runs the
numpy actor, and reads a ``model.zip`` only when given one (then it needs the ``train`` extra).

Convert a run's ``model.zip`` (trained before runs wrote ``actor.npz``) with
``python -m agents.ppo MODEL.zip OUT.npz``; it checks that the actor picks SB3's actions.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import signal
import sys
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from agents.actor import Actor, AgentMismatch, load_actor
from envs.codecs import (
    ACTION_DESIGNS,
    CAPACITY_LEVELS,
    HEADROOMS,
    HEADROOMS_V1,
    HOLD_DELTA,
    HOLDS,
    RATIO_RANGE,
    TILTS,
)
from envs.curriculum import Curriculum
from envs.pipeline_env import PipelineEnv
from ilp_baseline.safety import SafetyLayer
from rlscale.control import Controller
from rlscale.errors import RlscaleError
from rlscale.inputs import MAX_SEED, MAX_SETTINGS_BYTES, read_json_limited, special_file_kind
from rlscale.interrupts import Interrupted, StopRequest, signal_name, signum_of
from rlscale.lstm import LSTMPredictor
from rlscale.paths import OutputError, atomic_path, atomic_write_text, check_name, inside, new_folder
from rlscale.spec import PipelineSpec, load_spec
from rlscale.types import PipelineConfig, PipelineState
from rlscale.workload import (
    DEFAULT_VALIDATION_FRACTION,
    EVAL_TRACES,
    IPA_DAMPING,
    IPA_PATTERNS,
    TRAINING_DAYS,
    TWITTER,
    WINDOW_S,
    Trace,
    TrafficSource,
    load_trace,
    parse_trace_list,
    peak_rps,
    source_validation_windows,
    training_sources,
)

log = logging.getLogger(__name__)

BUNDLED_DIR = Path(__file__).resolve().parent / "data"
ACTOR_FILE = "actor.npz"  # a run's actor, beside its model.zip
TRAIN_EXTRA_HINT = "install the train extra (pip install 'rlscale[train]')"

__all__ = ["ACTOR_FILE", "AgentMismatch", "PPOPolicy", "TrainConfig", "TrainingInterrupted", "bundled_agent", "train"]


class TrainingInterrupted(Interrupted):
    """Training stopped early on a stop request or an interrupt; the model so far is saved.

    Attributes:
        run: the run folder.
        model: the saved ``model.zip`` (``--resume`` takes it).
        timesteps_done: environment steps learnt (in this run, after the resumed model's).
        timesteps: the steps the run was asked for.
    """

    def __init__(self, signum: int, run: Path, model: Path, timesteps_done: int, timesteps: int) -> None:
        super().__init__(signum)
        self.run = run
        self.model = model
        self.timesteps_done = timesteps_done
        self.timesteps = timesteps


def bundled_agent(pipeline: str) -> Path:
    """Where the bundled agent of ``pipeline`` (its actor file, `agents.actor`) lives: ``agents/data/ppo_{name}.npz``.

    Raises:
        RlscaleError: ``pipeline`` is not a safe name, or the path would leave ``agents/data``.
    """
    check_name(pipeline, "pipeline name")
    return inside(BUNDLED_DIR, f"ppo_{pipeline}.npz", "bundled agent")


@dataclass
class TrainConfig:
    """Everything a training run depends on (saved as ``config.json`` beside the model).

    Attributes:
        pipeline: bundled name or spec path.
        timesteps: environment steps (adaptation intervals) to train for.
        seed: seeds PPO, the environments and their training windows.
        traces: comma-separated training traffic: twitter (the bundled training split) and/or CSV files with an rps
            column, one row per second (your own traffic; the last validation_fraction of each is held out).
        eval_traces: comma-separated traces the final model is scored on for eval.json, reported only (bundled
            names or CSVs; none: skip).
        window_s: length of the training and validation windows, seconds.
        damping: divide the Twitter split's counts by this, as IPA did (CSV traces are used as given).
        validation_fraction: the last part of each CSV trace held out of training for validation, at least one
            window (0: none).
        n_envs: parallel environments.
        out: parent folder of the run folder.
        resume: a model.zip to continue from (None: start fresh).
        learning_rate: PPO's Adam step size.
        n_steps: steps collected per environment before each update (the rollout is n_steps x n_envs).
        batch_size: minibatch size of the updates (best a divisor of n_steps x n_envs).
        n_epochs: passes over each rollout per update.
        gamma: discount factor of the rewards.
        gae_lambda: GAE's bias/variance trade-off.
        ent_coef: weight of the entropy bonus (exploration).
        net_arch: hidden layer sizes of the actor and the value network.
        checkpoint_every: save a checkpoint every this many steps.
        checkpoint_minutes: also save one every this many minutes of training (0: only by steps).
        eval_every: evaluate on the evaluation traces every this many steps (logged only).
        load_scale_rps: the environment's load normalisation: loads are divided by this (rps).
        projection_penalty: reward penalty per unit of the safety layer's projection distance.
        reconfig_penalty: reward penalty when the configuration changes.
        validation_days: the Twitter split's last days kept out of training; the validation windows come from
            them (0: train on all 14 days, no validation).
        validation_windows: windows of each trace's validation part the model is scored on after training (what
            a sweep of trainings selects by).
        vec_env: where the environments step: dummy (in this process) or subproc (one process each: pays when
            stepping costs more than the policy's updates, on many cores; on 2 cores it trained 1.38x slower).
        name: the run folder's name (default: pipeline__ppo__seed__time).
        torch_threads: threads torch computes on (default 1: on small or shared machines more threads slowed the
            learner down, up to 10x on 2 busy cores; 0: torch's default, every core).
        action_design: ``planner`` (the agent sets per-stage headroom, hold-or-replan and an accuracy tilt; the
            exact DP builds the configuration) or ``direct`` (variant, batch, cores and a capacity level per stage);
            both observe the objective's weights and loads relative to capacity
            (`envs.codecs.ConditionedCodec`).
        weights: ``sampled``: draw each training episode's alpha/beta and sla_penalty/beta log-uniform
            (alpha/beta in 1-250, sla_penalty/beta in 30-300; the spec's own weights one episode in five), so one
            agent serves any weights; ``spec``: train at the spec's weights only.
        min_load_scale: each training window is multiplied by a factor drawn log-uniform in
            [min_load_scale, max_load_scale] (1, 1: the traces' own load).
        max_load_scale: see ``min_load_scale``.
        curriculum: ``none``: uniform draws; ``ipa-gap``: draw more episodes from the weight and load bins where
            the agent trails IPA's planner most (`envs.curriculum`, after Genet; needs sampled weights). It lost the
            ablation on video (experiments/RESULTS.md section 10), so it is off by default.
        prior: ``ipa``: the untrained policy proposes IPA's own action (headroom 1 on every stage, replan, no tilt)
            with most of its probability (its action head's biases, `PRIOR_LOGIT`), so PPO starts from IPA's
            planner and moves away only where its returns say so, and where it learnt nothing (a load or weights
            it rarely met) it stays close to IPA; ``ipa-hold``: the same towards ``ipa-hold``'s action (headroom
            0.9, hold unless re-planning gains more than `envs.codecs.HOLD_DELTA`); ``auto``: whichever of
            those two actions, held fixed, beats IPA by more on the validation cells (`choose_prior`; recorded as
            ``prior_start`` in config.json); ``none``: SB3's uniform start. The direct action always starts
            uniform.
        reward_scale: ``load``: each episode's rewards are divided by its load scale (an episode at 3x weighs like
            one at 1x instead of 3x as much); ``none``: as they come.
    """

    pipeline: str = "video"
    timesteps: int = 200_000
    seed: int = 0
    traces: str = TWITTER
    eval_traces: str = ",".join(IPA_PATTERNS)
    window_s: int = WINDOW_S
    damping: int = IPA_DAMPING
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION
    n_envs: int = 4
    out: str = "runs"
    resume: str | None = None
    learning_rate: float = 3e-4
    n_steps: int = 512
    batch_size: int = 256
    n_epochs: int = 10
    gamma: float = 0.95
    gae_lambda: float = 0.95
    ent_coef: float = 0.005
    net_arch: list[int] = field(default_factory=lambda: [128, 128])
    checkpoint_every: int = 50_000
    checkpoint_minutes: float = 10.0
    eval_every: int = 50_000
    load_scale_rps: float = 50.0
    projection_penalty: float = 0.05
    reconfig_penalty: float = 0.05
    validation_days: int = 1
    validation_windows: int = 8
    vec_env: str = "dummy"
    name: str | None = None
    torch_threads: int = 1
    action_design: str = "planner"
    weights: str = "sampled"
    min_load_scale: float = 0.25
    max_load_scale: float = 3.0
    curriculum: str = "none"
    prior: str = "auto"
    reward_scale: str = "none"


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
    its ``data`` member, which can run code. `actor_from_model_zip` (``python -m agents.ppo``) converts a model the
    user trained.

    Raises:
        RlscaleError: a folder, not a regular file, a stable-baselines3 model, or not an actor file.
    """
    path = Path(path)
    if path.is_dir():
        raise RlscaleError(f"{path}: is a folder; pass an agent file (a run's {ACTOR_FILE})")
    return load_actor(path)


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
        raise RlscaleError(f"{path}: cannot load the agent: {_one_line(exc)}") from None
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


REWARD_SCALES = ("none", "load")
"""How a training weighs episodes of different load (`TrainConfig.reward_scale`)."""
PRIORS = ("auto", "ipa", "ipa-hold", "none")
"""Where a fresh training's policy starts (`TrainConfig.prior`)."""
PRIOR_LOGIT = 2.5
"""The logit added to the prior's choice in each sub-action of a fresh planner-action policy: 0.67 of the
probability among 7 headrooms, 0.86 among 3 hold choices, 0.86 among 3 tilts."""
PRIOR_ACTIONS = {"ipa": (1.0, "replan"), "ipa-hold": (0.9, "hold-unless-gain")}
"""Each prior's (headroom on every stage, hold choice); the tilt is 1. ``ipa-hold``: its tuned headroom on most
pipelines and its rule with `envs.codecs.HOLD_DELTA`."""


def ipa_action(nvec: Sequence[int]) -> list[int]:
    """IPA's own action in the planner design whose sub-actions have ``nvec`` choices: headroom 1.0 on every stage,
    replan, tilt 1.0 (`envs.codecs.ConditionedCodec.decode` then plans exactly as IPA does)."""
    return prior_action(nvec, "ipa")


def prior_action(nvec: Sequence[int], prior: str) -> list[int]:
    """The planner action a prior (`PRIOR_ACTIONS`) starts from, for sub-actions of ``nvec`` choices."""
    stages = len(nvec) - 2
    if (
        stages < 1
        or any(int(n) != len(HEADROOMS) for n in nvec[:stages])
        or int(nvec[-2]) != len(HOLDS)
        or int(nvec[-1]) != len(TILTS)
    ):
        raise RlscaleError(f"not a planner action space: {list(nvec)}")
    headroom, hold = PRIOR_ACTIONS[prior]
    return [HEADROOMS.index(headroom)] * stages + [HOLDS.index(hold), TILTS.index(1.0)]


def set_prior(policy, nvec: Sequence[int], prior: str = "ipa", logit: float = PRIOR_LOGIT) -> None:
    """Adds ``logit`` to the bias of the prior's choice in each sub-action of ``policy``'s action head (SB3's
    ``action_net``, one block of logits per sub-action), so the untrained policy proposes that action most often."""
    import torch

    bias = policy.action_net.bias
    with torch.no_grad():
        start = 0
        for n, choice in zip(nvec, prior_action(nvec, prior), strict=True):
            bias[start + choice] += logit
            start += int(n)


def fixed_actor(spec: PipelineSpec, action: Sequence[int], load_scale_rps: float) -> Actor:
    """An actor of today's planner shape that proposes ``action`` whatever it observes (a prior's start)."""
    from agents.actor import random_actor

    actor = random_actor(spec, hidden=(), observation="conditioned", action="planner")
    w, b = actor.head
    logits = np.zeros_like(b)
    start = 0
    for n, choice in zip(actor.nvec, action, strict=True):
        logits[start + int(choice)] = 1.0
        start += int(n)
    return dataclasses.replace(actor, head=(np.zeros_like(w), logits), load_scale_rps=float(load_scale_rps))


def validation_reference(
    cfg: TrainConfig,
    spec: PipelineSpec,
    windows: Sequence[Trace],
    memo: dict,
    stop: Callable[[], bool] | None = None,
) -> tuple[list, list[dict]]:
    """``(cells, ipa)``: the run's validation cells and IPA's records on them, computed once per run (``memo``)
    for both the prior's choice and the checkpoints' selection; ``stop`` as in `agents.validation.run_cells`."""
    from agents.validation import ipa_reference, validation_cells

    if not memo:
        cells = validation_cells(spec, windows, cfg.weights == "sampled", (cfg.min_load_scale, cfg.max_load_scale))
        memo["ipa"] = ipa_reference(cells, stop)
        memo["cells"] = cells
    return memo["cells"], memo["ipa"]


def choose_prior(
    cfg: TrainConfig, spec: PipelineSpec, windows: Sequence[Trace], nvec: Sequence[int], memo: dict | None = None
) -> dict:
    """``--prior auto``: the prior whose action, held fixed behind the safety layer, beats IPA by most on the
    validation cells (the same cells checkpoints are selected on; never an evaluation window; ``memo`` as in
    `validation_reference`). Without validation windows: ``ipa``. Returns ``prior`` and ``gaps`` (prior -> its
    validation margin over IPA, in cores)."""
    from agents.validation import agent_records, gap_vs_ipa

    if not windows:
        log.info("prior: ipa (no validation windows to choose by)")
        return {"prior": "ipa", "gaps": {}}
    cells, ipa = validation_reference(cfg, spec, windows, {} if memo is None else memo)
    gaps = {}
    for prior in PRIOR_ACTIONS:
        actor = fixed_actor(spec, prior_action(nvec, prior), cfg.load_scale_rps)
        gaps[prior] = round(gap_vs_ipa(cells, agent_records(actor, cells), ipa), 4)
    best = max(gaps, key=lambda p: gaps[p])
    log.info(
        "prior: %s (validation margin over ipa of each start, in cores: %s)",
        best,
        ", ".join(f"{p} {g:+.3f}" for p, g in gaps.items()),
    )
    return {"prior": best, "gaps": gaps}


def _run_settings(cfg: TrainConfig, spec: PipelineSpec) -> dict[str, Any]:
    """What ``config.json`` (and a checkpoint's ``.json``) records: the config, the spec's name and, for the planner
    action, its levels (`codec_settings` reads them back)."""
    settings = {**asdict(cfg), "spec_name": spec.name}
    if cfg.action_design == "planner":
        settings["codec"] = {"headrooms": list(HEADROOMS), "tilts": list(TILTS), "hold_delta": HOLD_DELTA}
    return settings


CURRICULA = ("ipa-gap", "none")
"""How a training draws episodes' weights and load scales (`TrainConfig.curriculum`)."""
WEIGHTS = ("sampled", "spec")
"""How a training sets each episode's objective weights (`TrainConfig.weights`)."""
VEC_ENVS = ("dummy", "subproc")
"""Where a training's environments step (`TrainConfig.vec_env`)."""


def training_days(cfg: TrainConfig) -> tuple[int, int]:
    """The days of the training split that training windows come from: all but the validation days."""
    return (0, TRAINING_DAYS - cfg.validation_days)


def sources(cfg: TrainConfig) -> list[TrafficSource]:
    """The training traffic of ``cfg`` (`rlscale.workload.training_sources`), its validation parts held out.

    Raises:
        TraceError: an unreadable or too short trace.
    """
    return training_sources(
        cfg.traces,
        window_s=cfg.window_s,
        damping=cfg.damping,
        validation_days=cfg.validation_days,
        validation_fraction=cfg.validation_fraction,
    )


def eval_traces(cfg: TrainConfig) -> list[str]:
    """The traces eval.json reports (``eval_traces``; none for ``none``): bundled names, and CSV files read once here
    to check them (the bundled windows are read only when evaluated, after learning).

    Raises:
        TraceError: an unknown name or a bad CSV.
    """
    if cfg.eval_traces.strip() == "none":
        return []
    names = parse_trace_list(cfg.eval_traces, "--eval-traces")
    for name in names:
        if name not in EVAL_TRACES:
            load_trace(name)
    return names


def make_curriculum(cfg: TrainConfig) -> Curriculum | None:
    """The training's curriculum (None: uniform draws)."""
    if cfg.curriculum == "none" or cfg.weights != "sampled":
        return None
    return Curriculum(RATIO_RANGE, (cfg.min_load_scale, cfg.max_load_scale))


def make_env(cfg: TrainConfig, rank: int, subprocess: bool = False, curriculum: Curriculum | None = None):
    """The factory of environment ``rank`` (seeded ``seed x 1000 + rank``: the same windows whichever process steps
    it). ``subprocess``: it runs in an environment worker, which leaves SIGINT/SIGTERM to the training process (a
    Ctrl-C reaches the whole process group; the trainer saves the model and closes the workers)."""

    def _init() -> gym.Env:
        from gymnasium.wrappers import TransformReward

        if subprocess:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        env = PipelineEnv(
            cfg.pipeline,
            safety=True,
            load_scale_rps=cfg.load_scale_rps,
            projection_penalty=cfg.projection_penalty,
            reconfig_penalty=cfg.reconfig_penalty,
            window_s=cfg.window_s,
            damping=cfg.damping,
            training_days=training_days(cfg),
            training_sources=None if cfg.traces == TWITTER else sources(cfg),
            action_design=cfg.action_design,
            sample_objective=cfg.weights == "sampled",
            load_scales=(cfg.min_load_scale, cfg.max_load_scale),
            curriculum=curriculum,
            reward_per_load=cfg.reward_scale == "load",
        )
        env.reset(seed=cfg.seed * 1000 + rank)
        # SB3 keeps the rewards of in-process environments as float32 and those of subprocesses as float64: rounded
        # here, both train the same agent
        return TransformReward(env, _as_float32)

    return _init


def _as_float32(reward: float) -> float:
    return float(np.float32(reward))


def make_vec_env(cfg: TrainConfig):
    """The training's environments: in this process (``dummy``) or one worker process each (``subproc``, spawned:
    a fresh interpreter, the same on every platform), rewards normalised."""
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecNormalize

    curriculum = make_curriculum(cfg)  # dummy: one shared by the environments; subproc: one per worker
    if cfg.vec_env == "subproc":
        envs = SubprocVecEnv(
            [make_env(cfg, i, subprocess=True, curriculum=curriculum) for i in range(cfg.n_envs)],
            start_method="spawn",
        )
    else:
        envs = DummyVecEnv([make_env(cfg, i, curriculum=curriculum) for i in range(cfg.n_envs)])
    envs.curriculum = curriculum
    return VecNormalize(envs, norm_obs=False, norm_reward=True, gamma=cfg.gamma)


def evaluate(
    model_path: Path | Actor, pipeline: str, traces: Sequence[str | Trace] = IPA_PATTERNS, seed: int = 0
) -> dict[str, dict]:
    """Run the agent (an agent file or an `Actor`, with safety) on each trace (a name or a `Trace`); returns the
    summary records by trace name."""
    from rlscale.sim.runner import run_episode
    from rlscale.workload import load_trace

    spec = load_spec(pipeline)
    out = {}
    for name in traces:
        trace = name if isinstance(name, Trace) else load_trace(name)
        name = trace.name if isinstance(name, Trace) else name
        ppo = Controller(PPOPolicy(spec, model_path), SafetyLayer(spec))  # what the `ppo` policy name means
        record = run_episode(spec, trace, ppo, seed=seed).record
        out[name] = {k: record[k] for k in ("score", "sla_violation_rate", "accuracy", "cost_cores")}
    return out


def _check_config(cfg: TrainConfig) -> None:
    """Every setting a user can get wrong, checked before anything is built or written."""
    if cfg.timesteps < 1:
        raise RlscaleError(f"--timesteps must be >= 1, got {cfg.timesteps}")
    if cfg.n_envs < 1:
        raise RlscaleError(f"--n-envs must be >= 1, got {cfg.n_envs}")
    if not 0 <= cfg.seed <= MAX_SEED:
        raise RlscaleError(f"--seed must be between 0 and {MAX_SEED}, got {cfg.seed}")
    if not (math.isfinite(cfg.checkpoint_minutes) and cfg.checkpoint_minutes >= 0):
        raise RlscaleError(f"--checkpoint-minutes must be a number >= 0 (0: off), got {cfg.checkpoint_minutes}")
    if cfg.checkpoint_every < 1:
        raise RlscaleError(f"checkpoint_every must be >= 1, got {cfg.checkpoint_every}")
    if cfg.vec_env not in VEC_ENVS:
        raise RlscaleError(f"--vec-env must be one of {', '.join(VEC_ENVS)}, got {cfg.vec_env!r}")
    if not 0 <= cfg.validation_days < TRAINING_DAYS:
        raise RlscaleError(f"--validation-days must be within 0..{TRAINING_DAYS - 1}, got {cfg.validation_days}")
    if cfg.validation_windows < 1:
        raise RlscaleError(f"--validation-windows must be >= 1, got {cfg.validation_windows}")
    if cfg.window_s < 1:
        raise RlscaleError(f"--window-s must be >= 1, got {cfg.window_s}")
    if cfg.damping < 1:
        raise RlscaleError(f"--damping must be >= 1, got {cfg.damping}")
    if not (math.isfinite(cfg.validation_fraction) and 0 <= cfg.validation_fraction < 1):
        raise RlscaleError(f"--validation-fraction must be in [0, 1), got {cfg.validation_fraction}")
    if cfg.name is not None:
        check_name(cfg.name, "run name", 255)
    if cfg.action_design not in ACTION_DESIGNS:
        raise RlscaleError(f"--action-design must be one of {', '.join(ACTION_DESIGNS)}, got {cfg.action_design!r}")
    if cfg.curriculum not in CURRICULA:
        raise RlscaleError(f"--curriculum must be one of {', '.join(CURRICULA)}, got {cfg.curriculum!r}")
    if cfg.reward_scale not in REWARD_SCALES:
        raise RlscaleError(f"--reward-scale must be one of {', '.join(REWARD_SCALES)}, got {cfg.reward_scale!r}")
    if cfg.prior not in PRIORS:
        raise RlscaleError(f"--prior must be one of {', '.join(PRIORS)}, got {cfg.prior!r}")
    if cfg.weights not in WEIGHTS:
        raise RlscaleError(f"--weights must be one of {', '.join(WEIGHTS)}, got {cfg.weights!r}")
    lo, hi = cfg.min_load_scale, cfg.max_load_scale
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi <= 100):
        raise RlscaleError(f"--min-load-scale and --max-load-scale must satisfy 0 < min <= max <= 100, got {lo}, {hi}")


LOAD_SCALE_MARGIN = 10.0
"""Observations of load are divided by ``load_scale_rps`` and clipped at this (`envs.codecs.OBS_HIGH`)."""


def warn_load_scale(traffic: Sequence[TrafficSource], load_scale_rps: float) -> None:
    """One warning line for each user trace whose peak is beyond what the observations can tell apart."""
    for src in traffic:
        peak = peak_rps(src)
        if src.name != TWITTER and peak > LOAD_SCALE_MARGIN * load_scale_rps:
            log.warning(
                "%s peaks at %g rps, above %g x --load-scale-rps %g: the agent sees every load above %g rps as the "
                "same; set --load-scale-rps to about %g",
                src.name,
                peak,
                LOAD_SCALE_MARGIN,
                load_scale_rps,
                LOAD_SCALE_MARGIN * load_scale_rps,
                math.ceil(peak),
            )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def check_run_model(path: Path) -> None:
    """``--resume`` is the one place rlscale unpickles a model (stable-baselines3 unpickles its ``data`` member:
    trusted input only), so it takes a model only where ``rlscale train`` saves one: a run folder's ``model.zip``
    or a ``.zip`` in its ``checkpoints/``, the run's ``config.json`` (training settings with ``spec_name`` and
    ``load_scale_rps``) beside them. That keeps a model.zip from elsewhere (a download, an attachment) out; a run
    folder copied from someone else is still theirs to vouch for, which ``--help`` and the README say.

    Raises:
        RlscaleError: not a model file of a run folder (one line saying what ``--resume`` takes and why).
    """
    resolved = path.resolve()
    in_checkpoints = resolved.parent.name == "checkpoints" and resolved.suffix == ".zip"
    run = resolved.parent.parent if in_checkpoints else resolved.parent
    refused = RlscaleError(
        f"--resume {path}: not a model saved by rlscale train in a run folder (RUN/model.zip or "
        "RUN/checkpoints/*.zip beside RUN/config.json); --resume unpickles the model, which can run code, so it "
        "takes only your own runs"
    )
    try:
        config_kind = special_file_kind(run / "config.json")
    except OSError:
        raise refused from None
    if not (in_checkpoints or resolved.name == "model.zip") or config_kind is not None:
        raise refused
    settings = read_json_limited(run / "config.json", MAX_SETTINGS_BYTES, RlscaleError, "the run's settings")
    if not isinstance(settings, dict) or not {"spec_name", "load_scale_rps"} <= settings.keys():
        raise refused


def _load_for_resume(path: Path, spec: PipelineSpec, venv):
    """The model ``--resume`` names, checked against the pipeline's spaces and given the environments.

    TRUSTED INPUT ONLY: a model is unpickled; `check_run_model` first makes sure it lies in a run folder.

    Raises:
        RlscaleError: no such file, not a model of a run folder, or not a loadable agent.
        AgentMismatch: an agent of another pipeline shape.
    """
    from stable_baselines3 import PPO

    try:
        kind = special_file_kind(path)
    except OSError:
        raise RlscaleError(f"--resume {path}: no such model file") from None
    if kind is not None:
        raise RlscaleError(f"--resume {path}: is {kind}, not a model file")
    if not is_model_zip(path):  # an actor file (or garbage): say what is wrong with it for this pipeline first
        try:
            load_actor(path).codec(spec, path)
        except RlscaleError as exc:
            raise type(exc)(f"--resume {exc}") from None
        raise RlscaleError(
            f"--resume {path}: an actor .npz holds no value network or optimiser state and cannot be trained on; "
            "pass the run's model.zip or a checkpoint"
        )
    check_run_model(path)
    try:
        probe = PPO.load(path, device="cpu")
    except Exception as exc:  # noqa: BLE001 - a corrupt or foreign zip: one clear line
        raise RlscaleError(f"--resume {path}: cannot load the agent: {_one_line(exc)}") from None
    expected_obs = venv.observation_space.shape
    if probe.observation_space.shape != expected_obs:
        raise AgentMismatch(
            f"--resume {path}: the agent observes {probe.observation_space.shape}, pipeline {spec.name} needs "
            f"{expected_obs}; resume an agent trained for {spec.name}"
        )
    actions = [int(n) for n in getattr(probe.action_space, "nvec", [])]
    wanted = [int(n) for n in venv.action_space.nvec]
    if actions != wanted:
        raise AgentMismatch(
            f"--resume {path}: the agent chooses among {actions} options per action, pipeline {spec.name} needs "
            f"{wanted}; resume an agent trained for {spec.name}"
        )
    try:
        return PPO.load(path, env=venv, device="cpu")
    except Exception as exc:  # noqa: BLE001
        raise RlscaleError(f"--resume {path}: cannot resume the agent: {_one_line(exc)}") from None


def _create_run_folder(out: Path, name: str) -> Path:
    """``out/name`` created (``name-2``, ``name-3``... when a run of the same second exists), inside ``out``."""
    return new_folder(out, name, "run")


def save_model(model, path: Path, settings: dict[str, Any] | None = None) -> Path:
    """Save ``model`` atomically at ``path``; with ``settings``, them beside it (``.json``, what loading reads)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        model.save(tmp)
    if settings is not None:
        atomic_write_text(path.with_suffix(".json"), json.dumps(settings, indent=2) + "\n")
    return path


def train(cfg: TrainConfig, progress_bar: bool = True, stop: StopRequest | None = None) -> Path:
    """Train PPO per ``cfg``; returns the run folder (holding ``model.zip`` and its numpy actor ``actor.npz``).

    Everything a user can get wrong (the settings, the spec, ``--out``, the ``--resume`` model) is checked
    before the run folder is created, so a refused run leaves nothing behind.

    Args:
        cfg: the run's settings.
        progress_bar: show SB3's progress bar.
        stop: polled every environment step; once set, learning ends, the model is saved and
            `TrainingInterrupted` raised (so is it on a `KeyboardInterrupt`).

    Raises:
        RlscaleError: a bad setting, spec, output folder or resume model (`AgentMismatch`, `OutputError`).
        TrainingInterrupted: stopped early; the model so far is saved in the run folder.
    """

    _check_config(cfg)
    spec = load_spec(cfg.pipeline)
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out}: exists and is not a folder")
    run_name = cfg.name or f"{spec.name}__ppo__{cfg.seed}__{time.strftime('%Y%m%d-%H%M%S')}"
    run_name = check_name(run_name, "run name", 255)
    inside(out, run_name, "run name")
    traffic = sources(cfg)  # a bad trace fails here, before anything is written
    validation = source_validation_windows(traffic, cfg.validation_windows, cfg.window_s)
    evaluation = eval_traces(cfg)
    warn_load_scale(traffic, cfg.load_scale_rps)

    if cfg.torch_threads:
        import torch

        torch.set_num_threads(cfg.torch_threads)
    venv = make_vec_env(cfg)
    try:
        return _learn(cfg, spec, venv, out, run_name, validation, evaluation, progress_bar, stop)
    finally:
        venv.close()  # ends the environment workers (subproc), whatever happened


def _learn(
    cfg: TrainConfig,
    spec: PipelineSpec,
    venv,
    out: Path,
    run_name: str,
    validation: list[Trace],
    evaluation: list[str],
    progress_bar: bool,
    stop: StopRequest | None,
) -> Path:
    """`train` once its environments run (the caller closes them)."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback, CallbackList

    if cfg.resume:
        model = _load_for_resume(Path(cfg.resume), spec, venv)
    else:
        model = PPO(
            "MlpPolicy",
            venv,
            learning_rate=cfg.learning_rate,
            n_steps=cfg.n_steps,
            batch_size=cfg.batch_size,
            n_epochs=cfg.n_epochs,
            gamma=cfg.gamma,
            gae_lambda=cfg.gae_lambda,
            ent_coef=cfg.ent_coef,
            policy_kwargs={"net_arch": list(cfg.net_arch)},
            seed=cfg.seed,
            device="cpu",
            verbose=0,
        )
    settings = _run_settings(cfg, spec)
    reference: dict = {}  # the validation cells and IPA's records on them (`validation_reference`)
    run = _create_run_folder(out, run_name)  # a bad --out fails here, before the prior's minute of validation
    try:
        if not cfg.resume and cfg.prior != "none" and cfg.action_design == "planner":
            nvec = [int(n) for n in venv.action_space.nvec]
            auto = cfg.prior == "auto"
            choice = choose_prior(cfg, spec, validation, nvec, reference) if auto else {"prior": cfg.prior}
            set_prior(model.policy, nvec, choice["prior"])
            settings["prior_start"] = choice
        atomic_write_text(run / "config.json", json.dumps(settings, indent=2) + "\n")
    except BaseException:
        shutil.rmtree(run, ignore_errors=True)  # nothing was learnt: leave no empty run behind
        raise
    model.tensorboard_log = str(run / "tb")
    log.info("run folder %s", run)

    class EvalOnWindows(BaseCallback):
        """Logs the agent's score on the evaluation traces now and then; never used to choose the model."""

        def __init__(self, every: int) -> None:
            super().__init__()
            self.every = every
            self.next = every

        def _on_step(self) -> bool:
            if self.num_timesteps >= self.next:
                self.next += self.every
                save_model(self.model, run / "checkpoints" / f"eval_{self.num_timesteps}.zip", settings)
                actor = export_actor(
                    self.model, spec.name, cfg.load_scale_rps, training=settings, **codec_settings(settings)
                )
                for name, rec in evaluate(actor, cfg.pipeline, traces=evaluation).items():
                    self.logger.record(f"eval/{name}/score", rec["score"])
                    self.logger.record(f"eval/{name}/violation_rate", rec["sla_violation_rate"])
            return True

    class EpisodeInfo(BaseCallback):
        """Logs the environment's own terms (score, violations, projection distance) per step."""

        def _on_step(self) -> bool:
            infos = self.locals.get("infos", [])
            if infos:
                self.logger.record_mean("env/score", float(np.mean([i["score"] for i in infos])))
                self.logger.record_mean("env/violation_rate", float(np.mean([i["violation_rate"] for i in infos])))
                self.logger.record_mean(
                    "env/projection_distance", float(np.mean([i["projection_distance"] for i in infos]))
                )
            return True

    class Checkpoints(BaseCallback):
        """Saves ``checkpoints/ppo_{steps}_steps.zip`` every ``checkpoint_every`` steps and every
        ``checkpoint_minutes``, and ends learning (returns False) once ``stop`` is set."""

        def __init__(self) -> None:
            super().__init__()
            self.every_calls = max(1, cfg.checkpoint_every // cfg.n_envs)
            self.period_s = cfg.checkpoint_minutes * 60.0
            self.last = time.monotonic()

        def _on_step(self) -> bool:
            due = self.n_calls % self.every_calls == 0
            if self.period_s > 0 and time.monotonic() - self.last >= self.period_s:
                due = True
            if due:
                save_model(self.model, run / "checkpoints" / f"ppo_{self.num_timesteps}_steps.zip", settings)
                self.last = time.monotonic()
            return stop is None or not stop.is_set()

    callbacks = CallbackList([Checkpoints(), EvalOnWindows(cfg.eval_every), EpisodeInfo()])
    started = time.perf_counter()
    start_steps = model.num_timesteps if cfg.resume else 0
    interrupted: int | None = None
    try:
        model.learn(
            total_timesteps=cfg.timesteps,
            callback=callbacks,
            progress_bar=progress_bar,
            reset_num_timesteps=not cfg.resume,
        )
    except KeyboardInterrupt as exc:  # a second signal, or Ctrl-C without a stop request: keep the model anyway
        interrupted = signum_of(exc)
    if interrupted is None and stop is not None and stop.is_set():
        interrupted = stop.signum
    save_model(model, run / "model.zip")
    actor = export_actor(model, spec.name, cfg.load_scale_rps, training=settings, **codec_settings(settings)).save(
        run / ACTOR_FILE
    )
    done = int(model.num_timesteps - start_steps)
    if interrupted is not None:
        state = {"timesteps_done": done, "timesteps": cfg.timesteps, "signal": signal_name(interrupted)}
        atomic_write_text(run / "interrupted.json", json.dumps(state, indent=2) + "\n")
        raise TrainingInterrupted(interrupted, run, run / "model.zip", done, cfg.timesteps)
    summary: dict[str, Any] = {"train_wall_s": round(time.perf_counter() - started, 1), "timesteps": cfg.timesteps}
    summary["validation"] = {}
    summary["eval"] = {}
    curriculum = getattr(getattr(venv, "venv", venv), "curriculum", None)
    if curriculum is not None and cfg.vec_env == "dummy":  # subproc workers keep theirs
        summary["curriculum"] = curriculum.summary()

    def stopped() -> bool:
        return stop is not None and stop.is_set()

    try:
        if validation:  # what a sweep of trainings selects by (never the evaluation windows)
            summary.update(_validate(cfg, spec, run, model, settings, validation, stopped, reference))
        # one window at a time, so that a stop request does not wait for all of them
        for window in evaluation:
            if stopped():
                raise TrainingInterrupted(stop.signum or signal.SIGINT, run, run / "model.zip", done, cfg.timesteps)
            summary["eval"].update(evaluate(actor, cfg.pipeline, traces=(window,)))
    except KeyboardInterrupt as exc:
        if isinstance(exc, TrainingInterrupted):
            raise
        raise TrainingInterrupted(signum_of(exc), run, run / "model.zip", done, cfg.timesteps) from None
    atomic_write_text(run / "eval.json", json.dumps(summary, indent=2) + "\n")
    log.info("trained in %.0f s; model %s, actor %s", summary["train_wall_s"], run / "model.zip", actor)
    return run


def _validate(
    cfg: TrainConfig, spec: PipelineSpec, run: Path, model, settings: dict, windows, stopped, memo: dict
) -> dict:
    """Choose the run's actor among its checkpoints and final model by the validation gap against IPA
    (`agents.validation`), write it as ``actor.npz``; the eval.json fields that say how. ``memo``: as in
    `validation_reference` (IPA's records are reused when the prior's choice computed them)."""
    from stable_baselines3 import PPO

    from agents.validation import select_checkpoint

    cells, ipa = validation_reference(cfg, spec, windows, memo, stopped)
    codec = codec_settings(settings)

    def export(path) -> Actor:
        return export_actor(PPO.load(path, device="cpu"), spec.name, cfg.load_scale_rps, training=settings, **codec)

    final = export_actor(model, spec.name, cfg.load_scale_rps, training=settings, **codec)
    chosen = select_checkpoint(
        run, spec, final, int(model.num_timesteps), cells, export, stopped, lambda line: log.info("%s", line), ipa
    )
    record = {**chosen["actor"].training, "validation_score": round(chosen["gap"], 4), "selected": chosen["name"]}
    dataclasses.replace(chosen["actor"], training=record).save(run / ACTOR_FILE)
    return {
        "validation": chosen["records"],
        "validation_ipa": chosen["ipa"],
        "validation_score": chosen["gap"],
        "validation_score_means": "mean (score - ipa's score) / beta over the validation cells: > 0 beats IPA",
        "checkpoint_gaps": chosen["gaps"],
        "selected": chosen["name"],
        "selected_steps": chosen["steps"],
    }


def agreement(model, actor: Actor, spec: PipelineSpec, n: int = 400, seed: int = 0) -> int:
    """On how many of ``n`` observations (half from env resets, half sampled from the observation space) the
    actor picks SB3's deterministic action; ``n`` means identical everywhere."""
    env = PipelineEnv(spec, codec=actor.make_codec(spec))
    env.observation_space.seed(seed)
    same = 0
    for i in range(n):
        obs = env.observation_space.sample() if i % 2 else env.reset(seed=seed + i)[0]
        expected, _ = model.predict(obs, deterministic=True)
        same += bool(np.array_equal(actor.act(obs), np.asarray(expected)))
    return same


def main(argv: list[str] | None = None) -> int:
    """``python -m agents.ppo MODEL.zip OUT.npz``: write a model's actor file, checked against SB3's actions.

    Loading MODEL.zip unpickles it (stable-baselines3), which can run any code: convert only models you trained
    yourself. The actor file it writes is data (numpy arrays, never unpickled): what ``--agent`` takes."""
    import argparse

    from stable_baselines3 import PPO

    parser = argparse.ArgumentParser(prog="python -m agents.ppo", description=main.__doc__)
    parser.add_argument(
        "model",
        type=Path,
        help="a training run's model.zip or checkpoint (settings beside it); it is unpickled: only your own runs",
    )
    parser.add_argument("out", type=Path, help="the actor file to write (.npz)")
    parser.add_argument("--check", type=int, default=400, metavar="N", help="observations to compare (default 400)")
    args = parser.parse_args(argv)
    try:
        try:
            kind = special_file_kind(args.model)
        except OSError:
            raise RlscaleError(f"{args.model}: no such model file") from None
        if kind is not None:
            raise RlscaleError(f"{args.model}: is {kind}, not a model file")
        actor = actor_from_model_zip(args.model)
        spec = load_spec(actor.pipeline)
        same = agreement(PPO.load(args.model, device="cpu"), actor, spec, n=args.check)
        if same != args.check:
            raise RlscaleError(f"the actor differs from SB3 on {args.check - same} of {args.check} observations")
        actor.save(args.out)
    except RlscaleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.out}: actor of {actor.pipeline}, identical actions to SB3 on {same} observations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
