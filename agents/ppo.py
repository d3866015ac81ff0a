"""The PPO agent: training on training windows only, and the ``ppo`` / ``ppo-raw`` policies.

Training runs stable-baselines3's PPO on `envs.PipelineEnv` (safety layer on, so the agent learns what the
projected configurations do), over random windows of the Twitter training split (days 0-13) and synthetic
variations of them; the evaluation windows are only ever *evaluated on*, for the logs, and never used to pick a
model. A run folder ``{pipeline}__ppo__{seed}__{time}`` holds the resolved config (``config.json``), TensorBoard
logs (``tb/``), checkpoints (every ``checkpoint_every`` steps and every ``checkpoint_minutes``), the final
``model.zip`` and ``eval.json``. A stop request (SIGINT/SIGTERM through `rlscale.interrupts`) ends learning at
the next step: ``model.zip`` is saved, ``interrupted.json`` says where it stopped, and `TrainingInterrupted`
tells the caller; ``--resume`` continues from that model. Models are written atomically (a temporary file, then
``os.replace``), so a checkpoint is whole or absent.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agents.lstm import LSTMPredictor
from agents.safety import SafetyLayer
from envs.pipeline_env import Codec, PipelineEnv
from rlscale.errors import RlscaleError
from rlscale.inputs import MAX_SEED
from rlscale.interrupts import Interrupted, StopRequest, signal_name, signum_of
from rlscale.paths import OutputError, atomic_path, atomic_write_text, check_name, inside, output_folder
from rlscale.spec import PipelineSpec, load_spec
from rlscale.types import PipelineConfig, PipelineState
from rlscale.workload import IPA_PATTERNS

log = logging.getLogger(__name__)

BUNDLED_DIR = Path(__file__).resolve().parent / "data"


class AgentMismatch(RlscaleError):
    """The agent was trained for another pipeline shape (observations or action choices differ)."""


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
    """Where the bundled agent of ``pipeline`` lives (``agents/data/ppo_{pipeline}.zip``).

    Raises:
        RlscaleError: ``pipeline`` is not a safe name, or the path would leave ``agents/data``.
    """
    check_name(pipeline, "pipeline name")
    return inside(BUNDLED_DIR, f"ppo_{pipeline}.zip", "bundled agent")


@dataclass
class TrainConfig:
    """Everything a training run depends on (saved as ``config.json`` beside the model).

    Attributes:
        pipeline: bundled name or spec path.
        timesteps: environment steps (adaptation intervals) to train for.
        seed: seeds PPO, the environments and their training windows.
        n_envs: parallel environments (in one process).
        out: parent folder of the run folder.
        resume: a model.zip to continue from (None: start fresh).
        learning_rate, n_steps, batch_size, n_epochs, gamma, gae_lambda, ent_coef, net_arch: PPO's settings.
        checkpoint_every: save a checkpoint every this many steps.
        checkpoint_minutes: also save one every this many minutes of training (0: only by steps).
        eval_every: evaluate on the IPA windows every this many steps (logged only).
        load_scale_rps: the environment's load normalisation.
        projection_penalty, reconfig_penalty: reward shaping.
    """

    pipeline: str = "video"
    timesteps: int = 200_000
    seed: int = 0
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


class PPOPolicy:
    """A trained agent as a `Policy`; with ``safety`` every proposal goes through the safety layer.

    Args:
        spec: the pipeline the agent was trained for.
        model_path: the agent's ``model.zip`` (default: the bundled agent of the pipeline).
        safety: project proposals onto the feasible set (``ppo``) or not (``ppo-raw``).
        safety_load: the safety layer's load estimate (``observed``, ``backlog`` or ``predicted``).
    """

    def __init__(
        self, spec: PipelineSpec, model_path: Path | None = None, *, safety: bool = True, safety_load: str = "observed"
    ) -> None:
        from stable_baselines3 import PPO

        path = Path(model_path) if model_path is not None else bundled_agent(spec.name)
        if not path.exists():
            raise RlscaleError(
                f"no agent at {path}; train one with: rlscale train --pipeline {spec.name}, then pass --agent PATH"
            )
        try:
            self.model = PPO.load(path, device="cpu")
        except Exception as exc:  # noqa: BLE001 - a corrupt or foreign zip: one clear line
            raise RlscaleError(f"{path}: cannot load the agent: {exc}") from None
        settings = _read_settings(path)
        self.codec = Codec(spec, load_scale_rps=float(settings.get("load_scale_rps", 50.0)))
        expected = self.codec.observation_space().shape
        if self.model.observation_space.shape != expected:
            raise AgentMismatch(
                f"{path}: agent observes {self.model.observation_space.shape}, pipeline {spec.name} needs {expected}"
            )
        actions = [int(n) for n in getattr(self.model.action_space, "nvec", [])]
        wanted = [int(n) for n in self.codec.action_space().nvec]
        if actions != wanted:  # e.g. a spec edited from a bundled one: other variant, batch or core choices
            raise AgentMismatch(
                f"{path}: agent chooses among {actions} options per action, pipeline {spec.name} needs {wanted} "
                "(variants, batch sizes, cores, replica levels per stage); train one for it with rlscale train"
            )
        self._mlp = _export_actor(self.model)
        self.predictor = LSTMPredictor()
        self.safety = (
            SafetyLayer(spec, load=safety_load, predictor=self.predictor if safety_load == "predicted" else None)
            if safety
            else None
        )
        self.name = "ppo" if safety else "ppo-raw"
        self.last_report: dict = {}

    def act(self, obs: np.ndarray) -> np.ndarray:
        """The deterministic action (argmax of every sub-action's logits) for one observation."""
        if self._mlp is None:
            action, _ = self.model.predict(obs, deterministic=True)
            return np.asarray(action)
        layers, (w_out, b_out), splits = self._mlp
        h = np.asarray(obs, dtype=np.float32)
        for w, b in layers:
            h = np.tanh(h @ w + b)
        logits = h @ w_out + b_out
        return np.array([int(np.argmax(part)) for part in np.split(logits, splits)])

    def propose(self, state: PipelineState) -> PipelineConfig:
        obs = self.codec.observe(state, self.predictor.predict(state))
        return self.codec.decode(self.act(obs), state)

    def decide(self, state: PipelineState) -> PipelineConfig:
        proposed = self.propose(state)
        if self.safety is None:
            return proposed
        config, self.last_report = self.safety.project(proposed, state)
        return config


def _export_actor(model) -> tuple | None:
    """The actor network's weights as numpy, for a forward pass without torch's per-call overhead.

    SB3's ``predict`` builds one torch distribution per sub-action (40 at 10 stages), which costs about a
    millisecond; the argmax of the logits is the same action. Returns None (use ``predict``) for any
    architecture other than SB3's default MLP with tanh activations.
    """
    import torch
    from stable_baselines3.common.torch_layers import FlattenExtractor

    policy = model.policy
    if not isinstance(policy.features_extractor, FlattenExtractor):
        return None
    modules = list(policy.mlp_extractor.policy_net)
    if any(not isinstance(m, torch.nn.Linear | torch.nn.Tanh) for m in modules):
        return None
    layers = [
        (m.weight.detach().cpu().numpy().T.copy(), m.bias.detach().cpu().numpy().copy())
        for m in modules
        if isinstance(m, torch.nn.Linear)
    ]
    if len(layers) != sum(isinstance(m, torch.nn.Tanh) for m in modules):
        return None
    head = policy.action_net
    nvec = np.asarray(model.action_space.nvec)
    splits = np.cumsum(nvec)[:-1]
    return layers, (head.weight.detach().cpu().numpy().T.copy(), head.bias.detach().cpu().numpy().copy()), splits


def _read_settings(model_path: Path) -> dict[str, Any]:
    """The training config saved beside a model (``config.json``), or {} when there is none."""
    for candidate in (model_path.with_suffix(".json"), model_path.parent / "config.json"):
        if candidate.exists():
            try:
                return json.loads(candidate.read_text())
            except json.JSONDecodeError:
                return {}
    return {}


def make_env(cfg: TrainConfig, rank: int):
    def _init() -> PipelineEnv:
        env = PipelineEnv(
            cfg.pipeline,
            safety=True,
            load_scale_rps=cfg.load_scale_rps,
            projection_penalty=cfg.projection_penalty,
            reconfig_penalty=cfg.reconfig_penalty,
        )
        env.reset(seed=cfg.seed * 1000 + rank)
        return env

    return _init


def evaluate(model_path: Path, pipeline: str, traces=IPA_PATTERNS, seed: int = 0) -> dict[str, dict]:
    """Run the agent (with safety) on each trace; returns the summary records (for logs and reports)."""
    from rlscale.sim.runner import run_episode
    from rlscale.workload import load_trace

    spec = load_spec(pipeline)
    out = {}
    for name in traces:
        trace = load_trace(name)
        record = run_episode(spec, trace, PPOPolicy(spec, model_path), seed=seed).record
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


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _load_for_resume(path: Path, spec: PipelineSpec, venv):
    """The model ``--resume`` names, checked against the pipeline's spaces and given the environments.

    Raises:
        RlscaleError: no such file, or not a loadable agent.
        AgentMismatch: an agent of another pipeline shape.
    """
    from stable_baselines3 import PPO

    if not path.is_file():
        raise RlscaleError(f"--resume {path}: no such model file")
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
    output_folder(out)
    for n in range(1, 100):
        run = inside(out, name if n == 1 else f"{name}-{n}", "run name")
        try:
            run.mkdir()
            return run
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputError(f"--out {out}: cannot create the run folder {run.name}: {exc.strerror}") from None
    raise OutputError(f"--out {out}: too many runs named {name}")


def save_model(model, path: Path, cfg: TrainConfig | None = None) -> Path:
    """Save ``model`` atomically at ``path``; with ``cfg``, its config beside it (``.json``, what loading reads)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        model.save(tmp)
    if cfg is not None:
        atomic_write_text(path.with_suffix(".json"), json.dumps(asdict(cfg), indent=2) + "\n")
    return path


def train(cfg: TrainConfig, progress_bar: bool = True, stop: StopRequest | None = None) -> Path:
    """Train PPO per ``cfg``; returns the run folder (holding ``model.zip``).

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
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback, CallbackList
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    _check_config(cfg)
    spec = load_spec(cfg.pipeline)
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out}: exists and is not a folder")
    run_name = check_name(f"{spec.name}__ppo__{cfg.seed}__{time.strftime('%Y%m%d-%H%M%S')}", "run name", 255)
    inside(out, run_name, "run name")

    venv = VecNormalize(
        DummyVecEnv([make_env(cfg, i) for i in range(cfg.n_envs)]), norm_obs=False, norm_reward=True, gamma=cfg.gamma
    )
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
    run = _create_run_folder(out, run_name)
    try:
        atomic_write_text(run / "config.json", json.dumps(asdict(cfg), indent=2) + "\n")
    except BaseException:
        shutil.rmtree(run, ignore_errors=True)  # nothing was learnt: leave no empty run behind
        raise
    model.tensorboard_log = str(run / "tb")
    log.info("run folder %s", run)

    class EvalOnWindows(BaseCallback):
        """Logs the agent's score on IPA's windows now and then; never used to choose the model."""

        def __init__(self, every: int) -> None:
            super().__init__()
            self.every = every
            self.next = every

        def _on_step(self) -> bool:
            if self.num_timesteps >= self.next:
                self.next += self.every
                path = save_model(self.model, run / "checkpoints" / f"eval_{self.num_timesteps}.zip", cfg)
                for name, rec in evaluate(path, cfg.pipeline).items():
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
                save_model(self.model, run / "checkpoints" / f"ppo_{self.num_timesteps}_steps.zip", cfg)
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
    done = int(model.num_timesteps - start_steps)
    if interrupted is not None:
        state = {"timesteps_done": done, "timesteps": cfg.timesteps, "signal": signal_name(interrupted)}
        atomic_write_text(run / "interrupted.json", json.dumps(state, indent=2) + "\n")
        raise TrainingInterrupted(interrupted, run, run / "model.zip", done, cfg.timesteps)
    summary: dict[str, Any] = {"train_wall_s": round(time.perf_counter() - started, 1), "timesteps": cfg.timesteps}
    summary["eval"] = {}
    try:
        for name in IPA_PATTERNS:  # one window at a time, so that a stop request does not wait for all four
            if stop is not None and stop.is_set():
                raise TrainingInterrupted(stop.signum or signal.SIGINT, run, run / "model.zip", done, cfg.timesteps)
            summary["eval"].update(evaluate(run / "model.zip", cfg.pipeline, traces=(name,)))
    except KeyboardInterrupt as exc:
        if isinstance(exc, TrainingInterrupted):
            raise
        raise TrainingInterrupted(signum_of(exc), run, run / "model.zip", done, cfg.timesteps) from None
    atomic_write_text(run / "eval.json", json.dumps(summary, indent=2) + "\n")
    log.info("trained in %.0f s; model %s", summary["train_wall_s"], run / "model.zip")
    return run
