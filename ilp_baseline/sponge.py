"""Sponge's decision rule (Razavi et al., EuroMLSys 2024) and its horizontal FA2 baseline, as published.

Read from saeid93/sponge at aa00b56, ``optimizer/optimizer.py`` (``Optimizer.dynainf``, lines 238-273, and
``Optimizer.fa2``, lines 275-339) and ``optimizer/adapter.py`` (``Adapter.start_adaptation``, lines 195-262).
Every ``adaptation_interval`` (1 s in ``configs/final/dynainf.yaml``) the adapter reads the remaining budget of a
request (``latest_sla``: the last sample of the router's ``model_infer_request_sla`` gauge, SLO minus the network
delay of the latest request) and calls the optimizer with the load (``arrival_rate``: the configured static rate).
With ``q`` that remaining budget, ``SLO`` the pipeline's SLO and ``cl = SLO - q`` the network share:

- **sponge** (``dynainf``): for cores ``c = 1..cpu_cap`` and then batch ``b = 1..batching_cap``, with
  ``l = l(b, c)`` from the fitted model ``gamma*b/c + delta*b + epsilon/c + eta`` (truncated to whole ms), drain
  the load in batches of ``b`` one after another: the k-th batch (k = 0, 1, ...) meets
  ``l + k*l + cl <= 0.9 * SLO``. The first (c, b) whose every batch does is taken: fewest cores, then smallest
  batch; one replica. Nothing feasible: the configuration stays (``optimal is None``).
- **fa2** (``fa2``): one core per replica; for replicas ``n = 1..16`` and then ``b = 1..batching_cap``, with
  ``l = l(b, 1)``: stop at the first b with ``l > q``; skip unless ``n * floor(q / l) * b >= load``; take the
  fewest n (then the smallest b) with ``l + ceil(load / (b*n)) * l + cl < 0.9 * SLO`` (one ``l`` more than the
  drain takes, as published). Nothing feasible: the configuration stays.

Here, in rlscale's terms (differences from the published code, each forced by rlscale's model or chosen):

- the latency model is the spec's (`rlscale.profiles.LatencyModel`: measured points where they exist, else the same
  four-term fit per variant), truncated to whole milliseconds as Sponge's ``batch_cost_latency_calculation`` does;
- cores and batch sizes are the stage's grids (the bundled ``sponge`` pipeline: cores 1..16, batches 1, 2, 4, 8,
  16; Sponge tries every integer batch up to 16, its model server takes any);
- the load is the last interval's per-second peak (rounded up), the policy's only view of the load (Sponge used its
  configured static rate, i.e. knew the load);
- the remaining budget ``q`` is the planning budget of `rlscale.model.planning_budget_s`: with per-request SLOs the
  5th percentile of the remaining budgets of last interval's arrivals (a low quantile where Sponge reads one
  sample, the latest request's), else (or before the first interval) the SLA (network share 0);
- a cores change is applied in place where the spec enables ``in_place_resize`` (Sponge patches the pod's CPU
  request and limit); a batch change is a rollout in rlscale's simulator, where Sponge changes the batch at run
  time in its model server at no cost. That difference is kept, not modelled away: Sponge's batch changes cost
  here a new replica's startup (and the overlap), so `sponge` pays more per batch change than it did published;
- ``fa2`` tries at most the stage's ``max_replicas`` (Sponge: 16): the bundled ``sponge`` pipeline allows one, so
  its benchmark passes ``--set stages.0.max_replicas=16`` (experiments/RESULTS.md section 13). Sponge's FA2 ran
  YOLOv5s (``configs/final/fa2.yaml``); here it runs the stage's variant in force (the ``sponge`` pipeline offers
  YOLOv5n only), so it differs from ``sponge`` in its scaling rule alone.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from rlscale.errors import RlscaleError
from rlscale.model import planning_budget_s
from rlscale.predictors import last_interval_peak_rps
from rlscale.spec import PipelineSpec, StageSpec
from rlscale.types import PipelineConfig, PipelineState, StageConfig

log = logging.getLogger(__name__)

SLO_MULTIPLIER = 0.9
"""Sponge's ``multiplier``: a batch must finish within 0.9 x the SLO (``optimizer.py`` lines 257 and 314)."""
FA2_MAX_REPLICAS = 16
"""Sponge's FA2 tries 1..16 replicas (``optimizer.py`` line 315, ``scaling_cap: 16`` in ``fa2.yaml``)."""
FA2_BATCHING_CAP = 8
"""``batching_cap: 8`` in Sponge's ``configs/final/fa2.yaml``: FA2 tries batches up to 8."""
FA2_CORES = 1
"""FA2's cores per replica (``cpu_request: '1'`` in ``fa2.yaml``; ``l(b, 1)`` in ``optimizer.py`` line 317)."""


def whole_ms(latency_s: float) -> float:
    """``latency_s`` truncated to whole milliseconds, as Sponge's ``int(gamma*b/c + ...)`` in ms does."""
    return math.floor(latency_s * 1000.0 + 1e-9) / 1000.0


def drain_load(load_rps: float) -> int | None:
    """The requests one decision drains: the per-second load rounded up (Sponge's integer ``RPS``); None for a
    load that is not a finite number >= 0 (no data: the policy keeps the configuration in force)."""
    if not (math.isfinite(load_rps) and load_rps >= 0):
        return None
    return int(math.ceil(load_rps - 1e-9))


