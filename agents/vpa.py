"""The Kubernetes Vertical Pod Autoscaler's recommender and updater on CPU, per stage; it changes cores only.

Source: kubernetes/autoscaler, ``vertical-pod-autoscaler/`` at commit 55c37cd5eb55 (every default below is cited,
file and flag, in ``rlscale/data/PROVENANCE.md``). The code here is our own, written from reading it.

**Recommender** (``pkg/recommender``), per stage (one Deployment, one container, CPU request = limit = ``cores``):

- Usage samples go into a decaying histogram: exponential buckets, the first ``[0, 0.01)`` cores, each next one 5%
  wider, up to 1000 cores (176 buckets); a sample's weight is multiplied by ``2^((t - t_ref) / 24 h)``, so a sample
  loses half its importance per 24 h of age relative to newer ones. A percentile is the *end* of the bucket where
  the cumulative weight first reaches ``p * total`` (no interpolation).
- Every CPU sample has the weight 0.1 (``minSampleWeight``). Before VPA 1.4 (commit ca812b36a3, Feb 2025) the
  weight was ``max(request, 0.1)`` cores, which made the history decay faster after a request grew;
  ``weight_by_request=True`` reproduces that older rule.
- target = p90 * 1.15; lower bound = p50 * 1.15 * (1 + 0.001 / confidence)^-2; upper bound =
  p95 * 1.15 * (1 + 1 / confidence); each at least 25 millicores. ``confidence`` = min(history span in days,
  samples / 1440): about the number of days of history at one sample a minute. With a short history the bounds
  are wide (at confidence 0 they are [25m, unbounded]), so the updater rarely sees a request "outside" them in
  the first hours. Amounts are integer millicores, truncated after every step, as the recommender's are.
- The recommendation (target and both bounds) is capped to the VPA's ``minAllowed`` / ``maxAllowed``: here the
  stage's smallest and largest core count.

**Updater** (``pkg/updater``), every 60 s, per stage whose replicas are all serving and number at least 2
(``--min-replicas``; a real updater never evicts a Deployment's pods below it): the stage gets the target when
its request (``cores``) is outside [lower bound, upper bound], or when its pods are at least 12 h old
(``--in-recommendation-bounds-eviction-lifetime-threshold``) and ``|request - target| / request >= 0.1``
(``--pod-update-threshold``). Applying means a new `StageConfig` with new cores: the simulator treats it as a
rollout, as a VPA eviction followed by the admission controller's new request is one.

**InfAdapter's applier** (``updater="infadapter"``): InfAdapter (Salmani et al., EuroMLSys 2023; commit 398b18f,
cited in ``rlscale/data/PROVENANCE.md``) runs its "VPA" baseline with the recommender only (``updateMode: Off``,
``minAllowed`` 2 / ``maxAllowed`` 20 cores) and applies the target itself, in its adapter, every 30 s decision
(``main.py``: ``solver()`` with ``solver_type`` ``v`` and ``make_decision`` with ``VPA_TYPE`` ``P``): the target is
rounded up to whole cores and the Deployment gets it, except that a target not above the current cores is skipped
while a counter is below ``STABILIZATION_INTERVAL`` 4 (each skip counts one; so a lower-or-equal target is applied
at the fifth decision in a row), and the counter resets whenever a decision goes through. Here: every decision,
per stage, the capped target rounded up to the core grid, by that rule, with a counter per stage (InfAdapter has
one stage); no ``min_replicas`` condition, no 12 h rule, no 60 s updater tick. What stays: no data or a replica
still starting is no action (and leaves the counter as it is: InfAdapter would count a decision without a
recommendation as a skip), and the core budget is kept as below. The recommender is the same.

**Mapping onto the simulator and what differs from a cluster:**

- Sample: one per serving replica per recommender tick (every 60 s of simulated time, ``--recommender-interval``)
  of ``min(utilisation, 1) * cores``, the cores a replica uses while busy, from the interval that just ended (the
  simulator's per-stage ``utilisation`` is busy replica-seconds / serving replica-seconds; a replica never uses
  more than its limit). Every replica of a stage gets the stage's mean: the simulator reports no per-replica
  usage, and metrics-server reports a rate over a short window much like one interval. Where one decision covers
  several ticks (an interval longer than 60 s), each tick gets that interval's sample. ``cores`` is the request
  in force (``state.config``); during the interval of a rollout the old replicas still serving use their old
  cores, which this ignores.
- No data: a stage whose utilisation is missing, NaN, negative or not finite, or which has no serving replica,
  gets no sample that tick, and the updater leaves it alone that tick (a real updater would still act on the last
  recommendation; rlscale's rule is never to act when the metrics are missing). Before a stage's first sample it
  has no recommendation and nothing changes.
- The recommender and updater tick on 60 s boundaries of the decision clock; a decision that crosses a boundary
  records the samples first and then runs the updater on the new recommendation (a cluster's two processes tick
  independently, up to a minute apart).
- The target is rounded *up* to the stage's core grid (``spec.stages[i].cores``; a cluster rounds to the
  millicore, ``--round-cpu-millicores=1``); a rounded target equal to the request changes nothing. Raising cores
  never takes the pipeline over ``spec.core_budget``: scale-downs go first, then scale-ups in the updater's order
  (growing stages first, larger relative change first), each taking the largest core count that still fits; a
  cluster would instead leave the recreated pod Pending.
- A real updater evicts at most half the replicas per run (``--eviction-tolerance`` 0.5) and the Deployment
  recreates them (break-before-make); the simulator replaces every replica of the stage in one make-before-break
  rollout, the old replicas serving until the new ones are ready. Memory, OOM handling
  (``--evict-after-oom-threshold``), in-place resizing and the eviction rate limit are not modelled.
- Pod age: the pods in force when the policy starts are ``initial_pod_age_s`` old (default 12 h: a VPA created
  for a Deployment that has been running, so the first recommendation may be applied at once); pods whose
  variant, batch or cores change are new from the first decision that sees them (a 10 s error against 12 h).
- Variant, batch and replicas stay as deployed (``state.config``, re-read every decision). Only on a warm start
  (a state without a last interval: the simulator's first decision) does it choose the Deployment: IPA's FA2-high
  variants (as ``hpa`` does) with the cheapest batch, cores and replicas for the first interval's load that give
  every stage at least ``min_replicas`` replicas where the stage allows that many, so the updater can act (the
  ``infadapter`` updater needs no such floor: its warm start keeps the stage's own ``min_replicas``).
- Pins (``--vpa-variant``, ``--vpa-cores``): a pinned variant is the Deployment's, set every decision as
  ``hpa``'s pin is; pinned cores are only the *initial* request (a warm start installs them, the first decision
  on a running pipeline sets them), which the updater changes from then on. ``variants=["resnet152"]``,
  ``cores=[20]`` on ``infadapter`` is InfAdapter's ``vpa-152`` start (``initial_states``: 20 cores, one pod).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from agents.hpa import per_stage
from ilp_baseline.problem import fa2_high_variants
from rlscale.errors import RlscaleError
from rlscale.model import stage_options
from rlscale.pareto import StageArrays, frontier_dp
from rlscale.spec import MAX_REPLICAS, VPA_UPDATERS, PipelineSpec
from rlscale.types import PipelineConfig, PipelineState, StageConfig, StageMetrics

# --- recommender (pkg/recommender; PROVENANCE.md cites each)
CPU_HISTOGRAM_MAX_CORES = 1000.0
CPU_HISTOGRAM_FIRST_BUCKET_CORES = 0.01
CPU_HISTOGRAM_RATIO = 1.05
MIN_SAMPLE_WEIGHT = 0.1
HISTOGRAM_EPSILON = 0.001 * MIN_SAMPLE_WEIGHT
CPU_HALF_LIFE_S = 24 * 3600.0
MAX_DECAY_EXPONENT = 100
TARGET_PERCENTILE = 0.9
LOWER_BOUND_PERCENTILE = 0.5
UPPER_BOUND_PERCENTILE = 0.95
SAFETY_MARGIN = 0.15
POD_MIN_CPU_MILLICORES = 25
CONFIDENCE_INTERVAL_S = 24 * 3600.0
LOWER_BOUND_CONFIDENCE = (0.001, -2.0)  # (multiplier, exponent)
UPPER_BOUND_CONFIDENCE = (1.0, 1.0)
MAX_RESOURCE_AMOUNT = 10**14
RECOMMENDER_INTERVAL_S = 60.0
# --- updater (pkg/updater)
UPDATER_INTERVAL_S = 60.0
UPDATE_THRESHOLD = 0.1
POD_LIFETIME_UPDATE_THRESHOLD_S = 12 * 3600.0
MIN_REPLICAS = 2
MAX_MARGIN = 10.0
# --- InfAdapter's applier (auto_tuner/starter.py, auto_tuner/adapter/main.py at 398b18f)
STABILIZATION_INTERVAL = 4
UPDATERS = VPA_UPDATERS


class DecayingHistogram:
    """VPA's CPU histogram: exponentially growing buckets whose weights decay with a half-life.

    Args:
        max_value: the last bucket starts at or above this value (cores).
        first_bucket: the first bucket covers ``[0, first_bucket)``; bucket ``n`` is ``first_bucket * ratio^n`` wide.
        ratio: growth of the bucket width, > 1.
        epsilon: a bucket lighter than this counts as empty.
        half_life_s: a sample loses half its weight relative to one this much younger.
    """

    def __init__(
        self,
        *,
        max_value: float = CPU_HISTOGRAM_MAX_CORES,
        first_bucket: float = CPU_HISTOGRAM_FIRST_BUCKET_CORES,
        ratio: float = CPU_HISTOGRAM_RATIO,
        epsilon: float = HISTOGRAM_EPSILON,
        half_life_s: float = CPU_HALF_LIFE_S,
    ) -> None:
        if not (max_value > 0 and first_bucket > 0 and ratio > 1 and epsilon > 0 and half_life_s > 0):
            raise ValueError("max_value, first_bucket, epsilon and half_life_s must be > 0 and ratio > 1")
        self.first_bucket = first_bucket
        self.ratio = ratio
        self.epsilon = epsilon
        self.half_life_s = half_life_s
        self.num_buckets = int(math.ceil(math.log(max_value * (ratio - 1) / first_bucket + 1) / math.log(ratio))) + 1
        self.weights = np.zeros(self.num_buckets)
        self.total_weight = 0.0
        self.min_bucket = self.num_buckets - 1  # the first non-empty bucket, or the last when empty
        self.max_bucket = 0  # the last non-empty bucket, or 0 when empty
        self.reference_s = 0.0  # always a whole number of half-lives

    def bucket_start(self, bucket: int) -> float:
        if bucket == 0:
            return 0.0
        return self.first_bucket * (self.ratio**bucket - 1) / (self.ratio - 1)

    def find_bucket(self, value: float) -> int:
        if value < self.first_bucket:
            return 0
        bucket = int(math.log(value * (self.ratio - 1) / self.first_bucket + 1) / math.log(self.ratio))
        return min(bucket, self.num_buckets - 1)

    def is_empty(self) -> bool:
        return bool(self.weights[self.min_bucket] < self.epsilon)

    def add(self, value: float, weight: float, time_s: float) -> None:
        """Add a sample of ``value`` taken at ``time_s`` with ``weight`` (before the decay)."""
        if not weight >= 0:
            raise ValueError(f"sample weight must be >= 0, got {weight}")
        weight *= self._decay_factor(time_s)
        bucket = self.find_bucket(value)
        self.weights[bucket] += weight
        self.total_weight += weight
        if bucket < self.min_bucket and self.weights[bucket] >= self.epsilon:
            self.min_bucket = bucket
        if bucket > self.max_bucket and self.weights[bucket] >= self.epsilon:
            self.max_bucket = bucket

    def percentile(self, p: float) -> float:
        """The end of the bucket where the cumulative weight first reaches ``p`` of the total (0 when empty)."""
        if self.is_empty():
            return 0.0
        threshold = p * self.total_weight
        partial = 0.0
        bucket = self.min_bucket
        while bucket < self.max_bucket:
            partial += self.weights[bucket]
            if partial >= threshold:
                break
            bucket += 1
        if bucket < self.num_buckets - 1:
            return self.bucket_start(bucket + 1)
        return self.bucket_start(bucket)  # the last bucket has no end

    def _decay_factor(self, time_s: float) -> float:
        if time_s > self.reference_s + self.half_life_s * MAX_DECAY_EXPONENT:
            # renormalise before 2^exponent overflows: move the reference to now, scaling the weights down
            new_reference = math.floor(time_s / self.half_life_s + 0.5) * self.half_life_s
            exponent = math.floor((self.reference_s - new_reference) / self.half_life_s + 0.5)
            self._scale(math.ldexp(1.0, exponent))
            self.reference_s = new_reference
        return 2.0 ** ((time_s - self.reference_s) / self.half_life_s)

    def _scale(self, factor: float) -> None:
        self.weights[self.min_bucket : self.max_bucket + 1] *= factor
        self.total_weight *= factor
        last = self.num_buckets - 1
        while self.weights[self.min_bucket] < self.epsilon and self.min_bucket < last:
            self.min_bucket += 1
        while self.weights[self.max_bucket] < self.epsilon and self.max_bucket > 0:
            self.max_bucket -= 1


def _amount(value: float) -> int:
    """A float as VPA's integer resource amount (millicores): truncated, within [0, 1e14]."""
    if value > MAX_RESOURCE_AMOUNT:
        return MAX_RESOURCE_AMOUNT
    return int(value) if value > 0 else 0


