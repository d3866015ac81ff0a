"""What a profile run yields: measured points (p50, mean, p90, p99 and the runs), each variant's latency fit with its
error, and the profile the spec reads.

The CSV has the columns of `rlscale.profiles.PROFILE_COLUMNS` then `rlscale.profiles.DISTRIBUTION_COLUMNS`:
``latency_s`` is the p99 of the timed runs (a profile holds p99 batch latencies), ``p50_s``, ``mean_s`` and
``p90_s`` the other statistics of the same runs, ``overhead_s`` the serving cost of one request where ``rlscale
profile --url`` measured it (empty otherwise, `rlscale.profiling.overhead`), ``kind`` is ``measured`` and
``source`` names the tool, how the point was measured, the hardware and the date. The timed runs themselves go to
``NAME.runs.csv`` beside it (`rlscale.profiles.runs_path`, columns `rlscale.profiles.RUNS_COLUMNS`, one row per
run, in the order they ran). The fit is `rlscale.profiles.fit_latency`, the form the latency model uses between
measured points.
"""

from __future__ import annotations

import contextlib
import datetime
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rlscale.inputs import MAX_PROFILE_BYTES
from rlscale.paths import atomic_path, atomic_write_text, write_synced
from rlscale.profiles import (
    RUNS_COLUMNS,
    ProfilePoint,
    fit_latency,
    leave_one_out_errors,
    predict_latency,
    profile_text,
    runs_path,
    runs_text,
)

LOO_MIN_POINTS = 5
"""Leave-one-out errors need this many points of a variant (four coefficients, one point held out)."""


@dataclass(frozen=True)
class Measurement:
    """One measured point.

    Attributes:
        variant: the variant name.
        batch: the batch size.
        cores: the cores it ran with (in-process: the CPUs its worker was pinned to; served: the deployment's,
            as given).
        samples_s: the timed runs, seconds, in order.
        worker: what the in-process worker ran with (``cpus``, thread ``env``, ``torch_threads``); None when served.
        overhead_s: the serving cost of one request on the server's core (CPU seconds), where ``rlscale profile
            --url`` measured it (`rlscale.profiling.overhead`); None otherwise.
    """

    variant: str
    batch: int
    cores: int
    samples_s: tuple[float, ...]
    worker: dict | None = None
    overhead_s: float | None = None

    @property
    def p50_s(self) -> float:
        return float(np.percentile(self.samples_s, 50))

    @property
    def p90_s(self) -> float:
        return float(np.percentile(self.samples_s, 90))

    @property
    def p99_s(self) -> float:
        """The 99th percentile (linear interpolation: of 20 runs, nearly the slowest)."""
        return float(np.percentile(self.samples_s, 99))

    @property
    def mean_s(self) -> float:
        return float(np.mean(self.samples_s))

    def to_dict(self) -> dict:
        doc = {
            "variant": self.variant,
            "batch": self.batch,
            "cores": self.cores,
            "p50_s": self.p50_s,
            "mean_s": self.mean_s,
            "p90_s": self.p90_s,
            "p99_s": self.p99_s,
            "min_s": float(min(self.samples_s)),
            "max_s": float(max(self.samples_s)),
            "repeats": len(self.samples_s),
            "overhead_s": self.overhead_s,
        }
        if self.worker is not None:
            doc["worker"] = self.worker
        return doc


@dataclass(frozen=True)
class VariantFit:
    """A variant's fit of ``l = gamma*b/c + delta*b + eps/c + eta`` to its measured p99s, and how well it fits.

    Attributes:
        variant: the variant name.
        coef: ``(gamma, delta, eps, eta)``, each >= 0.
        points: how many measured points it was fitted to.
        max_rel_error: the largest ``|fit - p99| / p99`` over those points.
        mean_rel_error: the mean of the same.
        loo_max_rel_error: the largest leave-one-out error (each point predicted from the others), None with
            fewer than `LOO_MIN_POINTS` points.
        loo_median_rel_error: the median leave-one-out error, None likewise.
    """

    variant: str
    coef: tuple[float, float, float, float]
    points: int
    max_rel_error: float
    mean_rel_error: float
    loo_max_rel_error: float | None
    loo_median_rel_error: float | None

    def predict_s(self, batch: int, cores: float) -> float:
        return predict_latency(np.asarray(self.coef), batch, cores)

    def to_dict(self) -> dict:
        gamma, delta, eps, eta = self.coef
        return {
            "variant": self.variant,
            "gamma": gamma,
            "delta": delta,
            "eps": eps,
            "eta": eta,
            "points": self.points,
            "max_rel_error": self.max_rel_error,
            "mean_rel_error": self.mean_rel_error,
            "loo_max_rel_error": self.loo_max_rel_error,
            "loo_median_rel_error": self.loo_median_rel_error,
        }


