"""The planning problem shared by the ILP and the DP: data, modes, the objective, and the result type.

One configuration per stage (variant v, batch b, cores c, replicas n). At predicted load lambda (rps):

- throughput: ``n * h(v, b, c) * rho_max >= lambda``, with ``h = b / l(v, b, c)``;
- latency: ``sum_s l(v_s, b_s, c_s) + (b_s - 1) / lambda <= SLA`` (service plus batch-fill wait, IPA's form);
- budget: ``sum_s n_s * c_s <= core_budget``; replicas within ``[min_replicas, max_replicas]``;
- objective: maximise ``alpha * A - beta * sum_s n_s c_s - gamma * sum_s b_s`` with A the spec's accuracy method.

A stage whose spec allows variant pools (``max_pools >= 2``) also has two-pool options in mode ``ipa``
(`PooledOption`, enumerated by `rlscale.model.two_pool_options`): an accurate pool at its full planned capacity and
a less accurate one carrying the rest, each pool's latency waiting for its batch at its own share of the load, the
stage's latency the slower pool's, cores over both pools, accuracy and batch share-weighted. For fixed pools and
replicas that split maximises accuracy (fractional knapsack), so the optimum over these options is the optimum over
two-pool mixes when the batch-fill wait does not depend on the share (batch 1); with larger batches a smaller
accurate share could shorten the other pool's wait, and those mixes are not offered (a restriction). Mixes of three
or more pools are out of the planners' scope (InfAdapter's own policy, `ilp_baseline.infadapter`, plans up to five).
Pooled options dominated by another option of their stage (no faster, no fewer cores, no more accurate, no smaller
batch term) are dropped: with non-negative weights they can never be needed for an optimum, so this is exact.

Modes (IPA's baselines): ``ipa`` (variant, batch, cores and replicas free), ``fa2-low`` / ``fa2-high``
(variants fixed to the cheapest / a heavier one; batch, cores and replicas free), ``rim`` (replicas and cores
fixed; variant and batch free).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rlscale.errors import RlscaleError
from rlscale.model import (  # noqa: F401 - batch_fill_wait_s and objective_value re-exported
    batch_fill_wait_s,
    carries,
    objective_value,
    option_table,
    plan_fixed_variants,
    replicas_for,
    two_pool_options,
)
from rlscale.spec import PipelineSpec, StageSpec
from rlscale.types import PipelineConfig, StageConfig

MODES = ("ipa", "fa2-low", "fa2-high", "rim")

# IPA's FA2-high runs fix each stage to a heavier variant; these are the variants of IPA's own fa2-high runs
# (initial_active_model of the revised-paper configs, ipa/derived/ipa_experiment_configs_from_notebooks.csv).
# Pipelines not listed use the upper-median variant by accuracy.
IPA_FA2_HIGH = {
    "video": ("yolov5s", "resnet101"),
    "audio-qa": ("facebook-s2t-medium-librispeech-asr", "deepset-roberta-base-squad2"),
    "audio-sent": ("facebook-s2t-medium-librispeech-asr", "distilbert-base-uncased-finetuned-sst-2-english"),
    "sum-qa": ("sshleifer-distilbart-xsum-12-6", "deepset-roberta-base-squad2"),
    "nlp": (
        "dinalzein-xlm-roberta-base-finetuned-language-identification",
        "Helsinki-NLP-opus-mt-tc-big-fr-en",
        "sshleifer-distilbart-xsum-12-6",
    ),
}


class PlanningError(RlscaleError):
    """The solver did not return an optimal solution."""


class InfeasibleLoad(RlscaleError):
    """No configuration meets the SLA, the throughput and the budget at this load."""


@dataclass(frozen=True)
class Option:
    """One way to run one stage at the planning load (replicas at the fewest that carry it)."""

    variant: str
    batch: int
    cores: int
    replicas: int
    latency_s: float
    throughput_rps: float  # of one replica
    acc_rank: float
    acc_raw: float

    @property
    def cores_total(self) -> int:
        return self.replicas * self.cores

    def config(self) -> StageConfig:
        return StageConfig.one(self.variant, self.batch, self.replicas, self.cores)


@dataclass(frozen=True)
class PooledOption:
    """A two-pool way to run one stage at the planning load (`rlscale.model.two_pool_options`): replicas, shares
    and everything else fixed. Its fields are the stage's as the objective counts them.

    Attributes:
        stage_config: the stage configuration (the accurate pool first, the other in its ``mix``).
        latency_s: planned latency, the slower pool's.
        cores_total: cores over both pools.
        batch: the share-weighted batch size (`rlscale.types.StageConfig.total_batch`).
        acc_rank, acc_raw: share-weighted rank-normalised and raw accuracy.
    """

    stage_config: StageConfig
    latency_s: float
    cores_total: int
    batch: float
    acc_rank: float
    acc_raw: float

    @property
    def variant(self) -> str:
        """The accurate pool's variant."""
        return self.stage_config.variant

    def config(self) -> StageConfig:
        return self.stage_config


