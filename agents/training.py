"""PPO training on training windows only: `train`, its environments, the PPO it builds, its run folder.

Training runs stable-baselines3's PPO on `envs.pipeline_env.PipelineEnv` (safety layer on, so the agent learns what
the projected configurations do), over random windows of the training traffic (``traces``: the Twitter training split,
days 0-12, and/or the user's own CSV traces, their last part held out for validation) and synthetic variations of
them; the evaluation windows are only ever *evaluated on*, for the logs, and never used to pick a model. A run
folder ``{pipeline}__ppo__{seed}__{time}`` holds the resolved config (``config.json``), TensorBoard
logs (``tb/``), checkpoints (every ``checkpoint_every`` steps and every ``checkpoint_minutes``), the final
``model.zip`` (SB3's, for ``--resume``), its actor as numpy (``actor.npz``, `agents.actor`: what ``--agent`` and
the bundled agents use) and ``eval.json``. A stop request (SIGINT/SIGTERM through `rlscale.interrupts`) ends
learning at the next step: ``model.zip`` and ``actor.npz`` are saved, ``interrupted.json`` says where it stopped,
and `TrainingInterrupted` tells the caller; ``--resume`` continues from that model. Models are written atomically
(a temporary file, then ``os.replace``), so a checkpoint is whole or absent.

The settings are `agents.train_config.TrainConfig`; the policy's start `agents.priors`; the callbacks
`agents.callbacks`; the checkpoints' selection `agents.validation`; the actor's export `agents.conversion`. torch and
stable-baselines3 are imported inside the functions that need them, so importing this module needs neither.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import signal
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from agents.actor import Actor, AgentMismatch, load_actor
from agents.conversion import codec_settings, export_actor, one_line, save_model
from agents.inference import ACTOR_FILE, PPOPolicy, is_model_zip
from agents.priors import choose_prior, set_prior, validation_reference
from agents.train_config import TrainConfig, check_config
from agents.validation import select_checkpoint
from envs.codecs import HEADROOMS, HOLD_DELTA, RATIO_RANGE, TILTS
from envs.curriculum import Curriculum
from envs.pipeline_env import PipelineEnv
from ilp_baseline.safety import SafetyLayer
from rlscale.control import Controller
from rlscale.errors import RlscaleError
from rlscale.inputs import MAX_SETTINGS_BYTES, read_json_limited, special_file_kind
from rlscale.interrupts import Interrupted, StopRequest, signal_name, signum_of
from rlscale.paths import OutputError, atomic_write_text, check_name, inside, new_folder
from rlscale.spec import PipelineSpec, load_spec
from rlscale.workload import (
    EVAL_TRACES,
    IPA_PATTERNS,
    TRAINING_DAYS,
    TWITTER,
    Trace,
    TrafficSource,
    load_trace,
    parse_trace_list,
    peak_rps,
    source_validation_windows,
    training_sources,
)

log = logging.getLogger(__name__)

__all__ = ["TrainingInterrupted", "build_ppo", "evaluate", "make_env", "make_vec_env", "train"]


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


LOAD_SCALE_MARGIN = 10.0
"""Observations of load are divided by ``load_scale_rps`` and clipped at this (`envs.pipeline_env.OBS_HIGH`)."""


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


def build_ppo(venv, cfg: TrainConfig, prior: str = "none"):
    """A fresh PPO with ``cfg``'s settings on ``venv`` (SB3's default MLP policy, on the cpu), its policy started at
    ``prior``: what `train` trains and the training throughput benchmark (`rlscale.evaluate.train_throughput`)
    measures.

    Args:
        venv: the environments (`make_vec_env`).
        cfg: the PPO settings (learning rate, rollout, minibatches, epochs, discount, GAE, entropy, network, seed).
        prior: ``ipa`` or ``ipa-hold``: the untrained policy proposes that planner action most often
            (`agents.priors.set_prior`; ``--prior auto`` is resolved before, `agents.priors.choose_prior`);
            ``none``: SB3's uniform start (the benchmark's).
    """
    from stable_baselines3 import PPO

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
    if prior != "none":
        set_prior(model.policy, [int(n) for n in venv.action_space.nvec], prior)
    return model


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
        raise RlscaleError(f"--resume {path}: cannot load the agent: {one_line(exc)}") from None
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
        raise RlscaleError(f"--resume {path}: cannot resume the agent: {one_line(exc)}") from None


def _create_run_folder(out: Path, name: str) -> Path:
    """``out/name`` created (``name-2``, ``name-3``... when a run of the same second exists), inside ``out``."""
    return new_folder(out, name, "run")


def _run_settings(cfg: TrainConfig, spec: PipelineSpec) -> dict[str, Any]:
    """What ``config.json`` (and a checkpoint's ``.json``) records: the config, the spec's name and, for the planner
    action, its levels (`codec_settings` reads them back)."""
    settings = {**asdict(cfg), "spec_name": spec.name}
    if cfg.action_design == "planner":
        settings["codec"] = {"headrooms": list(HEADROOMS), "tilts": list(TILTS), "hold_delta": HOLD_DELTA}
    return settings


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

    check_config(cfg)
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
    from stable_baselines3.common.callbacks import CallbackList

    from agents.callbacks import Checkpoints, EpisodeInfo, EvalOnWindows

    model = _load_for_resume(Path(cfg.resume), spec, venv) if cfg.resume else None
    settings = _run_settings(cfg, spec)
    reference: dict = {}  # the validation cells and IPA's records on them (`validation_reference`)
    run = _create_run_folder(out, run_name)  # a bad --out fails here, before the prior's minute of validation
    try:
        if model is None:
            prior = "none"
            if cfg.prior != "none" and cfg.action_design == "planner":
                nvec = [int(n) for n in venv.action_space.nvec]
                auto = cfg.prior == "auto"
                choice = choose_prior(cfg, spec, validation, nvec, reference) if auto else {"prior": cfg.prior}
                prior = choice["prior"]
                settings["prior_start"] = choice
            model = build_ppo(venv, cfg, prior)  # seeded: the same policy whenever it is built
        atomic_write_text(run / "config.json", json.dumps(settings, indent=2) + "\n")
    except BaseException:
        shutil.rmtree(run, ignore_errors=True)  # nothing was learnt: leave no empty run behind
        raise
    model.tensorboard_log = str(run / "tb")
    log.info("run folder %s", run)

    checkpoints = Checkpoints(run, settings, cfg.checkpoint_every, cfg.n_envs, cfg.checkpoint_minutes, stop)
    scores = EvalOnWindows(
        cfg.eval_every, run, settings, spec.name, cfg.pipeline, cfg.load_scale_rps, evaluation, evaluate
    )
    callbacks = CallbackList([checkpoints, scores, EpisodeInfo()])
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

    cells, ipa = validation_reference(cfg, spec, windows, memo, stopped)
    codec = codec_settings(settings)

    def export(path) -> Actor:
        return export_actor(PPO.load(path, device="cpu"), spec.name, cfg.load_scale_rps, training=settings, **codec)

    final = export_actor(model, spec.name, cfg.load_scale_rps, training=settings, **codec)
    chosen = select_checkpoint(
        run, spec, final, int(model.num_timesteps), cells, export, stopped, lambda line: log.info("%s", line), ipa
    )
    record = {**chosen["actor"].training, "validation_score": round(chosen["gap"], 4), "selected": chosen["name"]}
    replace(chosen["actor"], training=record).save(run / ACTOR_FILE)
    return {
        "validation": chosen["records"],
        "validation_ipa": chosen["ipa"],
        "validation_score": chosen["gap"],
        "validation_score_means": "mean (score - ipa's score) / beta over the validation cells: > 0 beats IPA",
        "checkpoint_gaps": chosen["gaps"],
        "selected": chosen["name"],
        "selected_steps": chosen["steps"],
    }
