"""The settings of a training run: `TrainConfig`, the one source of ``rlscale train``'s flags, their choices and
ranges, and `check_config`.

Each field's metadata (`Flag`, through `flags`) holds what the command line needs beyond the field's type, default
and docstring line: the range of a number (or of each item of a list), the values a text may take, a metavar, and
the flag's own help where it has words other than the docstring's. `rlscale.cli.train` generates the flags from
them; `check_config` checks the choices from the same metadata, and the settings that make no sense whatever the
command line allows (a config built in code, a sweep's settings), with their own messages.

Imports neither torch nor gymnasium: the CLI builds ``train``'s flags from it for every command.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from envs.codecs import ACTION_DESIGNS
from rlscale.errors import RlscaleError
from rlscale.inputs import MAX_SEED, MAX_TRACE_SECONDS
from rlscale.paths import check_name
from rlscale.workload import (
    DEFAULT_VALIDATION_FRACTION,
    IPA_DAMPING,
    IPA_PATTERNS,
    TRAINING_DAYS,
    TWITTER,
    WINDOW_S,
)

MAX_STEPS = 10**10
"""The most steps a training (and its checkpoint and evaluation periods) may take."""

VEC_ENVS = ("dummy", "subproc")
"""Where a training's environments step (`TrainConfig.vec_env`)."""
WEIGHTS = ("sampled", "spec")
"""How a training sets each episode's objective weights (`TrainConfig.weights`)."""
CURRICULA = ("ipa-gap", "none")
"""How a training draws episodes' weights and load scales (`TrainConfig.curriculum`)."""
PRIORS = ("auto", "ipa", "ipa-hold", "none")
"""Where a fresh training's policy starts (`TrainConfig.prior`)."""
REWARD_SCALES = ("none", "load")
"""How a training weighs episodes of different load (`TrainConfig.reward_scale`)."""


@dataclass(frozen=True)
class Flag:
    """How a `TrainConfig` field is set on the command line (``--field-name``), besides its type and default.

    Attributes:
        low: a number's smallest value (a list's: each item's); every number has a range.
        high: its largest value.
        exclusive_low: ``low`` itself is refused.
        max_items: a list's most items.
        choices: the values a text may take (None: any).
        metavar: the flag's metavar (default: the choices joined by ``|``, else N for an integer, X for a
            number, S for a text).
        help: the flag's help (default: the field's line in `TrainConfig`'s docstring and its default).
    """

    low: float | None = None
    high: float | None = None
    exclusive_low: bool = False
    max_items: int | None = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    help: str | None = None


