"""Training throughput: environment steps per second of PPO training, and where the time goes.

`train_throughput` trains stable-baselines3's PPO with rlscale's default settings (`agents.train_config.TrainConfig`: 4
environments in one process, 512 steps each per rollout, minibatches of 256, 10 epochs, a 128x128 network, cpu) for
``timesteps`` steps on ``rlscale/Pipeline-v0`` (the video pipeline, safety layer on, rewards normalised, as
``rlscale train`` builds it) and with the same PPO settings on Gymnasium's ``CartPole-v1``, whose environment costs
almost nothing: its steps/s is the ceiling the learner allows. For each it reports steps/s and the split of the time
between collecting rollouts (the environments plus the policy's forward passes) and the update (the learner).

`env_throughput` steps the environment alone with random actions and times its parts per step: the simulator's
interval, the observation, the LSTM prediction, the safety projection and the action's decoding (what is left of a
step is the control step's bookkeeping and applying the configuration).

``python -m rlscale.evaluate.train_throughput [--timesteps N] [--env-steps N] [--json]`` prints both. Needs the
``train`` extra (torch, stable-baselines3). PPO is built by `agents.training.build_ppo`, as ``rlscale train``
builds it, but started uniform (``prior="none"``: SB3's own start, whatever ``--prior`` a training would resolve to),
so the figure measures the learner and the environments, not a prior. The environment is timed through
`PipelineEnv`'s public attributes only (``codec``, ``predictor``, ``safety``, ``cluster``).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

PIPELINE = "video"
PIPELINE_ENV_ID = "rlscale/Pipeline-v0"
CARTPOLE_ENV_ID = "CartPole-v1"


def _timed(spent: dict[str, float], name: str, fn: Callable) -> Callable:
    """``fn``, adding the seconds each call takes to ``spent[name]``."""

    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[name] += time.perf_counter() - t

    return wrapper


def require_train_extra() -> None:
    """Check that torch and stable-baselines3 (the ``train`` extra) can be imported, without importing them.

    Raises:
        ImportError: one of them is missing.
    """
    import importlib.util

    for name in ("torch", "stable_baselines3"):
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise ImportError(f"{name} is not installed")


def _train_config():
    """rlscale's default training settings (`agents.train_config.TrainConfig`)."""
    from agents.train_config import TrainConfig

    return TrainConfig(pipeline=PIPELINE)


def _pipeline_venv(cfg):
    """The training environments of ``rlscale train`` for ``cfg`` (`agents.training.make_vec_env`)."""
    from agents.training import make_vec_env

    return make_vec_env(cfg)


def _cartpole_venv(cfg):
    import gymnasium as gym
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    def make(rank: int):
        def _init():
            env = gym.make(CARTPOLE_ENV_ID)
            env.reset(seed=cfg.seed * 1000 + rank)
            return env

        return _init

    return VecNormalize(
        DummyVecEnv([make(i) for i in range(cfg.n_envs)]), norm_obs=False, norm_reward=True, gamma=cfg.gamma
    )


def ppo_steps_per_s(venv, cfg, timesteps: int) -> dict[str, float]:
    """Train a fresh PPO (``cfg``'s settings, `agents.training.build_ppo`, uniform start) on ``venv`` for
    ``timesteps`` steps.

    Returns:
        ``steps_per_s`` (steps learnt / wall time of ``learn``), ``wall_s``, ``cpu_s`` (this process's CPU time, all
        its threads: other work on a shared machine inflates the wall time; torch threads spinning while they wait
        for a core inflate this one), ``timesteps`` (steps actually taken: whole rollouts), ``rollout_s``
        (collecting: the environments and the policy's forward passes) and ``update_s`` (the learner's gradient
        steps).
    """
    from agents.training import build_ppo

    model = build_ppo(venv, cfg, prior="none")  # the uniform start it has always measured (CartPole has no planner)
    spent = {"rollout_s": 0.0, "update_s": 0.0}
    timed = functools.partial(_timed, spent)

    model.collect_rollouts = timed("rollout_s", model.collect_rollouts)
    model.train = timed("update_s", model.train)
    t, cpu = time.perf_counter(), time.process_time()
    model.learn(total_timesteps=timesteps, progress_bar=False)
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    venv.close()
    steps = int(model.num_timesteps)
    return {
        "steps_per_s": round(steps / wall, 1),
        # 4 decimals: a CartPole rollout takes under half a second, and steps_per_s must follow from these
        "wall_s": round(wall, 4),
        "cpu_s": round(cpu, 4),
        "timesteps": steps,
        "rollout_s": round(spent["rollout_s"], 4),
        "update_s": round(spent["update_s"], 4),
    }


