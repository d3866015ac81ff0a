"""The Kubernetes Horizontal Pod Autoscaler's algorithm on CPU utilisation, per stage; variants and batch fixed.

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
"""

from __future__ import annotations

import math
from collections import deque

from rlscale.model import plan_fixed_variants
from rlscale.spec import PipelineSpec
from rlscale.types import PipelineConfig, PipelineState

TARGET_UTILISATION = 0.8
TOLERANCE = 0.1
SYNC_PERIOD_S = 15.0
SCALE_DOWN_WINDOW_S = 300.0
SCALE_UP_PODS = 4
SCALE_UP_FACTOR = 2.0


def _with_observed_replicas(fixed: PipelineConfig, observed: PipelineConfig) -> PipelineConfig:
    """``fixed``'s variants, batches and cores with ``observed``'s replicas (what the cluster reports now)."""
    return PipelineConfig(
        tuple(sc.with_(replicas=seen.replicas) for sc, seen in zip(fixed.stages, observed.stages, strict=True))
    )


class HPAPolicy:
    """Replicas by the HPA algorithm; variant, batch and cores fixed to a plan for the first interval's load.

    The current replicas are read from ``state.config`` every decision (the configuration the cluster reports).

    Args:
        spec: the pipeline.
        variants: the fixed variant of every stage.
        target: target CPU utilisation (0.8).
    """

    def __init__(self, spec: PipelineSpec, variants: list[str], target: float = TARGET_UTILISATION) -> None:
        self.spec = spec
        self.variants = list(variants)
        self.target = target
        self.name = "hpa"
        self._config: PipelineConfig | None = None  # the plan whose variants, batches and cores stay fixed
        self._last_sync = -1
        self._recommendations: list[deque[tuple[float, int]]] = [deque() for _ in spec.stages]

    def decide(self, state: PipelineState) -> PipelineConfig:
        if self._config is None or state.last is None:
            load = float(state.arrival_rps.max()) if state.arrival_rps.size else 0.0
            self._config = plan_fixed_variants(self.spec, self.variants, load)
            self._last_sync = int(state.time_s // SYNC_PERIOD_S)
            # like kube-controller-manager, seed the stabilisation window with the current replicas, so nothing
            # scales down during the first 300 s
            for window, sc in zip(self._recommendations, self._config.stages, strict=True):
                window.append((state.time_s, sc.replicas))
            return self._config
        # current replicas are re-read every decision, never remembered (a manual `kubectl scale` is seen)
        observed = _with_observed_replicas(self._config, state.config)
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
