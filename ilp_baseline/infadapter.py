"""InfAdapter's decision problem (Salmani et al., EuroMLSys 2023), solved exactly, and its MS+ baseline.

InfAdapter serves one stage with a *set* of model variants at once. Every decision it chooses integer cores
``n_m`` for each variant m (0: unused; a variant in use gets at least ``min_cores``; ``sum n_m <= max_cores``) and
splits the predicted load ``lambda`` over the variants in use:

- capacity ``th_m(n) = floor(max(0, coef * (a_m * n + b_m')))`` where ``a_m, b_m`` is a least-squares line of the
  measured capacity (the highest arrival rate whose p99 meets the SLO) against cores, and ``b_m' =
  trunc(min(b_m, 0.99))`` (an integer intercept: 0 for a positive fit, rounded toward zero for a negative one), as
  its code computes it (``auto_tuner/adapter/reconfig.py``);
- load split: the variants in decreasing accuracy each take ``l_m = min(th_m(n_m), lambda - sum of the capacity of
  the more accurate ones)``; the plan must cover the load, ``sum th_m(n_m) >= lambda``;
- objective, maximised: ``sum_m (l_m / lambda) acc_m - alpha * sum_m n_m / max_cores - beta * LC``, where ``LC`` is
  the largest load time of a variant whose cores change to a new non-zero value, divided by the largest load time of
  all variants (a variant that goes to 0 or keeps its cores costs nothing).

InfAdapter solves this with Gurobi (and keeps a brute-force enumeration beside it). Here the enumeration is exact
and fast: every core vector is listed once per problem (a few thousand for five variants and 20 cores) with its
capacities and cost, and a decision is a vectorised argmax. Ties (equal objective to 1e-12) go to the fewest cores,
then to the first vector in enumeration order (variants from most to least accurate, cores ascending), a rule of
ours: InfAdapter's Gurobi returns whichever optimum it finds first.

MS+ (InfAdapter's baseline, ``reconfig_msp``): one variant at a time. For each variant, the fewest cores (from
``min_cores`` up to the cores at which the most accurate variant alone covers the load, else ``max_cores``) that
cover the load; the best of those single-variant plans by the same objective.

`InfAdapterPolicy` turns it into a `Policy` (``infadapter`` and ``ms-plus`` in the registry).
"""

from __future__ import annotations

import csv
import itertools
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from rlscale.errors import RlscaleError
from rlscale.interfaces import Predictor
from rlscale.spec import PipelineSpec, StageSpec, data_dir
from rlscale.types import PipelineConfig, PipelineState, StageConfig, VariantPool

log = logging.getLogger(__name__)

CAPACITY_COEF = 0.8
"""InfAdapter's ``CAPACITY_COEF``: plans use 80% of the fitted capacity."""
INTERCEPT_CAP = 0.99
"""InfAdapter caps the fitted intercept at 0.99 before truncating it to an integer."""
TIE_TOLERANCE = 1e-12
FIT_CORES = (1, 2, 4, 8, 16)
"""The core counts InfAdapter fits its capacity lines to (``train_capacity_models.py``)."""


def capacity_file() -> Path:
    """The bundled capacities InfAdapter measured (rlscale/data/infadapter_capacity.csv, PROVENANCE.md)."""
    return data_dir() / "infadapter_capacity.csv"