def sponge_choice(
    stage: StageSpec,
    variant: str,
    load: int,
    sla_s: float,
    budget_s: float,
    *,
    multiplier: float = SLO_MULTIPLIER,
) -> tuple[int, int] | None:
    """Sponge's ``dynainf``: the first (cores, batch), fewest cores then smallest batch, whose every batch of the
    drained load meets ``l + queueing + network <= multiplier * SLA``; None when none does.

    Args:
        stage: the stage (its latency model, core grid and batch sizes).
        variant: the variant served.
        load: requests to drain (per second).
        sla_s: the SLO.
        budget_s: the remaining budget ``q`` (the network share is ``sla_s - budget_s``).
        multiplier: Sponge's 0.9.
    """
    network_s = max(0.0, sla_s - budget_s)
    bound = multiplier * sla_s
    for cores in sorted(stage.cores):
        for batch in sorted(stage.batch_sizes):
            latency = whole_ms(stage.latency.latency_s(variant, batch, cores))
            batches = -(-load // batch)
            # the last batch waits for every one before it: k*l queueing + its own l (the others finish earlier)
            if batches == 0 or batches * latency + network_s <= bound + 1e-12:
                return cores, batch
    return None


def fa2_choice(
    stage: StageSpec,
    variant: str,
    load: int,
    sla_s: float,
    budget_s: float,
    *,
    cores: int = FA2_CORES,
    max_replicas: int = FA2_MAX_REPLICAS,
    batching_cap: int = FA2_BATCHING_CAP,
    multiplier: float = SLO_MULTIPLIER,
) -> tuple[int, int] | None:
    """Sponge's ``fa2``: the fewest replicas (then the smallest batch) at ``cores`` each that pass its check; None
    when none does. Arguments as `sponge_choice`, plus the replica and batch caps."""
    network_s = max(0.0, sla_s - budget_s)
    bound = multiplier * sla_s
    batches = sorted(b for b in stage.batch_sizes if b <= batching_cap)
    for replicas in range(1, max_replicas + 1):
        for batch in batches:
            latency = whole_ms(stage.latency.latency_s(variant, batch, cores))
            if latency > budget_s:
                break
            if latency > 0 and replicas * math.floor(budget_s / latency) * batch < load:
                continue
            queueing = -(-load // (batch * replicas)) * latency
            if latency + queueing + network_s < bound:
                return replicas, batch
    return None


class SpongePolicy:
    """Sponge (``sponge``) or its horizontal FA2 baseline (``fa2``) as a `Policy` for a single-stage pipeline.

    Args:
        spec: a single-stage pipeline.
        rule: ``sponge`` (vertical: one replica, cores and batch) or ``fa2`` (horizontal: one core per replica,
            replicas and batch).
        name: the policy's name in records (default: ``rule``).

    Attributes:
        last_load: the requests the last decision drained.
        last_budget_s: the remaining budget it planned with.
        infeasible_decisions: decisions where nothing passed the check (the configuration stayed, as published).
    """

    RULES: Sequence[str] = ("sponge", "fa2")

    def __init__(self, spec: PipelineSpec, rule: str = "sponge", *, name: str | None = None) -> None:
        if rule not in self.RULES:
            raise RlscaleError(f"unknown Sponge rule {rule!r} (known: {', '.join(self.RULES)})")
        name = name or rule
        if len(spec.stages) != 1:
            raise RlscaleError(f"{name} plans single-stage pipelines; {spec.name} has {len(spec.stages)} stages")
        self.spec = spec
        self.rule = rule
        self.name = name
        stage = spec.stages[0]
        self.fa2_cores = FA2_CORES if FA2_CORES in stage.cores else min(stage.cores)
        self.last_load = 0
        self.last_budget_s = spec.sla_s
        self.infeasible_decisions = 0

    def decide(self, state: PipelineState) -> PipelineConfig:
        stage = self.spec.stages[0]
        current = state.config.stages[0]
        variant = current.variant if current.variant in stage.variant_names else stage.variant_names[0]
        load = drain_load(last_interval_peak_rps(state))
        if load is None:
            log.warning("t=%.0fs %s: no valid load observed; the configuration stays", state.time_s, self.name)
            return state.config
        budget = planning_budget_s(self.spec, state.last)
        self.last_load, self.last_budget_s = load, budget
        if self.rule == "sponge":
            choice = sponge_choice(stage, variant, load, self.spec.sla_s, budget)
            if choice is not None:
                cores, batch = choice
                return PipelineConfig((StageConfig.one(variant, batch, max(1, stage.min_replicas), cores),))
        else:
            replicas_cap = min(FA2_MAX_REPLICAS, stage.max_replicas)
            choice = fa2_choice(
                stage, variant, load, self.spec.sla_s, budget, cores=self.fa2_cores, max_replicas=replicas_cap
            )
            if choice is not None:
                replicas, batch = choice
                replicas = max(replicas, stage.min_replicas)
                return PipelineConfig((StageConfig.one(variant, batch, replicas, self.fa2_cores),))
        self.infeasible_decisions += 1
        log.debug(
            "t=%.0fs %s: nothing meets %.2f x SLA at %d rps; the configuration stays",
            state.time_s,
            self.name,
            SLO_MULTIPLIER,
            load,
        )
        return state.config
