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

This module is the math only; `ilp_baseline.infadapter_policy` turns it into a `Policy`.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rlscale.errors import RlscaleError
from rlscale.spec import data_dir

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
        # most accurate first: the load split's order
        self.variants = tuple(sorted(variants, key=lambda v: -v.accuracy))
        self.max_cores, self.min_cores = int(max_cores), int(min_cores)
        self.alpha, self.beta = float(alpha), float(beta)
        m = len(self.variants)
        choices = (0, *range(self.min_cores, self.max_cores + 1))
        vectors = [n for n in itertools.product(choices, repeat=m) if 0 < sum(n) <= self.max_cores]
        self.cores = np.array(vectors, dtype=np.int64).reshape(-1, m)  # (K, M)
        table = np.array(
            [[v.capacity.planned_rps(n, coef) for n in range(self.max_cores + 1)] for v in self.variants],
            dtype=np.int64,
        )  # (M, max_cores + 1)
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
        load within ``max_cores``."""
        lam = _load(lam)
        if lam == 0:
            return None
        top = self.capacity_table[0]  # the most accurate variant
        reach = np.flatnonzero(top[self.min_cores :] >= lam)
        limit = self.min_cores + int(reach[0]) if reach.size else self.max_cores
        m = len(self.variants)
        rows = []
        for i in range(m):
            fits = np.flatnonzero(self.capacity_table[i, self.min_cores : limit + 1] >= lam)
            if fits.size:
                row = np.zeros(m, dtype=np.int64)
                row[i] = self.min_cores + int(fits[0])
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