def train_throughput(timesteps: int = 4096, torch_threads: int = 0) -> dict[str, Any]:
    """PPO training steps/s on ``rlscale/Pipeline-v0`` and on ``CartPole-v1`` in one run, and their ratio.

    Args:
        timesteps: steps of each training (rounded up to whole rollouts of n_envs x n_steps = 2,048 steps).
        torch_threads: threads torch computes on for these trainings (0: leave torch's setting).

    Raises:
        ImportError: torch or stable-baselines3 is not installed (the ``train`` extra).
    """
    import torch

    import envs.pipeline_env  # noqa: F401 - registers rlscale/Pipeline-v0

    previous = torch.get_num_threads()
    if torch_threads:
        torch.set_num_threads(torch_threads)
    try:
        cfg = _train_config()
        pipeline = ppo_steps_per_s(_pipeline_venv(cfg), cfg, timesteps)
        cartpole = ppo_steps_per_s(_cartpole_venv(cfg), cfg, timesteps)
    finally:
        torch.set_num_threads(previous)
    return {
        "pipeline": {"env": PIPELINE_ENV_ID, "spec": PIPELINE, **pipeline},
        "cartpole": {"env": CARTPOLE_ENV_ID, **cartpole},
        "ratio": round(pipeline["steps_per_s"] / cartpole["steps_per_s"], 3),
        "torch_threads": torch.get_num_threads() if not torch_threads else torch_threads,
        "settings": {
            "n_envs": cfg.n_envs,
            "n_steps": cfg.n_steps,
            "batch_size": cfg.batch_size,
            "n_epochs": cfg.n_epochs,
            "net_arch": list(cfg.net_arch),
        },
    }


PARTS = ("simulator", "observation", "prediction", "projection", "decode")


def env_throughput(steps: int = 600, seed: int = 0) -> dict[str, Any]:
    """The video pipeline's environment alone (safety on, random actions): steps/s and each part's ms per step.

    Parts: ``simulator`` (the cluster's interval, ``cluster.step``), ``observation`` (``codec.observe``),
    ``prediction`` (the LSTM, ``predictor.predict``), ``projection`` (``safety.project``), ``decode``
    (``codec.decode``); ``other`` is the rest of a step (the control step, applying the configuration, the info).
    Resets (a new training window, the warm start) count in ``reset_ms`` and not in the step figures.
    """
    from envs.pipeline_env import PipelineEnv

    env = PipelineEnv(PIPELINE, safety=True)
    spent: dict[str, float] = defaultdict(float)
    timed = functools.partial(_timed, spent)

    codec = env.codec
    object.__setattr__(codec, "observe", timed("observation", codec.observe))  # a frozen dataclass in some versions
    object.__setattr__(codec, "decode", timed("decode", codec.decode))
    if env.predictor is not None:
        env.predictor.predict = timed("prediction", env.predictor.predict)
    if env.safety is not None:
        env.safety.project = timed("projection", env.safety.project)
    env.action_space.seed(seed)
    cpu = time.process_time()
    resets = 0
    reset_s = 0.0

    def reset(s: int | None) -> None:
        nonlocal resets, reset_s
        t = time.perf_counter()
        env.reset(seed=s)
        env.cluster.step = timed("simulator", env.cluster.step)
        reset_s += time.perf_counter() - t
        resets += 1

    reset(seed)
    spent.clear()
    step_s = 0.0
    for _ in range(steps):
        t = time.perf_counter()
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        step_s += time.perf_counter() - t
        if terminated or truncated:
            before = dict(spent)
            reset(None)
            spent.clear()
            spent.update(before)  # the reset's own observation is a reset cost
    parts = {name: round(1e3 * spent.get(name, 0.0) / steps, 3) for name in PARTS}
    step_ms = 1e3 * step_s / steps
    parts["other"] = round(step_ms - sum(parts.values()), 3)
    return {
        "steps_per_s": round(steps / step_s, 1),
        "cpu_s": round(time.process_time() - cpu, 2),
        "step_ms": round(step_ms, 3),
        "parts_ms": parts,
        "steps": steps,
        "resets": resets,
        "reset_ms": round(1e3 * reset_s / resets, 2),
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m rlscale.evaluate.train_throughput``: PPO training and environment throughput (see the module)."""
    parser = argparse.ArgumentParser(
        prog="python -m rlscale.evaluate.train_throughput", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--timesteps", type=int, default=8192, help="steps of each PPO training (default 8192)")
    parser.add_argument("--env-steps", type=int, default=600, help="steps of the environment alone (default 600)")
    parser.add_argument("--torch-threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--skip-train", action="store_true", help="measure the environment alone only")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    if args.timesteps < 1 or args.env_steps < 1 or args.torch_threads < 0:
        print("error: --timesteps and --env-steps must be >= 1, --torch-threads >= 0", file=sys.stderr)
        return 2
    report: dict[str, Any] = {"env": env_throughput(args.env_steps)}
    if not args.skip_train:
        try:
            report["train"] = train_throughput(args.timesteps, args.torch_threads)
        except ImportError as exc:
            print(f"error: training needs torch and stable-baselines3 (the train extra): {exc}", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    env = report["env"]
    print(f"env alone: {env['steps_per_s']} steps/s ({env['step_ms']} ms/step; reset {env['reset_ms']} ms)")
    print("  per step (ms): " + ", ".join(f"{k} {v}" for k, v in env["parts_ms"].items()))
    if "train" in report:
        tr = report["train"]
        for key in ("pipeline", "cartpole"):
            r = tr[key]
            print(
                f"PPO on {r['env']}: {r['steps_per_s']} steps/s ({r['timesteps']} steps in {r['wall_s']} s, "
                f"{r['cpu_s']} s CPU: "
                f"rollouts {r['rollout_s']} s, updates {r['update_s']} s)"
            )
        print(f"ratio pipeline/cartpole: {tr['ratio']} (torch threads {tr['torch_threads']})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] if len(sys.argv) > 1 else None))
