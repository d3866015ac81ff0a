"""Validation against IPA (issue 15): the cells a trained agent is scored on, and how checkpoints are chosen.

A *cell* is a validation window (held out of training: the Twitter split's last day, the last part of each CSV
trace; never IPA's or InfAdapter's windows) at one weight setting and one load scale. The agent's validation score
is its mean score minus IPA's (IPA's planner on its LSTM prediction with its published headroom: the ``ipa``
policy) on the same cells, in units of beta (one core's cost): positive means better than IPA. Checkpoints are
selected by this gap, so the agent a run keeps is the one that beats the planner most on data it never trained on.

Weight settings: the spec's alpha, and five times it (capped at the top of the training range) when the agent was
trained on sampled weights. Load scales: 0.5, 1 and 2 when training spanned them, else 1.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from agents.actor import Actor
from agents.inference import PPOPolicy
from envs.codecs import RATIO_RANGE, beta_unit
from ilp_baseline.policy import ILPPolicy, ipa_headroom
from ilp_baseline.safety import SafetyLayer
from rlscale.control import Controller
from rlscale.interfaces import Policy
from rlscale.lstm import LSTMPredictor
from rlscale.sim.runner import run_episode
from rlscale.spec import PipelineSpec
from rlscale.workload import Trace, scale_trace

VALIDATION_SCALES = (0.5, 1.0, 2.0)


@dataclass(frozen=True)
class Cell:
    """One validation run: a window at a weight setting and a load scale.

    Attributes:
        spec: the pipeline with the cell's weights.
        trace: the window, scaled.
        alpha: the cell's alpha.
        load_scale: the window's load factor.
    """

    spec: PipelineSpec
    trace: Trace
    alpha: float
    load_scale: float

    @property
    def name(self) -> str:
        return f"{self.trace.name}|alpha={self.alpha:g}"


def validation_cells(
    spec: PipelineSpec,
    windows: Sequence[Trace],
    sampled_weights: bool,
    load_scales: tuple[float, float] | None,
) -> list[Cell]:
    """The cells of ``windows``: weights (the spec's; x5 too with ``sampled_weights``) x load scales (those of
    `VALIDATION_SCALES` within ``load_scales``; 1 without)."""
    o = spec.objective
    alphas = [o.alpha]
    if sampled_weights and o.beta > 0:
        alphas.append(min(5 * o.alpha, RATIO_RANGE[1] * o.beta))
    scales = [1.0]
    if load_scales is not None:
        lo, hi = load_scales
        scales = [x for x in VALIDATION_SCALES if lo <= x <= hi] or [1.0]
    cells = []
    for alpha in dict.fromkeys(alphas):
        weighted = (
            spec if alpha == o.alpha else dataclasses.replace(spec, objective=dataclasses.replace(o, alpha=alpha))
        )
        for x in scales:
            for w in windows:
                cells.append(Cell(weighted, scale_trace(w, x), alpha, x))
    return cells


def run_cells(
    cells: Sequence[Cell], make: Callable[[PipelineSpec], Policy], stop: Callable[[], bool] | None = None
) -> list[dict]:
    """Each cell's summary record (score, violation rate, accuracy, cost) under the policy ``make(spec)`` builds."""
    out = []
    for cell in cells:
        if stop is not None and stop():
            raise KeyboardInterrupt
        record = run_episode(cell.spec, cell.trace, make(cell.spec), seed=0).record
        out.append({k: record[k] for k in ("score", "sla_violation_rate", "accuracy", "cost_cores")})
    return out


def ipa_reference(cells: Sequence[Cell], stop: Callable[[], bool] | None = None) -> list[dict]:
    """IPA's records on the cells (the ``ipa`` policy: LSTM prediction, IPA's headroom, exact planner)."""
    return run_cells(
        cells,
        lambda spec: Controller(ILPPolicy(spec, LSTMPredictor(), headroom=ipa_headroom(spec), name="ipa")),
        stop,
    )