@dataclass(frozen=True)
class Recommendation:
    """One stage's CPU recommendation, in millicores (VPA's target and bounds)."""

    target_millicores: int
    lower_millicores: int
    upper_millicores: int

    def capped(self, min_millicores: int, max_millicores: int) -> Recommendation:
        """Each value within [min, max] (the capping post-processor with ``minAllowed`` / ``maxAllowed``)."""

        def cap(v: int) -> int:
            return min(max(v, min_millicores), max_millicores)

        return Recommendation(cap(self.target_millicores), cap(self.lower_millicores), cap(self.upper_millicores))


class CPUUsage:
    """One stage's aggregate CPU state: the histogram and the span and count of its samples."""

    def __init__(self) -> None:
        self.histogram = DecayingHistogram()
        self.first_sample_s: float | None = None
        self.last_sample_s: float | None = None
        self.samples = 0

    def add(self, usage_cores: float, time_s: float, weight: float, count: int = 1) -> None:
        """``count`` identical samples (one per replica) of ``usage_cores`` at ``time_s``, each of ``weight``."""
        self.histogram.add(_amount(usage_cores * 1000) / 1000, weight * count, time_s)
        self.first_sample_s = time_s if self.first_sample_s is None else min(self.first_sample_s, time_s)
        self.last_sample_s = time_s if self.last_sample_s is None else max(self.last_sample_s, time_s)
        self.samples += count

    def confidence(self, interval_s: float = CONFIDENCE_INTERVAL_S) -> float:
        """min(history span, samples at one a minute), in ``interval_s`` units (days by default)."""
        if self.first_sample_s is None or self.last_sample_s is None:
            return 0.0
        span = (self.last_sample_s - self.first_sample_s) / interval_s
        return min(span, self.samples / (interval_s / 60.0))