@dataclass(frozen=True)
class CapacityLine:
    """One variant's capacity fit: ``capacity(n) ~ slope * n + intercept`` (requests/s at n cores)."""

    slope: float
    intercept: float

    @classmethod
    def fit(cls, cores: Sequence[float], capacity_rps: Sequence[float]) -> CapacityLine:
        """Least squares over measured (cores, capacity) points (at least two distinct core counts)."""
        x, y = np.asarray(cores, dtype=float), np.asarray(capacity_rps, dtype=float)
        if x.shape != y.shape or x.size < 2 or np.unique(x).size < 2:
            raise RlscaleError("a capacity line needs at least two points at distinct core counts")
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            raise RlscaleError("capacity points must be finite numbers")
        slope, intercept = np.polyfit(x, y, 1)
        return cls(float(slope), float(intercept))

    @classmethod
    def load(cls, path: Path | None = None, fit_cores: Sequence[int] = FIT_CORES) -> dict[str, CapacityLine]:
        """Each variant's line, fitted to the ``fit_cores`` rows of a ``variant,cores,capacity_rps`` CSV (default:
        the bundled one)."""
        path = Path(path) if path is not None else capacity_file()
        points: dict[str, list[tuple[float, float]]] = {}
        try:
            with open(path, newline="", encoding="utf-8") as fh:
                for row in csv.DictReader(fh):
                    if int(row["cores"]) in fit_cores:
                        points.setdefault(row["variant"], []).append((float(row["cores"]), float(row["capacity_rps"])))
        except (OSError, KeyError, ValueError) as exc:
            raise RlscaleError(f"{path}: unreadable capacity table ({exc})") from None
        return {v: cls.fit([c for c, _ in pts], [y for _, y in pts]) for v, pts in points.items()}

    def planned_rps(self, cores: int, coef: float = CAPACITY_COEF) -> int:
        """InfAdapter's planning capacity at ``cores`` (0 cores: 0)."""
        if cores <= 0:
            return 0
        intercept = math.trunc(min(self.intercept, INTERCEPT_CAP))
        return int(math.floor(max(0.0, coef * (self.slope * cores + intercept))))


@dataclass(frozen=True)
class Variant:
    """A variant as InfAdapter sees it: accuracy, model load time and capacity line."""

    name: str
    accuracy: float
    load_time_s: float
    capacity: CapacityLine


@dataclass(frozen=True)
class Decision:
    """A solved decision: cores and load (rps) per variant, in the problem's variant order; zero = unused."""

    cores: tuple[int, ...]
    load_rps: tuple[int, ...]
    objective: float

    @property
    def total_cores(self) -> int:
        return sum(self.cores)


