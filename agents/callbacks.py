"""The training's stable-baselines3 callbacks: checkpoints (and the stop request), the environment's terms in the
logs, and the evaluation traces' scores in the logs (never used to choose the model).

Training code: imports stable-baselines3 (`agents.training` imports this module only when it trains).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from agents.actor import Actor
from agents.conversion import codec_settings, export_actor, save_model
from rlscale.interrupts import StopRequest

Evaluate = Callable[..., dict[str, dict]]
"""``evaluate(actor, pipeline, traces=...)``: each trace's summary record (`agents.training.evaluate`)."""


class Checkpoints(BaseCallback):
    """Saves ``checkpoints/ppo_{steps}_steps.zip`` (its settings beside it) every ``every_steps`` steps and every
    ``minutes``, and ends learning (returns False) once ``stop`` is set.

    Args:
        run: the run folder.
        settings: the run's settings (``config.json``), saved beside each checkpoint.
        every_steps: steps between checkpoints (over all ``n_envs`` environments).
        n_envs: the environments stepped per call.
        minutes: also save one every this many minutes (0: only by steps).
        stop: polled every step (None: never stops early).
    """

    def __init__(
        self,
        run: Path,
        settings: dict[str, Any],
        every_steps: int,
        n_envs: int,
        minutes: float,
        stop: StopRequest | None = None,
    ) -> None:
        super().__init__()
        self.run = run
        self.settings = settings
        self.every_calls = max(1, every_steps // n_envs)
        self.period_s = minutes * 60.0
        self.stop = stop
        self.last = time.monotonic()

    def _on_step(self) -> bool:
        due = self.n_calls % self.every_calls == 0
        if self.period_s > 0 and time.monotonic() - self.last >= self.period_s:
            due = True
        if due:
            save_model(self.model, self.run / "checkpoints" / f"ppo_{self.num_timesteps}_steps.zip", self.settings)
            self.last = time.monotonic()
        return self.stop is None or not self.stop.is_set()


class EvalOnWindows(BaseCallback):
    """Logs the agent's score on the evaluation traces every ``every`` steps (saving the model it scored as
    ``checkpoints/eval_{steps}.zip``); never used to choose the model.

    Args:
        every: steps between evaluations.
        run: the run folder.
        settings: the run's settings (``config.json``): the actor's codec (`agents.conversion.codec_settings`).
        spec_name: the pipeline's name (the actor's).
        pipeline: the spec the agent is evaluated on (a bundled name or a spec path).
        load_scale_rps: the codec's load normalisation.
        traces: the evaluation traces.
        evaluate: scores an actor on them.
    """

    def __init__(
        self,
        every: int,
        run: Path,
        settings: dict[str, Any],
        spec_name: str,
        pipeline: str,
        load_scale_rps: float,
        traces: Sequence[str],
        evaluate: Evaluate,
    ) -> None:
        super().__init__()
        self.every = every
        self.next = every
        self.run = run
        self.settings = settings
        self.spec_name = spec_name
        self.pipeline = pipeline
        self.load_scale_rps = load_scale_rps
        self.traces = traces
        self.evaluate = evaluate

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.next:
            self.next += self.every
            save_model(self.model, self.run / "checkpoints" / f"eval_{self.num_timesteps}.zip", self.settings)
            actor: Actor = export_actor(
                self.model,
                self.spec_name,
                self.load_scale_rps,
                training=self.settings,
                **codec_settings(self.settings),
            )
            for name, rec in self.evaluate(actor, self.pipeline, traces=self.traces).items():
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
