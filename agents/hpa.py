"""The Kubernetes Horizontal Pod Autoscaler's algorithm on CPU utilisation, per stage; it scales replicas only.

Rules (kube-controller-manager defaults): every 15 s sync, ``desired = ceil(current * utilisation / target)``
with target 80%, skipped when ``|utilisation / target - 1| <= 0.1`` (tolerance); no scale-up stabilisation;
scale-up limited per sync to ``max(current + 4, 2 * current)``; scale-down takes the highest recommendation of the
last 300 s (stabilisation window). Unready pods are not counted as idle: while a stage has replicas starting up,
it is not scaled down.

The simulator decides every interval (10 s), so the HPA acts at the first decision after each 15 s sync
boundary, on the utilisation of the interval that just ended.

Like the controller, the policy re-reads the current replicas from the cluster every sync (``state.config``, what
the Deployments ask for) and never remembers its own: a manual ``kubectl scale`` is seen and scaled from. Between
syncs it leaves the observed replicas as they are.

Variant, batch and cores are the Deployment template's, which the HPA never changes: every decision keeps those
in force (``state.config``), except what the policy pins (``variants``, ``batch``, ``cores``: ``--hpa-variant``,
``--hpa-batch``, ``--hpa-cores``), which it sets. Only on a warm start (a state without a last interval: the
simulator's first decision, installed before any request arrives) does it choose the template: the pinned or
IPA's FA2-high variants, with the batch and cores (where not pinned) of the cheapest plan for the first interval's
load. So ``simulate`` and the sidecar on a running pipeline decide alike: a sidecar started on a pipeline that
runs other variants scales their replicas and changes nothing else unless told to.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

import numpy as np

from ilp_baseline.problem import fa2_high_variants
from rlscale.errors import RlscaleError
from rlscale.model import plan_fixed_variants, stage_options
from rlscale.pareto import StageArrays, frontier_dp
from rlscale.spec import PipelineSpec
from rlscale.types import PipelineConfig, PipelineState, StageConfig

TARGET_UTILISATION = 0.8
TOLERANCE = 0.1
SYNC_PERIOD_S = 15.0
SCALE_DOWN_WINDOW_S = 300.0
SCALE_UP_PODS = 4
SCALE_UP_FACTOR = 2.0


def per_stage(values: Sequence, spec: PipelineSpec, flag: str) -> list | None:
    """One value for every stage (``values`` holds one, or one per stage), or None for no values.

    Raises:
        RlscaleError: neither one value nor one per stage.
    """
    if values is None:
        return None
    values = list(values)
    if len(values) == 1:
        return values * len(spec.stages)
    if len(values) != len(spec.stages):
        raise RlscaleError(
            f"{flag}: give one value, or one per stage ({len(spec.stages)}: {', '.join(st.name for st in spec.stages)})"
            f", got {len(values)}"
        )
    return values


class HPAPolicy:
    """Replicas by the HPA algorithm; variant, batch and cores are those in force, or pinned.

    The current replicas are read from ``state.config`` every decision (the configuration the cluster reports).

    Args:
        spec: the pipeline.
        variants: pin every stage's variant (None: keep the variant in force; a warm start installs IPA's FA2-high).
        target: target CPU utilisation (0.8).
        batch: pin the batch size (one for every stage, or one per stage; None: keep, a warm start plans it).
        cores: pin the cores per replica (as ``batch``).

    Raises:
        RlscaleError: a variant, batch size or core count the stage does not offer, or a target outside (0, 1].
    """

    def __init__(
        self,
        spec: PipelineSpec,
        variants: Sequence[str] | None = None,
        target: float = TARGET_UTILISATION,
        *,
        batch: Sequence[int] | None = None,
        cores: Sequence[int] | None = None,
    ) -> None:
        if not (math.isfinite(target) and 0 < target <= 1):
            raise RlscaleError(f"--hpa-target must be a utilisation in (0, 1], got {target}")
        self.spec = spec
        self.pinned_variants = per_stage(variants, spec, "--hpa-variant")
        self.pinned_batch = per_stage(batch, spec, "--hpa-batch")
        self.pinned_cores = per_stage(cores, spec, "--hpa-cores")
        for s, st in enumerate(spec.stages):
            if self.pinned_variants and self.pinned_variants[s] not in st.variant_names:
                raise RlscaleError(
                    f"--hpa-variant: stage {st.name} has no variant {self.pinned_variants[s]!r} "
                    f"(its variants: {', '.join(st.variant_names)})"
                )
            if self.pinned_batch and self.pinned_batch[s] not in st.batch_sizes:
                raise RlscaleError(
                    f"--hpa-batch: stage {st.name} has no batch size {self.pinned_batch[s]} "
                    f"(its batch sizes: {', '.join(map(str, st.batch_sizes))})"
                )
            if self.pinned_cores and self.pinned_cores[s] not in st.cores:
                raise RlscaleError(
                    f"--hpa-cores: stage {st.name} has no core count {self.pinned_cores[s]} "
                    f"(its cores: {', '.join(map(str, st.cores))})"
                )
        self.variants = list(self.pinned_variants or fa2_high_variants(spec))  # a warm start's template
        self.target = target
        self.name = "hpa"
        self._last_sync: int | None = None
        self._recommendations: list[deque[tuple[float, int]]] = [deque() for _ in spec.stages]

    def template(self, load_rps: float) -> PipelineConfig:
        """What a warm start installs: the variants, with the cheapest batch and cores (where not pinned) and
        replicas for ``load_rps`` whose planned latency fits the SLA."""
        if self.pinned_batch is None and self.pinned_cores is None:
            return plan_fixed_variants(self.spec, self.variants, load_rps)
        per_stage_options = []
        for s, (st, v) in enumerate(zip(self.spec.stages, self.variants, strict=True)):
            b_ok = [self.pinned_batch[s]] if self.pinned_batch else st.batch_sizes
            c_ok = [self.pinned_cores[s]] if self.pinned_cores else st.cores
            opts = [
                o
                for o in stage_options(st, load_rps, self.spec.objective.rho_max, variants=[v])
                if o.config.batch in b_ok and o.config.cores in c_ok
            ]
            if not opts:  # even max_replicas is not enough: the largest capacity allowed
                b, c = max(
                    ((b, c) for b in b_ok for c in c_ok), key=lambda bc, st=st, v=v: st.latency.throughput_rps(v, *bc)
                )
                per_stage_options.append([(StageConfig.one(v, b, st.max_replicas, c), st.latency.latency_s(v, b, c))])
            else:
                per_stage_options.append([(o.config, o.latency_s) for o in opts])
        arrays = [
            StageArrays(
                np.array([lat for _c, lat in opts]),
                np.array([c.total_cores for c, _lat in opts], dtype=float),
                np.zeros(len(opts)),
                np.array([c.total_cores + 1e-6 * lat for c, lat in opts]),
            )
            for opts in per_stage_options
        ]
        chosen = frontier_dp(arrays, self.spec.sla_s, None)
        if chosen is None:  # nothing meets the SLA: the fastest option of each stage
            return PipelineConfig(tuple(min(opts, key=lambda o: (o[1], o[0].cores))[0] for opts in per_stage_options))
        return PipelineConfig(tuple(opts[i][0] for opts, i in zip(per_stage_options, chosen, strict=True)))

    def _pinned(self, config: PipelineConfig) -> PipelineConfig:
        """``config`` (what is in force) with the pinned variants, batches and cores."""
        stages = []
        for s, sc in enumerate(config.stages):
            stages.append(
                sc.with_(
                    variant=self.pinned_variants[s] if self.pinned_variants else sc.variant,
                    batch=self.pinned_batch[s] if self.pinned_batch else sc.batch,
                    cores=self.pinned_cores[s] if self.pinned_cores else sc.cores,
                )
            )
        return PipelineConfig(tuple(stages))

    def _start(self, state: PipelineState, config: PipelineConfig) -> None:
        self._last_sync = int(state.time_s // SYNC_PERIOD_S)
        # like kube-controller-manager, seed the stabilisation window with the current replicas, so nothing
        # scales down during the first 300 s
        for window, sc in zip(self._recommendations, config.stages, strict=True):
            window.clear()
            window.append((state.time_s, sc.replicas))

    def decide(self, state: PipelineState) -> PipelineConfig:
        if state.last is None:  # a warm start: nothing runs yet, install the template
            load = float(state.arrival_rps.max()) if state.arrival_rps.size else 0.0
            config = self.template(load)
            self._start(state, config)
            return config
        # everything is re-read every decision, never remembered (a manual `kubectl scale` is seen)
        observed = self._pinned(state.config)
        if self._last_sync is None:  # the first decision on a running pipeline: start the windows from it
            self._start(state, observed)
            return observed
        sync = int(state.time_s // SYNC_PERIOD_S)
        if sync == self._last_sync:
            return observed
        self._last_sync = sync
        stages = []
        for s, (st, sc) in enumerate(zip(self.spec.stages, observed.stages, strict=True)):
            metrics = state.last.stages[s]
            current = sc.replicas
            if not (math.isfinite(metrics.utilisation) and metrics.utilisation >= 0):
                # no utilisation (a missing busy metric) is no data: hold, never read it as 0% and scale down
                stages.append(sc)
                continue
            ratio = metrics.utilisation / self.target
            desired = current if abs(ratio - 1.0) <= TOLERANCE else math.ceil(current * ratio - 1e-9)
            desired = min(desired, max(current + SCALE_UP_PODS, int(SCALE_UP_FACTOR * current)))
            window = self._recommendations[s]
            window.append((state.time_s, desired))
            while window and window[0][0] < state.time_s - SCALE_DOWN_WINDOW_S:
                window.popleft()
            if desired < current:
                starting = metrics.replicas_serving < current
                desired = current if starting else min(current, max(r for _t, r in window))
            desired = max(st.min_replicas, min(st.max_replicas, desired))
            stages.append(sc.with_(replicas=desired))
        return PipelineConfig(tuple(stages))