AnyOption = Option | PooledOption


@dataclass(frozen=True)
class PlanningData:
    """Everything a solver needs; built by `planning_data`, solver-independent and testable on its own."""

    spec: PipelineSpec
    load_rps: float  # the largest stage load (for messages)
    mode: str
    options: tuple[tuple[AnyOption, ...], ...]  # per stage: single-pool options, then any two-pool ones
    stage_loads: tuple[float, ...] = ()  # the load each stage is planned for (empty: load_rps everywhere)

    def stage_load(self, s: int) -> float:
        """The load stage ``s`` is planned for."""
        return self.stage_loads[s] if self.stage_loads else self.load_rps

    @property
    def product(self) -> bool:
        return self.spec.objective.accuracy_method == "product"


@dataclass(frozen=True)
class Plan:
    """A solver's answer."""

    config: PipelineConfig
    objective: float
    solver: str
    solve_ms: float


def fa2_high_variants(spec: PipelineSpec) -> list[str]:
    """IPA's FA2-high variant per stage where known, else the upper-median variant by accuracy."""
    known = IPA_FA2_HIGH.get(spec.name)
    if (
        known
        and len(known) == len(spec.stages)
        and all(v in st.variant_names for v, st in zip(known, spec.stages, strict=True))
    ):
        return list(known)
    return [sorted(st.variants, key=lambda v: v.accuracy)[len(st.variants) // 2].name for st in spec.stages]


def cheapest_variants(spec: PipelineSpec) -> list[str]:
    return [st.cheapest_variant for st in spec.stages]


def rim_sizing(spec: PipelineSpec, peak_rps: float) -> list[tuple[int, int]]:
    """RIM's fixed (replicas, cores) per stage: what the cheapest variants need at the peak load."""
    plan = plan_fixed_variants(spec, cheapest_variants(spec), peak_rps)
    return [(s.replicas, s.cores) for s in plan.stages]


def _stage_options(
    stage: StageSpec,
    load_rps: float,
    rho_max: float,
    variants: list[str],
    fixed: tuple[int, int] | None,
    sla_s: float,
) -> list[Option]:
    """The rows of the stage's option table (`rlscale.model.option_table`) that can carry ``load_rps``
    within the SLA on their own, at the fewest replicas that do, a calibrated row also at the further counts that
    lower its latency (`rlscale.model.OptionTable.replica_options`) (``fixed``: RIM's replicas and cores)."""
    t = option_table(stage)
    capacity = t.throughput_rps * rho_max
    if fixed is None:
        row, n, latency = t.replica_options(
            load_rps, replicas_for(load_rps, capacity, stage.min_replicas), stage.max_replicas
        )
    else:
        row, n = np.arange(capacity.size), np.full(capacity.size, fixed[0])
        latency = t.planned_latency_s(load_rps, n)
    keep = latency <= sla_s
    if len(variants) < len(stage.variants):
        keep &= np.isin(t.variant_index[row], [stage.variant_names.index(v) for v in variants])
    if fixed is None:
        keep &= n <= stage.max_replicas
    else:
        keep &= (t.cores == fixed[1]) & carries(n * capacity, load_rps)
    k = np.flatnonzero(keep)
    idx = row[k]
    # python scalars for the solvers' inner loops (numpy scalars are slower to combine one at a time)
    rows, ns, lats, hs = (
        [t.rows[i] for i in idx],
        n[k].tolist(),
        latency[k].tolist(),
        t.throughput_rps[idx].tolist(),
    )
    rank, raw = t.acc_rank[idx].tolist(), t.acc_raw[idx].tolist()
    return [
        Option(v, b, c, int(ni), lat, h, ar, aw)
        for (v, b, c), ni, lat, h, ar, aw in zip(rows, ns, lats, hs, rank, raw, strict=True)
    ]


def _pooled_options(
    stage: StageSpec, load_rps: float, spec: PipelineSpec, single: tuple[Option, ...]
) -> tuple[PooledOption, ...]:
    """The stage's two-pool options at ``load_rps`` that no other option of the stage dominates."""
    pooled = two_pool_options(stage, load_rps, spec.objective.rho_max, spec.sla_s)
    if pooled.size == 0:
        return ()
    product = spec.objective.accuracy_method == "product"
    acc = pooled.acc_raw if product else pooled.acc_rank
    keep = _undominated(
        (pooled.latency_s, pooled.cores, acc, pooled.batch),
        (
            np.array([o.latency_s for o in single]),
            np.array([o.cores_total for o in single], dtype=float),
            np.array([o.acc_raw if product else o.acc_rank for o in single]),
            np.array([o.batch for o in single], dtype=float),
        ),
    )
    kept = pooled.take(keep)
    return tuple(
        PooledOption(kept.config(stage, k), lat, int(cores), batch, ar, aw)
        for k, (lat, cores, batch, ar, aw) in enumerate(
            zip(
                kept.latency_s.tolist(),
                kept.cores.tolist(),
                kept.batch.tolist(),
                kept.acc_rank.tolist(),
                kept.acc_raw.tolist(),
                strict=True,
            )
        )
    )


_CHUNK = 512


def _undominated(rows: tuple[np.ndarray, ...], others: tuple[np.ndarray, ...]) -> np.ndarray:
    """Indices (ascending) of ``rows`` = (latency, cores, accuracy, batch) that neither a row of ``others`` nor
    another of ``rows`` dominates (latency, cores and batch no larger, accuracy no smaller); of equal rows the
    first is kept, and a row equal to one of ``others`` is dropped.

    Sorted by (latency, cores, accuracy down, batch), a row's dominators all come before it, and checking it
    against the rows kept so far suffices (dominance is transitive); done in numpy blocks.
    """
    lat, cores, acc, batch = rows
    if others[0].size:
        o_lat, o_cores, o_acc, o_batch = others
        hit = np.zeros(lat.size, dtype=bool)
        for a in range(0, lat.size, 8 * _CHUNK):
            sl = slice(a, a + 8 * _CHUNK)
            hit[sl] = (
                (o_lat[:, None] <= lat[None, sl])
                & (o_cores[:, None] <= cores[None, sl])
                & (o_acc[:, None] >= acc[None, sl])
                & (o_batch[:, None] <= batch[None, sl])
            ).any(axis=0)
        candidates = np.flatnonzero(~hit)
    else:
        candidates = np.arange(lat.size)
    order = candidates[np.lexsort((batch[candidates], -acc[candidates], cores[candidates], lat[candidates]))]
    kept: list[np.ndarray] = []
    k_lat = k_cores = k_acc = k_batch = np.zeros(0)
    for a in range(0, order.size, _CHUNK):
        block = order[a : a + _CHUNK]
        b_lat, b_cores, b_acc, b_batch = lat[block], cores[block], acc[block], batch[block]
        beaten = (
            (k_lat[:, None] <= b_lat[None, :])
            & (k_cores[:, None] <= b_cores[None, :])
            & (k_acc[:, None] >= b_acc[None, :])
            & (k_batch[:, None] <= b_batch[None, :])
        ).any(axis=0)
        inner = (
            (b_lat[:, None] <= b_lat[None, :])
            & (b_cores[:, None] <= b_cores[None, :])
            & (b_acc[:, None] >= b_acc[None, :])
            & (b_batch[:, None] <= b_batch[None, :])
        )
        beaten |= np.triu(inner, k=1).any(axis=0)  # by an earlier row of the block
        survivors = block[~beaten]
        kept.append(survivors)
        k_lat = np.concatenate([k_lat, lat[survivors]])
        k_cores = np.concatenate([k_cores, cores[survivors]])
        k_acc = np.concatenate([k_acc, acc[survivors]])
        k_batch = np.concatenate([k_batch, batch[survivors]])
    return np.sort(np.concatenate(kept)) if kept else np.zeros(0, dtype=np.int64)


def planning_data(
    spec: PipelineSpec,
    load_rps: float | Sequence[float],
    mode: str = "ipa",
    *,
    rim_fixed: list[tuple[int, int]] | None = None,
) -> PlanningData:
    """Enumerate each stage's options at ``load_rps`` for a mode: its single-pool options, then (mode ``ipa``, a
    stage with ``max_pools >= 2``) its undominated two-pool options (`PooledOption`; see the module docstring).

    Args:
        spec: the pipeline.
        load_rps: the load to plan for (already multiplied by any headroom), or one load per stage (a stage
            planned with more headroom than the others: the planner-parameter action of `envs.pipeline_env`).
        mode: one of `MODES`.
        rim_fixed: for ``rim``, the fixed (replicas, cores) per stage (see `rim_sizing`).
    """
    if mode not in MODES:
        raise RlscaleError(f"unknown planning mode {mode!r} (known: {', '.join(MODES)})")
    loads = (
        tuple(float(x) for x in load_rps) if isinstance(load_rps, Sequence) else (float(load_rps),) * len(spec.stages)
    )
    if len(loads) != len(spec.stages):
        raise RlscaleError(f"expected one load per stage ({len(spec.stages)}), got {len(loads)}")
    for load in loads:
        if load < 0 or not math.isfinite(load):
            raise RlscaleError(f"load must be a finite number >= 0, got {load}")
    if mode == "fa2-low":
        variants = [[v] for v in cheapest_variants(spec)]
    elif mode == "fa2-high":
        variants = [[v] for v in fa2_high_variants(spec)]
    else:
        variants = [st.variant_names for st in spec.stages]
    if mode == "rim" and (rim_fixed is None or len(rim_fixed) != len(spec.stages)):
        raise RlscaleError("rim mode needs the fixed (replicas, cores) of every stage")
    options = tuple(
        tuple(
            _stage_options(
                st,
                loads[i],
                spec.objective.rho_max,
                vs,
                rim_fixed[i] if mode == "rim" and rim_fixed else None,
                spec.sla_s,
            )
        )
        for i, (st, vs) in enumerate(zip(spec.stages, variants, strict=True))
    )
    if mode == "ipa":
        options = tuple(
            opts + _pooled_options(st, loads[i], spec, opts) if st.max_pools >= 2 else opts
            for i, (st, opts) in enumerate(zip(spec.stages, options, strict=True))
        )
    uniform = all(x == loads[0] for x in loads)
    return PlanningData(
        spec=spec, load_rps=max(loads), mode=mode, options=options, stage_loads=() if uniform else loads
    )
