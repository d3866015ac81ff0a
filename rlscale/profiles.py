"""Latency profiles and the latency model ``l(variant, batch, cores)``, a distribution (DESIGN.md section 3).

A profile is a CSV table of points ``variant,batch,cores,latency_s,source,kind``: the p99 time (seconds) one
replica with ``cores`` cores takes to process one batch of ``batch`` requests. ``kind`` is ``measured`` or
``derived`` (how it was derived is written in ``rlscale/data/PROVENANCE.md``).

A profile may say more, in optional columns (`DISTRIBUTION_COLUMNS`; an empty cell is "not measured"):
``p50_s``, ``mean_s`` and ``p90_s`` of the same runs; ``overhead_s``, the serving cost of one request on the
replica's own core (CPU seconds a request: HTTP, decoding, the server's event loop; measured by ``rlscale profile
--url``); ``delay_s``, time a request spends in the stage outside any core (the network, the caller's side of the
call): a fixed delay added to its stage latency, no work on a core; and ``jitter_s``, the mean of an exponential
time added to that delay, drawn per request (the scheduler, a client sharing the core). ``rlscale calibrate`` fits
the last three to real runs (`rlscale.calibrate.fit`). The run times themselves may sit beside the profile in
``NAME.runs.csv`` (`runs_path`: ``variant,batch,cores,run_s``, one row per timed run of a point of the profile). A
profile of the six columns alone (every bundled IPA-derived one) means exactly what it always did: a p99 used as a
fixed service time.

The model answers with the table's point where one exists and otherwise with a per-variant fit of Sponge's form
``l = gamma*b/c + delta*b + eps/c + eta`` whose four coefficients are non-negative. The fit minimises the
*relative* squared error (each row weighted by ``1/latency``) so that small batches, where the SLA is tight,
are not drowned out by the large absolute errors of big batches.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from rlscale.errors import ProfileError
from rlscale.inputs import MAX_PROFILE_BYTES, read_text_limited

PROFILE_COLUMNS = ("variant", "batch", "cores", "latency_s", "source", "kind")
DISTRIBUTION_COLUMNS = ("p50_s", "mean_s", "p90_s", "overhead_s", "delay_s", "jitter_s")
"""Optional columns after `PROFILE_COLUMNS`: statistics of the runs, the per-request serving overhead and the
per-request delay outside the core."""
RUNS_COLUMNS = ("variant", "batch", "cores", "run_s")
STATISTICS = ("p50", "mean", "p90", "p99")
"""The statistics of a point's run times a profile may hold (``p99`` is ``latency_s``)."""
POINT_KINDS = ("measured", "derived")
MAX_RUNS_PER_POINT = 100_000
# p50 <= p90 <= p99 may miss by this relative rounding (values are written with 6 significant digits)
_ORDER_RTOL = 1e-5


@dataclass(frozen=True)
class ProfilePoint:
    """One row of a profile table.

    Attributes:
        latency_s: the p99 of the batch's run times (seconds).
        p50_s / mean_s / p90_s: the other statistics of the same runs, where measured (None: not in the profile).
        overhead_s: the serving cost of one request on the replica's core (CPU seconds), where measured.
        delay_s: a request's time in the stage outside any core (network, the caller), where fitted.
        jitter_s: the mean of an exponential time added to ``delay_s`` per request, where fitted.
        runs_s: the timed runs themselves (seconds), where kept (`runs_path`).
    """

    variant: str
    batch: int
    cores: float
    latency_s: float
    source: str = ""
    kind: str = "measured"
    p50_s: float | None = None
    mean_s: float | None = None
    p90_s: float | None = None
    overhead_s: float | None = None
    delay_s: float | None = None
    jitter_s: float | None = None
    runs_s: tuple[float, ...] | None = field(default=None, repr=False)

    def statistic_s(self, name: str) -> float | None:
        """The point's ``p50``, ``mean``, ``p90`` or ``p99`` (seconds); None where the profile does not hold it (the
        mean of a point without ``mean_s`` that keeps its runs is theirs)."""
        if name == "p99":
            return self.latency_s
        if name not in STATISTICS:
            raise ProfileError(f"unknown statistic {name!r}; expected one of {', '.join(STATISTICS)}")
        value = getattr(self, f"{name}_s")
        if value is None and name == "mean" and self.runs_s:
            return float(np.mean(self.runs_s))
        return value