class InfAdapterProblem:
    """InfAdapter's problem for one stage: every core vector enumerated once, decisions by argmax.

    Args:
        variants: the candidate variants (any order; the load goes to the most accurate first).
        max_cores: InfAdapter's ``MAX_CPU`` (20 in its evaluation).
        min_cores: cores of a variant in use, at least (2).
        alpha, beta: the cost and loading-time weights (0.05 and 0.001 in its code).
        coef: the capacity coefficient (0.8).
    """

    def __init__(
        self,
        variants: Sequence[Variant],
        *,
        max_cores: int,
        min_cores: int = 2,
        core_choices: Sequence[int] | None = None,
        max_pools: int | None = None,
        alpha: float = 0.05,
        beta: float = 0.001,
        coef: float = CAPACITY_COEF,
    ) -> None:
        if not variants:
            raise RlscaleError("InfAdapter needs at least one variant")
        if len({v.name for v in variants}) != len(variants):
            raise RlscaleError("InfAdapter's variants must have distinct names")
        if not 1 <= min_cores <= max_cores:
            raise RlscaleError(f"need 1 <= min_cores <= max_cores, got {min_cores}, {max_cores}")
        if max_pools is not None and max_pools < 1:
            raise RlscaleError(f"max_pools must be >= 1, got {max_pools}")
        # most accurate first: the load split's order
        self.variants = tuple(sorted(variants, key=lambda v: -v.accuracy))
        self.max_cores = int(max_cores)
        grid = range(int(min_cores), self.max_cores + 1) if core_choices is None else core_choices
        self.core_choices = tuple(sorted({int(c) for c in grid if 1 <= int(c) <= self.max_cores}))
        if not self.core_choices:
            raise RlscaleError(f"no core choice within 1..{self.max_cores}")
        self.min_cores = self.core_choices[0]
        self.alpha, self.beta = float(alpha), float(beta)
        m = len(self.variants)
        vectors = [
            n
            for n in itertools.product((0, *self.core_choices), repeat=m)
            if 0 < sum(n) <= self.max_cores and (max_pools is None or sum(x > 0 for x in n) <= max_pools)
        ]
        self.cores = np.array(vectors, dtype=np.int64).reshape(-1, m)  # (K, M)
        table = np.array(
            [[v.capacity.planned_rps(n, coef) for n in range(self.max_cores + 1)] for v in self.variants],
            dtype=np.int64,
        )  # (M, max_cores + 1): planned capacity of each variant at 0..max_cores cores
        self.capacity_table = table
        self.capacity = table[np.arange(m), self.cores]  # (K, M) planned capacity per variant
        self.total_capacity = self.capacity.sum(axis=1)
        self.total_cores = self.cores.sum(axis=1)
        self.accuracy = np.array([v.accuracy for v in self.variants])
        load_times = np.array([v.load_time_s for v in self.variants])
        self._load_share = load_times / load_times.max() if load_times.max() > 0 else np.zeros(m)

    def index(self, cores_by_name: Mapping[str, int]) -> tuple[int, ...]:
        """A ``{variant: cores}`` mapping (variants not named: 0) as a core vector in this problem's order."""
        unknown = set(cores_by_name) - {v.name for v in self.variants}
        if unknown:
            raise RlscaleError(f"unknown variants {sorted(unknown)}")
        return tuple(int(cores_by_name.get(v.name, 0)) for v in self.variants)

    def split(self, lam: int, capacity: np.ndarray) -> np.ndarray:
        """The load each variant takes (most accurate first), for capacity rows of shape (..., M)."""
        before = np.cumsum(capacity, axis=-1) - capacity
        return np.clip(lam - before, 0, capacity)

    def objective(self, lam: int, cores: np.ndarray, load: np.ndarray, previous: Sequence[int]) -> np.ndarray:
        """The objective of rows (cores, their load split) against the core vector in force."""
        prev = np.asarray(previous, dtype=np.int64)
        accuracy = (load * self.accuracy).sum(axis=-1) / lam
        changed = (cores != 0) & (cores != prev)
        load_cost = np.where(changed, self._load_share, 0.0).max(axis=-1)
        return accuracy - self.alpha * cores.sum(axis=-1) / self.max_cores - self.beta * load_cost

    def solve(self, lam: int, previous: Sequence[int]) -> Decision | None:
        """The optimum for load ``lam`` (requests/s, an integer as InfAdapter plans it) given the core vector in
        force, or None when no vector covers the load within ``max_cores``."""
        lam = _load(lam)
        if lam == 0:
            return None
        ok = np.flatnonzero(self.total_capacity >= lam)
        if ok.size == 0:
            return None
        cores, capacity = self.cores[ok], self.capacity[ok]
        load = self.split(lam, capacity)
        f = self.objective(lam, cores, load, previous)
        best = _argmax_fewest_cores(f, self.total_cores[ok])
        return Decision(tuple(int(x) for x in cores[best]), tuple(int(x) for x in load[best]), float(f[best]))

    def solve_single(self, lam: int, previous: Sequence[int]) -> Decision | None:
        """MS+: the best single-variant plan (InfAdapter's ``reconfig_msp``), or None when no variant covers the
        load within ``max_cores``. Each variant gets the fewest cores that cover the load, searched up to the cores
        at which the most accurate variant alone covers it (else up to ``max_cores``)."""
        lam = _load(lam)
        if lam == 0:
            return None
        choices = np.array(self.core_choices)
        top = self.capacity_table[0, choices]  # the most accurate variant
        limit = int(choices[np.argmax(top >= lam)]) if (top >= lam).any() else self.max_cores
        choices = choices[choices <= limit]
        m = len(self.variants)
        rows = []
        for i in range(m):
            covers = self.capacity_table[i, choices] >= lam
            if covers.any():
                row = np.zeros(m, dtype=np.int64)
                row[i] = int(choices[np.argmax(covers)])
                rows.append(row)
        if not rows:
            return None
        cores = np.array(rows)
        load = np.where(cores > 0, lam, 0)
        f = self.objective(lam, cores, load, previous)
        best = _argmax_fewest_cores(f, cores.sum(axis=1))
        return Decision(tuple(int(x) for x in cores[best]), tuple(int(x) for x in load[best]), float(f[best]))