def _setting(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, **flag: Any) -> Any:
    """A `TrainConfig` field with its `Flag` as metadata."""
    return field(default=default, default_factory=factory, metadata={"flag": Flag(**flag)})


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
            with most of its probability (its action head's biases, `agents.priors.PRIOR_LOGIT`), so PPO starts
            from IPA's planner and moves away only where its returns say so, and where it learnt nothing (a load or
            weights it rarely met) it stays close to IPA; ``ipa-hold``: the same towards ``ipa-hold``'s action
            (headroom 0.9, hold unless re-planning gains more than `envs.codecs.HOLD_DELTA`); ``auto``: whichever
            of those two actions, held fixed, beats IPA by more on the validation cells
            (`agents.priors.choose_prior`; recorded as ``prior_start`` in config.json); ``none``: SB3's uniform
            start. The direct action always starts uniform.
        reward_scale: ``load``: each episode's rewards are divided by its load scale (an episode at 3x weighs like
            one at 1x instead of 3x as much); ``none``: as they come.
    """

    pipeline: str = _setting("video")
    timesteps: int = _setting(
        200_000, low=1, high=MAX_STEPS, metavar="TIMESTEPS", help="adaptation intervals to train for (default 200000)"
    )
    seed: int = _setting(
        0, low=0, high=MAX_SEED, metavar="SEED", help="seed of PPO and of the training windows (default 0)"
    )
    traces: str = _setting(TWITTER, metavar="twitter|A.csv,...")
    eval_traces: str = _setting(",".join(IPA_PATTERNS), metavar="NAME|A.csv,...|none")
    window_s: int = _setting(WINDOW_S, low=10, high=MAX_TRACE_SECONDS, metavar="S")
    damping: int = _setting(IPA_DAMPING, low=1, high=1000)
    validation_fraction: float = _setting(DEFAULT_VALIDATION_FRACTION, low=0.0, high=0.9, metavar="F")
    n_envs: int = _setting(4, low=1, high=256, metavar="N_ENVS", help="parallel environments (default 4)")
    out: str = _setting("runs", metavar="OUT", help="parent folder of the run folder (default runs/)")
    resume: str | None = _setting(
        None,
        metavar="MODEL.zip",
        help="continue training this model: a run's model.zip or a checkpoint in its checkpoints/, beside the run's "
        "config.json. The model is unpickled, which can run code: only resume your own runs",
    )
    learning_rate: float = _setting(3e-4, low=0.0, high=1.0, exclusive_low=True)
    n_steps: int = _setting(512, low=1, high=1_000_000)
    # SB3 normalises advantages per minibatch: one sample is refused
    batch_size: int = _setting(256, low=2, high=1_000_000)
    n_epochs: int = _setting(10, low=1, high=1000)
    gamma: float = _setting(0.95, low=0.0, high=1.0)
    gae_lambda: float = _setting(0.95, low=0.0, high=1.0)
    ent_coef: float = _setting(0.005, low=0.0, high=1.0)
    net_arch: list[int] = _setting(factory=lambda: [128, 128], low=1, high=4096, max_items=8, metavar="N,N,...")
    checkpoint_every: int = _setting(50_000, low=1, high=MAX_STEPS)
    checkpoint_minutes: float = _setting(
        10.0,
        low=0.0,
        high=7 * 24 * 60.0,
        metavar="M",
        help="also save a checkpoint every M minutes, besides every --checkpoint-every steps (default 10; 0: off)",
    )
    eval_every: int = _setting(50_000, low=1, high=MAX_STEPS)
    load_scale_rps: float = _setting(50.0, low=0.0, high=1e6, exclusive_low=True)
    projection_penalty: float = _setting(0.05, low=0.0, high=100.0)
    reconfig_penalty: float = _setting(0.05, low=0.0, high=100.0)
    validation_days: int = _setting(1, low=0, high=TRAINING_DAYS - 1)
    validation_windows: int = _setting(8, low=1, high=1000)
    vec_env: str = _setting("dummy", choices=VEC_ENVS)
    name: str | None = _setting(None, metavar="NAME")
    torch_threads: int = _setting(1, low=0, high=1024)
    action_design: str = _setting("planner", choices=ACTION_DESIGNS)
    weights: str = _setting("sampled", choices=WEIGHTS)
    min_load_scale: float = _setting(0.25, low=0.0, high=100.0, exclusive_low=True)
    max_load_scale: float = _setting(3.0, low=0.0, high=100.0, exclusive_low=True)
    curriculum: str = _setting("none", choices=CURRICULA)
    prior: str = _setting("auto", choices=PRIORS)
    reward_scale: str = _setting("none", choices=REWARD_SCALES)


def flags(cls: type = TrainConfig) -> dict[str, Flag]:
    """Each field of ``cls`` (a dataclass of `_setting` fields) and its `Flag`, in field order."""
    return {f.name: f.metadata.get("flag", Flag()) for f in dataclasses.fields(cls)}


def flag_name(name: str) -> str:
    """The command-line flag of a field: ``--`` and its name with dashes."""
    return "--" + name.replace("_", "-")


def check_config(cfg: TrainConfig) -> None:
    """Every setting a user can get wrong, checked before anything is built or written.

    The choices are the fields' (`Flag.choices`); the numbers are checked against what a training needs (the
    command line's ranges are narrower), each with its own message.

    Raises:
        RlscaleError: the first bad setting, naming its flag.
    """
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
    for name, flag in flags(TrainConfig).items():
        value = getattr(cfg, name)
        if flag.choices is not None and value not in flag.choices:
            raise RlscaleError(f"{flag_name(name)} must be one of {', '.join(flag.choices)}, got {value!r}")
    lo, hi = cfg.min_load_scale, cfg.max_load_scale
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi <= 100):
        raise RlscaleError(f"--min-load-scale and --max-load-scale must satisfy 0 < min <= max <= 100, got {lo}, {hi}")