def agent_records(actor: Actor, cells: Sequence[Cell], stop: Callable[[], bool] | None = None) -> list[dict]:
    """The agent's records on the cells, behind the safety layer (what the ``ppo`` policy runs)."""
    return run_cells(cells, lambda spec: Controller(PPOPolicy(spec, actor), SafetyLayer(spec)), stop)


def gap_vs_ipa(cells: Sequence[Cell], agent: Sequence[dict], ipa: Sequence[dict]) -> float:
    """Mean of (agent score - IPA score) / beta over the cells: > 0 is better than IPA."""
    gaps = [(a["score"] - b["score"]) / beta_unit(c.spec) for c, a, b in zip(cells, agent, ipa, strict=True)]
    value = float(np.mean(gaps)) if gaps else math.nan
    return value


MAX_CANDIDATES = 10
"""Checkpoints scored per run at most (evenly spread over the run, the latest kept), besides the final model: a
run checkpointing every few minutes would otherwise spend longer validating than training."""


def checkpoint_candidates(run, most: int = MAX_CANDIDATES) -> list[tuple[int, object]]:
    """``(steps, path)`` of a run's step checkpoints (``checkpoints/ppo_{steps}_steps.zip``), by steps, at most
    ``most`` of them (evenly spread, the latest always among them)."""
    from pathlib import Path

    found = []
    for path in Path(run, "checkpoints").glob("ppo_*_steps.zip"):
        try:
            found.append((int(path.stem.split("_")[1]), path))
        except (IndexError, ValueError):
            continue
    found.sort(key=lambda x: x[0])
    if len(found) > most:
        keep = sorted({round(i * (len(found) - 1) / (most - 1)) for i in range(most)}) if most > 1 else [len(found) - 1]
        found = [found[i] for i in keep]
    return found


def select_checkpoint(
    run,
    spec: PipelineSpec,
    final: Actor,
    final_steps: int,
    cells: Sequence[Cell],
    export: Callable[[object], Actor],
    stop: Callable[[], bool] | None = None,
    progress: Callable[[str], None] | None = None,
    ipa: Sequence[dict] | None = None,
) -> dict:
    """Score the final actor and every step checkpoint of ``run`` on ``cells`` against IPA; the best one's actor.

    Args:
        run: the run folder.
        spec: the pipeline.
        final: the final model's actor.
        final_steps: its steps (a checkpoint at the same steps was saved before that rollout's update: another
            model).
        cells: the validation cells (`validation_cells`).
        export: a checkpoint path -> its actor.
        stop: polled between runs; once true, `KeyboardInterrupt`.
        progress: called with a line per candidate scored.
        ipa: IPA's records on ``cells`` where the caller has them (`ipa_reference`; default: computed here).

    Returns:
        ``actor`` (the best), ``name`` (its file: ``model.zip`` for the final model, else the checkpoint's name in
        ``checkpoints/``), ``steps`` (its steps), ``gap`` (its gap), ``gaps`` (file name -> gap of every
        candidate), ``records`` and ``ipa`` (per cell name, the best's and IPA's records).
    """
    ipa = ipa_reference(cells, stop) if ipa is None else list(ipa)
    candidates: list[tuple[str, int, Actor | object]] = [(p.name, s, p) for s, p in checkpoint_candidates(run)]
    candidates.append(("model.zip", final_steps, final))
    best: tuple[float, str, int, Actor, list[dict]] | None = None
    gaps: dict[str, float] = {}
    for name, steps, source in candidates:
        actor = source if isinstance(source, Actor) else export(source)
        records = agent_records(actor, cells, stop)
        gap = gap_vs_ipa(cells, records, ipa)
        gaps[name] = round(gap, 4)
        if progress is not None:
            progress(f"validation: {name} ({steps} steps): {gap:+.3f} (score - ipa's, in cores)")
        if best is None or gap > best[0]:
            best = (gap, name, steps, actor, records)
    assert best is not None
    gap, name, steps, actor, records = best
    return {
        "actor": actor,
        "name": name,
        "steps": steps,
        "gap": gap,
        "gaps": gaps,
        "records": {c.name: r for c, r in zip(cells, records, strict=True)},
        "ipa": {c.name: r for c, r in zip(cells, ipa, strict=True)},
    }
