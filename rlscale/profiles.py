"""Latency profiles and the latency model ``l(variant, batch, cores)``.

A profile is a CSV table of points ``variant,batch,cores,latency_s,source,kind``: the p99 time (seconds) one
replica with ``cores`` cores takes to process one batch of ``batch`` requests. ``kind`` is ``measured`` or
``derived`` (how it was derived is written in ``rlscale/data/PROVENANCE.md``).

The model answers with the table's point where one exists and otherwise with a per-variant fit of Sponge's form
``l = gamma*b/c + delta*b + eps/c + eta`` whose four coefficients are non-negative. The fit minimises the
*relative* squared error (each row weighted by ``1/latency``) so that small batches, where the SLA is tight,
are not drowned out by the large absolute errors of big batches.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rlscale.errors import ProfileError
from rlscale.inputs import MAX_PROFILE_BYTES, read_text_limited

PROFILE_COLUMNS = ("variant", "batch", "cores", "latency_s", "source", "kind")
POINT_KINDS = ("measured", "derived")


@dataclass(frozen=True)
class ProfilePoint:
    """One row of a profile table."""

    variant: str
    batch: int
    cores: float
    latency_s: float
    source: str = ""
    kind: str = "measured"


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
    """``l(variant, batch, cores)`` for the variants of one task: table point if present, else the fit."""

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
        """Requests per second of one replica that always runs full batches: ``b / l(v, b, c)``."""
        return batch / self.latency_s(variant, batch, cores)


def _parse_number(raw: str, path: Path, line: int, column: str, kind: type) -> float:
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        raise ProfileError(f"{path}:{line}: column {column!r}: not a number: {raw!r}") from None
    return value


def load_profile(path: str | Path) -> LatencyModel:
    """Read a profile CSV and build its latency model.

    Raises:
        ProfileError: file missing or unreadable, wrong header, non-numeric or non-positive values,
            an unknown ``kind``, or the same (variant, batch, cores) twice.
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
        points.append(ProfilePoint(variant, batch, cores, latency, (row.get("source") or "").strip(), kind))
    if not points:
        raise ProfileError(f"{path}: profile has no rows")
    return LatencyModel(points, name=str(path))