def _load(lam: int) -> int:
    if not (isinstance(lam, (int, np.integer)) and lam >= 0):
        raise RlscaleError(f"InfAdapter plans for an integer load >= 0, got {lam!r}")
    return int(lam)


def _argmax_fewest_cores(f: np.ndarray, cores: np.ndarray) -> int:
    """The first row among the best objectives (within `TIE_TOLERANCE`) with the fewest cores."""
    top = np.flatnonzero(f >= f.max() - TIE_TOLERANCE)
    return int(top[np.argmin(cores[top])])


# --- the policy ----------------------------------------------------------------------------------------------------

HEADROOM = 1.10
"""InfAdapter plans for ``int(1.1 x`` the predicted load) (``LSTM_PREDICTION_ERROR_PERCENTAGE`` 10)."""
STABILIZATION = 4
"""Decisions in a row InfAdapter skips while the planned load does not rise (``STABILIZATION_INTERVAL``)."""
ALPHA, BETA = 0.05, 0.001
"""InfAdapter's cost and loading-time weights (``ALPHA``, ``BETA`` in its starter)."""


def profile_capacity_lines(stage: StageSpec) -> dict[str, CapacityLine]:
    """Capacity lines for variants InfAdapter never measured: each variant's batch-1 throughput ``1 / l(v, 1, c)``
    over the stage's core grid, fitted by least squares (one point: a line through the origin)."""
    lines = {}
    for v in stage.variant_names:
        cores = list(stage.cores)
        rps = [stage.latency.throughput_rps(v, 1, c) for c in cores]
        lines[v] = CapacityLine.fit(cores, rps) if len(cores) > 1 else CapacityLine(rps[0] / cores[0], 0.0)
    return lines


