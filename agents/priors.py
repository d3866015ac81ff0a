"""Where a fresh training's policy starts (``--prior``): IPA's planner action, or ``ipa-hold``'s, made the
untrained policy's most likely proposal.

`set_prior` adds `PRIOR_LOGIT` to the action head's bias of the prior's choice in each sub-action; `choose_prior`
(``--prior auto``) picks the prior whose action, held fixed behind the safety layer, beats IPA by more on the run's
validation cells (`agents.validation`). Training code: `set_prior` imports torch.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence

import numpy as np

from agents.actor import Actor, random_actor
from agents.train_config import TrainConfig
from agents.validation import agent_records, gap_vs_ipa, ipa_reference, validation_cells
from envs.codecs import HEADROOMS, HOLDS, TILTS
from rlscale.errors import RlscaleError
from rlscale.spec import PipelineSpec
from rlscale.workload import Trace

log = logging.getLogger(__name__)

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