def fit_variants(measurements: Sequence[Measurement]) -> list[VariantFit]:
    """One `VariantFit` per variant (in first-seen order), fitted to the p99s with `rlscale.profiles.fit_latency`.

    With four or fewer points of a variant the fit can pass through them all, so its in-sample error says little;
    the leave-one-out error (five points or more) is the one that predicts unmeasured points.
    """
    by_variant: dict[str, list[ProfilePoint]] = {}
    for m in measurements:
        by_variant.setdefault(m.variant, []).append(ProfilePoint(m.variant, m.batch, m.cores, m.p99_s))
    fits = []
    for variant, points in by_variant.items():
        b = [p.batch for p in points]
        c = [p.cores for p in points]
        y = np.asarray([p.latency_s for p in points])
        coef = fit_latency(b, c, y)
        predicted = np.asarray([predict_latency(coef, p.batch, p.cores) for p in points])
        errors = np.abs(predicted - y) / y
        loo = leave_one_out_errors(points) if len(points) >= LOO_MIN_POINTS else None
        fits.append(
            VariantFit(
                variant,
                tuple(float(x) for x in coef),
                len(points),
                float(errors.max()),
                float(errors.mean()),
                float(loo.max()) if loo is not None else None,
                float(np.median(loo)) if loo is not None else None,
            )
        )
    return fits


def cpu_model() -> str:
    """This machine's CPU model (``/proc/cpuinfo``'s ``model name``), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, sep, value = line.partition(":")
                if sep and key.strip() in ("model name", "Model", "cpu model") and value.strip():
                    return " ".join(value.split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def today() -> str:
    """The local date, ISO (``2026-11-30``)."""
    return datetime.date.today().isoformat()


def source_text(how: str, warmup: int, repeats: int, where: str, date: str | None = None) -> str:
    """The ``source`` column: tool, method, hardware (or server) and date, ``;``-separated, without commas.

    Args:
        how: ``in-process`` or ``served``.
        warmup: untimed runs per point.
        repeats: timed runs per point.
        where: ``CPU <model>``, or the server's address.
        date: ISO date (default today).
    """
    text = f"rlscale profile {how} p99 of {repeats} after {warmup} warm-up; {where}; {date or today()}"
    return text.replace(",", " ").replace("\n", " ")


def _number(value: float) -> str:
    return f"{value:.6g}"


def points_of(measurements: Sequence[Measurement], source: str) -> list[ProfilePoint]:
    """The profile's points of ``measurements``: ``latency_s`` the p99 of each point's runs, their p50, mean and
    p90, the serving overhead where measured, and the runs."""
    return [
        ProfilePoint(
            m.variant,
            m.batch,
            float(m.cores),
            m.p99_s,
            source,
            "measured",
            p50_s=m.p50_s,
            mean_s=m.mean_s,
            p90_s=m.p90_s,
            overhead_s=m.overhead_s,
            runs_s=tuple(m.samples_s),
        )
        for m in measurements
    ]


def profile_csv(measurements: Sequence[Measurement], source: str) -> str:
    """The profile CSV text of ``measurements`` (`rlscale.profiles.profile_text` of `points_of`)."""
    return profile_text(points_of(measurements, source))


def is_runs_file(head: bytes) -> bool:
    """Whether a file's first bytes are a run-times file's header (one rlscale wrote, or may replace)."""
    return head.startswith(",".join(RUNS_COLUMNS).encode() + b"\n") or head == ",".join(RUNS_COLUMNS).encode()


def write_profile(path: Path, measurements: Sequence[Measurement], source: str) -> Path:
    """Write the profile of ``measurements`` (`write_points` of `points_of`)."""
    return write_points(path, points_of(measurements, source))


def write_points(path: Path, points: Sequence[ProfilePoint]) -> Path:
    """Write a profile CSV (`rlscale.profiles.profile_text`) and, where its points keep runs, their run times
    (`rlscale.profiles.runs_path`) atomically: each to a temporary file first, then both renamed, the CSV first;
    never half a file under either name, and a failed write leaves both as they were.

    Run times whose file would exceed what a profile may read (`rlscale.inputs.MAX_PROFILE_BYTES`) are not written,
    and a run-times file of an earlier run there is removed (it would describe other runs), as it is where no point
    keeps runs: the CSV keeps their statistics. ``runs_path(path).exists()`` afterwards says which happened.

    Returns:
        ``path``.

    Raises:
        rlscale.paths.OutputError: a write failed.
    """
    path = Path(path)
    runs_file = runs_path(path)
    runs = runs_text(points)
    if not any(p.runs_s for p in points) or len(runs.encode()) > MAX_PROFILE_BYTES:
        atomic_write_text(path, profile_text(points))
        _remove_runs_file(runs_file)
        return path
    with atomic_path(runs_file) as tmp:
        write_synced(tmp, runs, runs_file)
        atomic_write_text(path, profile_text(points))  # renamed before the run times on leaving
    return path


def _remove_runs_file(runs_file: Path) -> None:
    """Remove a run-times file an earlier run left (only one: a file of another kind under that name stays)."""
    with contextlib.suppress(OSError):
        with open(runs_file, "rb") as fh:
            if not is_runs_file(fh.read(4096)):
                return
        runs_file.unlink()