def _features(batch: np.ndarray, cores: np.ndarray) -> np.ndarray:
    """Design matrix of the latency form: columns b/c, b, 1/c, 1."""
    batch = np.asarray(batch, dtype=float)
    cores = np.asarray(cores, dtype=float)
    return np.column_stack([batch / cores, batch, 1.0 / cores, np.ones_like(batch)])


def nnls_fit(x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Non-negative least squares for a handful of columns, exact by enumerating active sets.

    With four coefficients there are only 15 non-empty supports; the optimum of an NNLS problem is the
    unconstrained least-squares solution on one of them, so trying all is exact and needs no SciPy.

    Args:
        x: design matrix, shape (n, k), k small.
        y: targets, shape (n,).
        weights: optional per-row weights (the residual of row i is multiplied by weights[i]).

    Returns:
        The coefficient vector (k,), every entry >= 0.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if weights is not None:
        w = np.asarray(weights, dtype=float)
        x = x * w[:, None]
        y = y * w
    k = x.shape[1]
    best = np.zeros(k)
    best_sse = float(np.sum(y**2))
    for size in range(1, k + 1):
        for support in itertools.combinations(range(k), size):
            cols = list(support)
            coef, *_ = np.linalg.lstsq(x[:, cols], y, rcond=None)
            if np.any(coef < 0):
                continue
            full = np.zeros(k)
            full[cols] = coef
            sse = float(np.sum((x @ full - y) ** 2))
            if sse < best_sse - 1e-15:
                best, best_sse = full, sse
    return best


def fit_latency(batch: Iterable[float], cores: Iterable[float], latency_s: Iterable[float]) -> np.ndarray:
    """Fit ``(gamma, delta, eps, eta)`` of ``l = gamma*b/c + delta*b + eps/c + eta`` to measured points.

    Rows are weighted by ``1/latency`` so the fit minimises relative error.
    """
    b = np.asarray(list(batch), dtype=float)
    c = np.asarray(list(cores), dtype=float)
    y = np.asarray(list(latency_s), dtype=float)
    return nnls_fit(_features(b, c), y, weights=1.0 / y)


def predict_latency(coef: np.ndarray, batch: float, cores: float) -> float:
    """Evaluate the fitted form at one (batch, cores)."""
    gamma, delta, eps, eta = coef
    return float(gamma * batch / cores + delta * batch + eps / cores + eta)


def leave_one_out_errors(points: list[ProfilePoint]) -> np.ndarray:
    """Relative errors ``|fit - measured| / measured`` of the fit, each point predicted from all the others."""
    if len(points) < 5:
        raise ProfileError(f"leave-one-out needs at least 5 points, got {len(points)}")
    errors = []
    for i, held in enumerate(points):
        rest = points[:i] + points[i + 1 :]
        coef = fit_latency([p.batch for p in rest], [p.cores for p in rest], [p.latency_s for p in rest])
        errors.append(abs(predict_latency(coef, held.batch, held.cores) - held.latency_s) / held.latency_s)
    return np.asarray(errors)


class LatencyModel:
    """``l(variant, batch, cores)`` for the variants of one task: table point if present, else the fit.

    `latency_s` is the p99 (a profile's ``latency_s``), as it always was; `statistic_s` answers the other
    statistics where the profile holds them (the point, else the same form fitted to that statistic over the
    variant's points that hold it), `noise` the measured run-to-run spread for sampling, and `overhead_s` the
    per-request serving cost.
    """

    def __init__(self, points: Iterable[ProfilePoint], name: str = "profile") -> None:
        self.name = name
        self.points: dict[tuple[str, int, float], ProfilePoint] = {}
        by_variant: dict[str, list[ProfilePoint]] = {}
        for p in points:
            self.points[(p.variant, int(p.batch), float(p.cores))] = p
            by_variant.setdefault(p.variant, []).append(p)
        self._coef: dict[str, np.ndarray] = {}
        for variant, pts in by_variant.items():
            self._coef[variant] = fit_latency(
                [p.batch for p in pts], [p.cores for p in pts], [p.latency_s for p in pts]
            )
        self._cache: dict[tuple[str, int, float], float] = {}
        self._by_variant = by_variant
        self._stat_coef: dict[tuple[str, str], np.ndarray | None] = {}
        self._noise: dict[tuple[str, int, float], np.ndarray | None] = {}
        self._with_mean = frozenset(p.variant for p in self.points.values() if p.mean_s is not None or p.runs_s)

    @property
    def has_runs(self) -> bool:
        """Whether any point keeps its run times (what the ``empirical`` service model samples)."""
        return any(p.runs_s for p in self.points.values())

    @property
    def has_overhead(self) -> bool:
        """Whether any point has a measured serving overhead."""
        return any(p.overhead_s is not None for p in self.points.values())

    def statistic_s(self, variant: str, batch: int, cores: float, name: str) -> float:
        """The ``name`` statistic (``p50``, ``mean``, ``p90``, ``p99``) of one batch's service time, seconds: the
        point's where it holds it, else the form fitted to that statistic over the variant's points that hold it;
        a variant whose profile has none of it answers its p99 (the deterministic meaning of a p99-only profile)."""
        if name == "p99":
            return self.latency_s(variant, batch, cores)
        point = self.points.get((variant, int(batch), float(cores)))
        if point is not None:
            value = point.statistic_s(name)
            if value is not None:
                return value
        key = (variant, name)
        if key not in self._stat_coef:
            pts = [(p.batch, p.cores, p.statistic_s(name)) for p in self._by_variant.get(variant, [])]
            pts = [t for t in pts if t[2] is not None]
            self._stat_coef[key] = fit_latency(*zip(*pts, strict=True)) if pts else None
        coef = self._stat_coef[key]
        if coef is None:
            return self.latency_s(variant, batch, cores)
        return predict_latency(coef, batch, cores)

    def mean_s(self, variant: str, batch: int, cores: float) -> float:
        """The mean service time of one batch (`statistic_s` ``mean``; the p99 for a p99-only profile)."""
        return self.statistic_s(variant, batch, cores, "mean")

    def runs_s(self, variant: str, batch: int, cores: float) -> tuple[float, ...] | None:
        """The measured run times of a point of the profile, or None."""
        point = self.points.get((variant, int(batch), float(cores)))
        return point.runs_s if point is not None else None

    def noise(self, variant: str, batch: int, cores: float) -> np.ndarray | None:
        """Run-to-run factors to sample a service time of (variant, batch, cores) from: the runs of the nearest
        point with runs (same variant; distance ``|log2 b - log2 b'| + |log2 c - log2 c'|``, the earlier point on
        a tie), each divided by their mean (so the factors average 1); None when the variant has no runs."""
        key = (variant, int(batch), float(cores))
        if key in self._noise:
            return self._noise[key]
        best, best_d = None, math.inf
        for p in self._by_variant.get(variant, []):
            if not p.runs_s:
                continue
            d = abs(math.log2(p.batch) - math.log2(batch)) + abs(math.log2(p.cores) - math.log2(cores))
            if d < best_d:
                best, best_d = p, d
        factors = None
        if best is not None:
            runs = np.asarray(best.runs_s, dtype=float)
            factors = runs / runs.mean()
        self._noise[key] = factors
        return factors

    def overhead_s(self, variant: str, cores: float) -> float:
        """The serving cost of one request on a replica of ``variant`` with ``cores`` cores (CPU seconds): the
        median of the measured points at those cores, else of the variant's points, else 0 (not measured)."""
        return self._per_request(variant, cores, "overhead_s")

    def delay_s(self, variant: str, cores: float) -> float:
        """A request's time in the stage outside any core on a replica of ``variant`` with ``cores`` cores
        (seconds): chosen as `overhead_s` is, else 0 (none)."""
        return self._per_request(variant, cores, "delay_s")

    def jitter_s(self, variant: str, cores: float) -> float:
        """The mean of the exponential time added to `delay_s` per request (seconds): chosen as `overhead_s` is,
        else 0 (none)."""
        return self._per_request(variant, cores, "jitter_s")

    def _per_request(self, variant: str, cores: float, column: str) -> float:
        """A per-request column's figure (`overhead_s`, `delay_s`, `jitter_s`): the median of the variant's points
        that hold it at ``cores``, else of those at any cores, else 0."""
        pts = self._by_variant.get(variant, [])
        at = [getattr(p, column) for p in pts if getattr(p, column) is not None and p.cores == float(cores)]
        values = at or [getattr(p, column) for p in pts if getattr(p, column) is not None]
        return float(np.median(values)) if values else 0.0

    def holds_mean(self, variant: str) -> bool:
        """Whether ``variant`` has a point holding more than its p99: a mean (``mean_s`` or run times)."""
        return variant in self._with_mean

    @property
    def variants(self) -> list[str]:
        """Variants that have at least one point, in table order."""
        return list(self._coef)

    def has_batch(self, variant: str, batch: int) -> bool:
        """Whether the table has any point for this variant at this batch size."""
        return any(v == variant and b == batch for (v, b, _c) in self.points)

    def coefficients(self, variant: str) -> np.ndarray:
        """The fitted ``(gamma, delta, eps, eta)`` of a variant."""
        try:
            return self._coef[variant]
        except KeyError:
            raise ProfileError(f"{self.name}: no profile points for variant {variant!r}") from None

    def latency_s(self, variant: str, batch: int, cores: float) -> float:
        """p99 seconds for one batch of ``batch`` requests on a replica with ``cores`` cores."""
        key = (variant, int(batch), float(cores))
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        if batch < 1 or cores <= 0:
            raise ProfileError(f"{self.name}: batch must be >= 1 and cores > 0, got batch={batch} cores={cores}")
        point = self.points.get(key)
        value = point.latency_s if point is not None else predict_latency(self.coefficients(variant), batch, cores)
        self._cache[key] = value
        return value

    def throughput_rps(self, variant: str, batch: int, cores: float) -> float:
        """Requests per second of one replica that always runs full batches: ``b / l(v, b, c)`` for a p99 profile
        (IPA's); for a variant whose profile holds a mean (`holds_mean`: a calibrated one) what its core can do,
        ``b / (mean(v, b, c) + b * overhead)``, as the simulator serves it (the overhead is work on the same core)."""
        if variant in self._with_mean:
            return batch / (self.mean_s(variant, batch, cores) + batch * self.overhead_s(variant, cores))
        return batch / self.latency_s(variant, batch, cores)


def _parse_number(raw: str, path: Path, line: int, column: str, kind: type) -> float:
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        raise ProfileError(f"{path}:{line}: column {column!r}: not a number: {raw!r}") from None
    return value


def runs_path(path: str | Path) -> Path:
    """Where a profile's run times sit: ``NAME.runs.csv`` beside ``NAME.csv``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.runs.csv")


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def profile_text(points: Iterable[ProfilePoint]) -> str:
    """A profile CSV's text: `PROFILE_COLUMNS` then `DISTRIBUTION_COLUMNS`, one row per point, numbers to 6
    significant digits, an optional column empty where the point does not hold it. The one writer of profiles
    (`rlscale profile`, `rlscale calibrate`, the bundled data)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow((*PROFILE_COLUMNS, *DISTRIBUTION_COLUMNS))
    for p in points:
        optional = (p.p50_s, p.mean_s, p.p90_s, p.overhead_s, p.delay_s, p.jitter_s)
        writer.writerow(
            [p.variant, p.batch, f"{p.cores:g}", _cell(p.latency_s), p.source, p.kind, *map(_cell, optional)]
        )
    return out.getvalue()


def runs_text(points: Iterable[ProfilePoint]) -> str:
    """The run times' CSV text (`RUNS_COLUMNS`, `runs_path`): one row per timed run, points in order, each point's
    runs in the order they ran (only the header where no point keeps runs)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(RUNS_COLUMNS)
    for p in points:
        writer.writerows([p.variant, p.batch, f"{p.cores:g}", _cell(run)] for run in p.runs_s or ())
    return out.getvalue()


def _optional(row: dict, column: str, path: Path, line: int) -> float | None:
    raw = (row.get(column) or "").strip()
    if not raw:
        return None
    value = _parse_number(raw, path, line, column, float)
    if not (value > 0 and np.isfinite(value)) and not (column in ("overhead_s", "delay_s", "jitter_s") and value == 0):
        raise ProfileError(f"{path}:{line}: column {column!r} must be a positive number, got {raw}")
    return value


def _read_runs(path: Path, keys: set[tuple[str, int, float]]) -> dict[tuple[str, int, float], list[float]]:
    """The run times of ``path``'s companion file (`runs_path`), by point; empty when there is none.

    Raises:
        ProfileError: unreadable, a wrong header, a value that is not a positive number, or a run of a point the
            profile does not have.
    """
    runs_file = runs_path(path)
    if not runs_file.exists():
        return {}
    text = read_text_limited(runs_file, MAX_PROFILE_BYTES, ProfileError, "profile run times")
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in RUNS_COLUMNS if c not in tuple(reader.fieldnames or ())]
    if missing:
        raise ProfileError(f"{runs_file}: missing column(s) {', '.join(missing)}; expected {','.join(RUNS_COLUMNS)}")
    runs: dict[tuple[str, int, float], list[float]] = {}
    for line, row in enumerate(reader, start=2):
        key = (
            (row.get("variant") or "").strip(),
            _parse_number(row["batch"], runs_file, line, "batch", int),
            _parse_number(row["cores"], runs_file, line, "cores", float),
        )
        value = _parse_number(row["run_s"], runs_file, line, "run_s", float)
        if not (value > 0 and np.isfinite(value)):
            raise ProfileError(f"{runs_file}:{line}: column 'run_s' must be a positive number, got {row['run_s']}")
        if key not in keys:
            raise ProfileError(
                f"{runs_file}:{line}: variant={key[0]} batch={key[1]} cores={key[2]:g} is not a point of {path.name}"
            )
        point_runs = runs.setdefault(key, [])
        if len(point_runs) >= MAX_RUNS_PER_POINT:
            raise ProfileError(f"{runs_file}:{line}: more than {MAX_RUNS_PER_POINT} runs of one point")
        point_runs.append(value)
    return runs


def load_profile(path: str | Path) -> LatencyModel:
    """Read a profile CSV (and its run times, `runs_path`, where they exist) and build its latency model.

    Raises:
        ProfileError: file missing or unreadable, wrong header, non-numeric or non-positive values,
            an unknown ``kind``, the same (variant, batch, cores) twice, statistics out of order
            (p50 <= p90 <= p99), or run times of a point the profile does not have.
    """
    path = Path(path)
    text = read_text_limited(path, MAX_PROFILE_BYTES, ProfileError, "profile")
    reader = csv.DictReader(text.splitlines())
    header = tuple(reader.fieldnames or ())
    missing = [c for c in PROFILE_COLUMNS[:4] if c not in header]
    if missing:
        raise ProfileError(f"{path}: missing column(s) {', '.join(missing)}; expected {','.join(PROFILE_COLUMNS)}")
    points: list[ProfilePoint] = []
    seen: set[tuple[str, int, float]] = set()
    for line, row in enumerate(reader, start=2):
        variant = (row.get("variant") or "").strip()
        if not variant:
            raise ProfileError(f"{path}:{line}: column 'variant' is empty")
        batch = _parse_number(row["batch"], path, line, "batch", int)
        cores = _parse_number(row["cores"], path, line, "cores", float)
        latency = _parse_number(row["latency_s"], path, line, "latency_s", float)
        if batch < 1:
            raise ProfileError(f"{path}:{line}: column 'batch' must be >= 1, got {batch}")
        if not cores > 0:
            raise ProfileError(f"{path}:{line}: column 'cores' must be > 0, got {cores}")
        if not (latency > 0 and np.isfinite(latency)):
            raise ProfileError(f"{path}:{line}: column 'latency_s' must be a positive number, got {latency}")
        kind = (row.get("kind") or "measured").strip()
        if kind not in POINT_KINDS:
            raise ProfileError(f"{path}:{line}: column 'kind' must be one of {', '.join(POINT_KINDS)}, got {kind!r}")
        key = (variant, batch, cores)
        if key in seen:
            raise ProfileError(f"{path}:{line}: duplicate point variant={variant} batch={batch} cores={cores:g}")
        seen.add(key)
        p50, mean, p90, overhead, delay, jitter = (_optional(row, c, path, line) for c in DISTRIBUTION_COLUMNS)
        ordered = [x for x in (p50, p90, latency) if x is not None]
        if any(a > b * (1 + _ORDER_RTOL) for a, b in itertools.pairwise(ordered)):
            raise ProfileError(f"{path}:{line}: p50_s <= p90_s <= latency_s (the p99) must hold, got {ordered}")
        source = (row.get("source") or "").strip()
        points.append(
            ProfilePoint(variant, batch, cores, latency, source, kind, p50, mean, p90, overhead, delay, jitter)
        )
    if not points:
        raise ProfileError(f"{path}: profile has no rows")
    runs = _read_runs(path, seen)
    if runs:
        points = [replace(p, runs_s=tuple(runs.get((p.variant, p.batch, p.cores), ())) or None) for p in points]
    return LatencyModel(points, name=str(path))