class InfAdapterPolicy:
    """InfAdapter (``infadapter``) or its MS+ baseline (``ms-plus``) as a `Policy` for a single-stage pipeline.

    Every interval: predict the load (``predictor``, InfAdapter's `rlscale.predictors.MinutePeakPredictor` in the
    registry), plan for ``int(headroom x`` it), and, unless the planned load did not rise and fewer than
    ``stabilization`` decisions in a row have been skipped (InfAdapter's scale-down stabilisation: a load at or
    below the one in force is acted on only at the fifth decision in a row), solve `InfAdapterProblem` exactly
    against the cores in force. A variant with ``n`` cores is one pool of one replica with ``n`` cores, batch 1,
    and the share of the load the split gives it (`rlscale.types.StageConfig` pools, most accurate first). When no
    plan covers the load: the least accurate variant with the most cores (InfAdapter's fallback).

    Where this differs from InfAdapter's testbed (DESIGN.md section 7; RESULTS): the first decision is the warm
    one every rlscale policy takes at time 0 (InfAdapter waits 2 minutes from its initial ResNet152 x 20 cores);
    its LSTM is not public, so the predictor's long-history branch is IPA's LSTM; plans use the spec's core grid
    (``stages[0].cores``), core budget and ``max_pools`` (InfAdapter: cores 2..20, 20 cores, no pool limit); the
    weights ``alpha`` and ``beta`` are InfAdapter's own (its objective, not the spec's).

    Args:
        spec: a single-stage pipeline.
        predictor: the load predictor.
        single: MS+ (one variant at a time, `InfAdapterProblem.solve_single`) instead of InfAdapter.
        headroom, stabilization, alpha, beta: InfAdapter's margin, stabilisation and weights.
        capacity: capacity lines by variant; default the bundled measurements where they cover every variant
            (InfAdapter's ResNets), else `profile_capacity_lines`.
    """

    def __init__(
        self,
        spec: PipelineSpec,
        predictor: Predictor,
        *,
        single: bool = False,
        headroom: float = HEADROOM,
        stabilization: int = STABILIZATION,
        alpha: float = ALPHA,
        beta: float = BETA,
        capacity: Mapping[str, CapacityLine] | None = None,
        name: str | None = None,
    ) -> None:
        name = name or ("ms-plus" if single else "infadapter")
        if len(spec.stages) != 1:
            raise RlscaleError(f"{name} plans single-stage pipelines; {spec.name} has {len(spec.stages)} stages")
        if not headroom > 0 or stabilization < 0:
            raise RlscaleError(f"need headroom > 0 and stabilization >= 0, got {headroom}, {stabilization}")
        stage = spec.stages[0]
        if capacity is None:
            bundled = CapacityLine.load()
            capacity = bundled if set(stage.variant_names) <= set(bundled) else profile_capacity_lines(stage)
        missing = [v for v in stage.variant_names if v not in capacity]
        if missing:
            raise RlscaleError(f"{name}: no capacity line for {', '.join(missing)}")
        variants = [Variant(v.name, v.accuracy, v.startup_s, capacity[v.name]) for v in stage.variants]
        self.spec, self.stage = spec, stage
        self.predictor = predictor
        self.single = bool(single)
        self.name = name
        self.headroom = float(headroom)
        self.stabilization = int(stabilization)
        self.problem = InfAdapterProblem(
            variants,
            max_cores=spec.core_budget,
            core_choices=stage.cores,
            max_pools=None if single else stage.max_pools,
            alpha=alpha,
            beta=beta,
        )
        self.batch = min(stage.batch_sizes)
        self.planned_rps: int | None = None  # the load the configuration in force was planned for
        self.skipped = 0
        self.infeasible_decisions = 0
        self.last_load_rps = 0.0

    def decide(self, state: PipelineState) -> PipelineConfig:
        if state.last is None:  # a warm start (an episode's first decision): nothing is planned yet
            self.planned_rps, self.skipped = None, 0
        lam = int(self.headroom * max(0.0, float(self.predictor.predict(state))))
        self.last_load_rps = float(lam)
        if self.planned_rps is not None and lam <= self.planned_rps and self.skipped < self.stabilization:
            self.skipped += 1
            log.debug(
                "t=%.0fs %s holds: %d rps <= %d planned (%d in a row)",
                state.time_s,
                self.name,
                lam,
                self.planned_rps,
                self.skipped,
            )
            return state.config
        self.skipped = 0
        self.planned_rps = lam
        previous = self.problem.index(
            {
                p.variant: p.replicas * p.cores
                for s in state.config.stages
                for p in s.pools
                if p.variant in self.stage.variant_names
            }
        )
        decision = (self.problem.solve_single if self.single else self.problem.solve)(lam, previous)
        if decision is None:
            self.infeasible_decisions += 1
            config = self._fallback()
            log.warning("t=%.0fs %s: no plan covers %d rps; falling back to %s", state.time_s, self.name, lam, config)
            return config
        pools = [
            VariantPool(v.name, self.batch, 1, n, share=load / lam)
            for v, n, load in zip(self.problem.variants, decision.cores, decision.load_rps, strict=True)
            if n > 0 and load > 0
        ]
        config = PipelineConfig((StageConfig.of_pools(_normalised(pools)),))
        if config != state.config:
            log.debug("t=%.0fs %s plans for %d rps: %s", state.time_s, self.name, lam, config)
        return config

    def _fallback(self) -> PipelineConfig:
        cheapest = self.stage.cheapest_variant
        return PipelineConfig((StageConfig.one(cheapest, self.batch, 1, self.problem.core_choices[-1]),))


def _normalised(pools: list[VariantPool]) -> list[VariantPool]:
    """Shares rescaled to sum to exactly 1 in floating point (the last pool takes the rounding)."""
    if len(pools) == 1:
        return [replace(pools[0], share=1.0)]
    head = pools[:-1]
    return [*head, replace(pools[-1], share=1.0 - math.fsum(p.share for p in head))]