def recommend(
    usage: CPUUsage,
    *,
    target: float = TARGET_PERCENTILE,
    lower: float = LOWER_BOUND_PERCENTILE,
    upper: float = UPPER_BOUND_PERCENTILE,
    margin: float = SAFETY_MARGIN,
    min_millicores: int = POD_MIN_CPU_MILLICORES,
) -> Recommendation | None:
    """The recommender's target and bounds for one container's history (None before its first sample).

    Each estimator as VPA chains them: percentile, plus ``margin``, times the confidence factor (bounds only),
    at least ``min_millicores``.
    """
    if usage.samples == 0:
        return None
    confidence = usage.confidence()

    def estimate(p: float, multiplier: float = 0.0, exponent: float = 0.0) -> int:
        amount = _amount(usage.histogram.percentile(p) * 1000)
        amount += _amount(amount * margin)
        if exponent:
            factor = (
                (1.0 + multiplier / confidence) ** exponent if confidence > 0 else (0.0 if exponent < 0 else math.inf)
            )
            amount = _amount(amount * factor) if amount else 0
        return max(amount, min_millicores)

    return Recommendation(
        estimate(target), estimate(lower, *LOWER_BOUND_CONFIDENCE), estimate(upper, *UPPER_BOUND_CONFIDENCE)
    )


def _has_data(metrics: StageMetrics) -> bool:
    return math.isfinite(metrics.utilisation) and metrics.utilisation >= 0 and metrics.replicas_serving > 0


class VPAPolicy:
    """Cores per replica by the VPA's recommender and an updater; variant, batch and replicas as deployed.

    Args:
        spec: the pipeline.
        target: the target's CPU percentile, (0, 1] (``--target-cpu-percentile``, 0.9).
        margin: the safety margin fraction, [0, 10] (``--recommendation-margin-fraction``, 0.15).
        min_replicas: the ``kubernetes`` updater changes no stage with fewer replicas (``--min-replicas``, 2); its
            warm start gives every stage at least this many where it allows them. Unused by ``infadapter``.
        initial_pod_age_s: age of the pods in force when the policy starts (default 12 h: old enough for an
            in-bounds update).
        weight_by_request: weigh each sample by ``max(request, 0.1)`` cores as VPA did before 1.4 (default: 0.1).
        updater: who applies the recommendation: ``kubernetes`` (the VPA updater, the default) or ``infadapter``
            (InfAdapter's adapter: the target every decision, a lower one after 4 skipped decisions).
        variants: pin the variants: one per stage, or one name for every stage that offers it (None: as deployed;
            a warm start installs IPA's FA2-high variants).
        cores: the initial cores per replica: one per stage, or one for every stage (None: a warm start plans them).

    Raises:
        RlscaleError: a percentile outside (0, 1], a margin outside [0, 10], min_replicas outside [1, 10000], an
            unknown updater, or a variant or core count the stage does not offer.
    """

    def __init__(
        self,
        spec: PipelineSpec,
        target: float = TARGET_PERCENTILE,
        margin: float = SAFETY_MARGIN,
        *,
        min_replicas: int = MIN_REPLICAS,
        initial_pod_age_s: float = POD_LIFETIME_UPDATE_THRESHOLD_S,
        weight_by_request: bool = False,
        updater: str = "kubernetes",
        variants: Sequence[str] | None = None,
        cores: Sequence[int] | None = None,
    ) -> None:
        if not (math.isfinite(target) and 0 < target <= 1):
            raise RlscaleError(f"--vpa-target must be a percentile in (0, 1], got {target}")
        if not (math.isfinite(margin) and 0 <= margin <= MAX_MARGIN):
            raise RlscaleError(f"--vpa-margin must be a fraction in [0, {MAX_MARGIN:g}], got {margin}")
        if isinstance(min_replicas, bool) or not isinstance(min_replicas, int) or not 1 <= min_replicas <= MAX_REPLICAS:
            raise RlscaleError(f"--vpa-min-replicas must be an integer in [1, {MAX_REPLICAS}], got {min_replicas!r}")
        if updater not in UPDATERS:
            raise RlscaleError(f"--vpa-updater must be one of {', '.join(UPDATERS)}, got {updater!r}")
        self.spec = spec
        self.target = target
        self.margin = margin
        self.min_replicas = min_replicas
        self.initial_pod_age_s = float(initial_pod_age_s)
        self.weight_by_request = weight_by_request
        self.updater = updater
        self.pinned_variants = _pinned_variants(spec, variants)
        self.pinned_cores = _pinned_cores(spec, cores)
        self.variants = [  # a warm start's template
            pin or v
            for pin, v in zip(self.pinned_variants or [None] * len(spec.stages), fa2_high_variants(spec), strict=True)
        ]
        self.name = "vpa"
        self.usage = [CPUUsage() for _ in spec.stages]
        self._recommender_tick: int | None = None
        self._updater_tick: int | None = None
        self._templates: list[tuple[str, int, int]] = []  # (variant, batch, cores) in force, per stage
        self._pods_started_s: list[float] = []
        self._skipped: list[int] = []  # the infadapter updater's stabilisation counter, per stage

    # ------------------------------------------------------------------------------ the recommender

    def recommendation(self, stage: int) -> Recommendation | None:
        """Stage ``stage``'s recommendation capped to its core range, in millicores; None before any sample."""
        raw = recommend(self.usage[stage], target=self.target, margin=self.margin)
        if raw is None:
            return None
        cores = self.spec.stages[stage].cores
        return raw.capped(cores[0] * 1000, cores[-1] * 1000)

    def grid_cores(self, stage: int, millicores: int) -> int:
        """The stage's smallest core count >= ``millicores`` (its largest when none is)."""
        cores = self.spec.stages[stage].cores
        return next((c for c in cores if c * 1000 >= millicores), cores[-1])

    def _record(self, state: PipelineState, ticks: range) -> None:
        assert state.last is not None
        for s, (sc, metrics) in enumerate(zip(state.config.stages, state.last.stages, strict=True)):
            if not _has_data(metrics):
                continue  # no data is no sample, never a sample of 0
            usage_cores = min(metrics.utilisation, 1.0) * sc.cores
            weight = max(float(sc.cores), MIN_SAMPLE_WEIGHT) if self.weight_by_request else MIN_SAMPLE_WEIGHT
            for tick in ticks:
                self.usage[s].add(usage_cores, tick * RECOMMENDER_INTERVAL_S, weight, metrics.replicas_serving)

    # ------------------------------------------------------------------------------------ the updaters

    def _wanted(self, s: int, sc: StageConfig, metrics: StageMetrics, time_s: float) -> tuple[int, bool, float] | None:
        """(cores, grows, relative change) the VPA updater gives stage ``s`` now, or None to leave it."""
        if not _has_data(metrics) or sc.replicas < self.min_replicas or metrics.replicas_serving < sc.replicas:
            return None  # no data, too few replicas to evict from, or some not running yet
        rec = self.recommendation(s)
        if rec is None:
            return None
        request = sc.cores * 1000
        outside = request < rec.lower_millicores or request > rec.upper_millicores
        diff = abs(request - rec.target_millicores) / max(request, 1)
        if not outside:
            if time_s - self._pods_started_s[s] < POD_LIFETIME_UPDATE_THRESHOLD_S or diff < UPDATE_THRESHOLD:
                return None
        cores = self.grid_cores(s, rec.target_millicores)
        if cores == sc.cores:
            return None  # the recreated pods would get the request they have
        return cores, cores > sc.cores, diff

    def _applied(self, s: int, sc: StageConfig, metrics: StageMetrics) -> tuple[int, bool, float] | None:
        """(cores, grows, relative change) InfAdapter's applier gives stage ``s`` this decision, or None."""
        if not _has_data(metrics) or metrics.replicas_serving < sc.replicas:
            return None  # no data, or a replica still starting: no action, the counter as it is
        rec = self.recommendation(s)
        if rec is None:
            return None
        cores = self.grid_cores(s, rec.target_millicores)
        if cores <= sc.cores and self._skipped[s] < STABILIZATION_INTERVAL:
            self._skipped[s] += 1  # not above the current cores: stabilised
            return None
        self._skipped[s] = 0  # the decision goes through (an equal target changes nothing)
        if cores == sc.cores:
            return None
        return cores, cores > sc.cores, abs(cores - sc.cores) / sc.cores

    def _update(self, state: PipelineState, config: PipelineConfig) -> PipelineConfig:
        """``config`` (in force, pins applied) with the updater's new cores, within the core budget."""
        assert state.last is not None
        stages = list(config.stages)
        ups = []
        for s, (sc, metrics) in enumerate(zip(stages, state.last.stages, strict=True)):
            if self.updater == "infadapter":
                wanted = self._applied(s, sc, metrics)
            else:
                wanted = self._wanted(s, sc, metrics, state.time_s)
            if wanted is None:
                continue
            cores, grows, diff = wanted
            if grows:
                ups.append((diff, s, cores))
            else:
                stages[s] = sc.with_(cores=cores)
        for _diff, s, cores in sorted(ups, key=lambda u: (-u[0], u[1])):  # the updater's order: larger change first
            sc = stages[s]
            room = self.spec.core_budget - (PipelineConfig(tuple(stages)).total_cores - sc.replicas * sc.cores)
            fits = [c for c in self.spec.stages[s].cores if c <= cores and sc.replicas * c <= room]
            if fits and max(fits) > sc.cores:
                stages[s] = sc.with_(cores=max(fits))
        return PipelineConfig(tuple(stages))

    # ------------------------------------------------------------------------------------ the policy

    def template(self, load_rps: float) -> PipelineConfig:
        """What a warm start installs: the FA2-high (or pinned) variants with the cheapest batch, cores (where not
        pinned) and replicas for ``load_rps`` whose planned latency fits the SLA; with the ``kubernetes`` updater
        every stage has at least ``min_replicas`` replicas where it allows that many."""
        per_stage = []
        for s, (st, v) in enumerate(zip(self.spec.stages, self.variants, strict=True)):
            vpa_floor = self.min_replicas if self.updater == "kubernetes" else 1
            floor = min(st.max_replicas, max(st.min_replicas, vpa_floor))
            c_ok = [self.pinned_cores[s]] if self.pinned_cores else st.cores
            opts = [
                (o.config.with_(replicas=max(o.config.replicas, floor)), o.latency_s)
                for o in stage_options(st, load_rps, self.spec.objective.rho_max, variants=[v])
                if o.config.cores in c_ok
            ]
            if not opts:  # even max_replicas is not enough: the largest capacity allowed
                b, c = max(
                    ((b, c) for b in st.batch_sizes for c in c_ok),
                    key=lambda bc, st=st, v=v: st.latency.throughput_rps(v, *bc),
                )
                opts = [(StageConfig.one(v, b, st.max_replicas, c), st.latency.latency_s(v, b, c))]
            per_stage.append(opts)
        arrays = [
            StageArrays(
                np.array([lat for _c, lat in opts]),
                np.array([c.replicas * c.cores for c, _lat in opts], dtype=float),
                np.zeros(len(opts)),
                np.array([c.replicas * c.cores + 1e-6 * lat for c, lat in opts]),
            )
            for opts in per_stage
        ]
        chosen = frontier_dp(arrays, self.spec.sla_s, None)
        if chosen is None:  # nothing meets the SLA: the fastest option of each stage
            return PipelineConfig(tuple(min(opts, key=lambda o: (o[1], o[0].cores))[0] for opts in per_stage))
        return PipelineConfig(tuple(opts[i][0] for opts, i in zip(per_stage, chosen, strict=True)))

    def _pinned(self, config: PipelineConfig, *, initial: bool) -> PipelineConfig:
        """``config`` with the pinned variants, and on the ``initial`` decision the pinned cores."""
        if self.pinned_variants is None and (self.pinned_cores is None or not initial):
            return config
        stages = []
        for s, sc in enumerate(config.stages):
            variant = self.pinned_variants[s] if self.pinned_variants and self.pinned_variants[s] else sc.variant
            cores = self.pinned_cores[s] if initial and self.pinned_cores else sc.cores
            stages.append(sc.with_(variant=variant, cores=cores))
        return PipelineConfig(tuple(stages))

    def _start(self, state: PipelineState, config: PipelineConfig) -> None:
        self._recommender_tick = int(state.time_s // RECOMMENDER_INTERVAL_S)
        self._updater_tick = int(state.time_s // UPDATER_INTERVAL_S)
        self._templates = [(sc.variant, sc.batch, sc.cores) for sc in config.stages]
        self._pods_started_s = [state.time_s - self.initial_pod_age_s] * len(config.stages)
        self._skipped = [0] * len(config.stages)

    def decide(self, state: PipelineState) -> PipelineConfig:
        if state.last is None:  # a warm start: nothing runs yet, install the template
            load = float(state.arrival_rps.max()) if state.arrival_rps.size else 0.0
            config = self.template(load)
            self._start(state, config)
            return config
        if self._recommender_tick is None or self._updater_tick is None:  # the first decision on a running pipeline
            config = self._pinned(state.config, initial=True)
            self._start(state, config)
            return config
        observed = self._pinned(state.config, initial=False)  # re-read every decision: others' changes are seen
        for s, sc in enumerate(observed.stages):
            if (sc.variant, sc.batch, sc.cores) != self._templates[s]:  # its pods were recreated
                self._templates[s] = (sc.variant, sc.batch, sc.cores)
                self._pods_started_s[s] = state.time_s
        tick = int(state.time_s // RECOMMENDER_INTERVAL_S)
        if tick > self._recommender_tick:
            # one sample per tick crossed, at most as many ticks as the last interval spans
            span = max(1, math.ceil((state.last.end_s - state.last.start_s) / RECOMMENDER_INTERVAL_S))
            self._record(state, range(max(self._recommender_tick + 1, tick - span + 1), tick + 1))
            self._recommender_tick = tick
        if self.updater == "infadapter":  # InfAdapter's adapter applies the target every decision
            return self._update(state, observed)
        tick = int(state.time_s // UPDATER_INTERVAL_S)
        if tick == self._updater_tick:
            return observed
        self._updater_tick = tick
        return self._update(state, observed)


def _pinned_variants(spec: PipelineSpec, variants: Sequence[str] | None) -> list[str | None] | None:
    """One variant (or None: not pinned) per stage from ``--vpa-variant``: one name per stage, or one name pinned
    in every stage that offers it.

    Raises:
        RlscaleError: a stage without its named variant, a name no stage offers, or a wrong count.
    """
    if variants is None:
        return None
    names = list(variants)
    if len(names) == 1 and len(spec.stages) > 1:
        pins = [names[0] if names[0] in st.variant_names else None for st in spec.stages]
        if not any(pins):
            offered = sorted({v for st in spec.stages for v in st.variant_names})
            raise RlscaleError(f"--vpa-variant: no stage has a variant {names[0]!r} (variants: {', '.join(offered)})")
        return pins
    if len(names) != len(spec.stages):
        raise RlscaleError(
            f"--vpa-variant: give one name, or one per stage ({len(spec.stages)}: "
            f"{', '.join(st.name for st in spec.stages)}), got {len(names)}"
        )
    for st, name in zip(spec.stages, names, strict=True):
        if name not in st.variant_names:
            raise RlscaleError(
                f"--vpa-variant: stage {st.name} has no variant {name!r} (its variants: {', '.join(st.variant_names)})"
            )
    return names


def _pinned_cores(spec: PipelineSpec, cores: Sequence[int] | None) -> list[int] | None:
    """One initial core count per stage from ``--vpa-cores`` (one for every stage, or one per stage).

    Raises:
        RlscaleError: a core count a stage does not offer, or a wrong count.
    """
    values = per_stage(cores, spec, "--vpa-cores")
    if values is None:
        return None
    for st, c in zip(spec.stages, values, strict=True):
        if isinstance(c, bool) or not isinstance(c, int) or c not in st.cores:
            raise RlscaleError(
                f"--vpa-cores: stage {st.name} has no core count {c!r} (its cores: {', '.join(map(str, st.cores))})"
            )
    return values
