"""The arithmetic of a calibration's table (BLIS's format): per run, mean/p50/p90/p99 per stage and end to end,
throughput and the violation rate at the SLA; over repeats, the median and the band; sim/real ratios and their
mean absolute percentage error. Pure functions of arrays and dicts, no I/O.

A run's figures are a dict (`run_figures`)::

    {"e2e": {"mean", "p50", "p90", "p99"}, "stages": {NAME: {"mean", "p50", "p90", "p99"}},
     "throughput_rps", "violation_rate", "requests", "answered"}

latencies in seconds. NaN where nothing was answered (JSON writes it as null: `finite_or_none`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

STATS = ("mean", "p50", "p90", "p99")
"""The latency statistics of every row, in the table's order."""
BAND_STATS = ("p50", "p90", "p99")
"""The statistics whose run-to-run band (min, max over repeats) is reported."""
QUANTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0}


def latency_stats(values: np.ndarray) -> dict[str, float]:
    """Mean, p50, p90 and p99 (numpy's linear percentiles) of the finite ``values``; NaN for each when none is."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return dict.fromkeys(STATS, math.nan)
    p50, p90, p99 = np.percentile(v, [QUANTILES["p50"], QUANTILES["p90"], QUANTILES["p99"]])
    return {"mean": float(v.mean()), "p50": float(p50), "p90": float(p90), "p99": float(p99)}


def run_figures(
    stage_s: np.ndarray,
    last_end_s: np.ndarray,
    e2e_s: np.ndarray,
    window_s: float,
    sla_s: float,
    stage_names: Sequence[str],
) -> dict[str, Any]:
    """The figures of one run, real or simulated (module docstring).

    Args:
        stage_s: per stage, each request's latency there (queue + service; client-side when real), shape
            (stages, requests); NaN where the request did not pass the stage.
        last_end_s: when each request left the last stage, from the window's start (NaN: never).
        e2e_s: each request's end-to-end latency from its arrival (its due time when real); NaN: not answered.
        window_s: the window's length: throughput counts the answers completed within it.
        sla_s: the SLA the violation rate is counted at: late (``e2e_s > sla_s``) or not answered.
        stage_names: the stages' names, in order.
    """
    e2e = np.asarray(e2e_s, dtype=float)
    ends = np.asarray(last_end_s, dtype=float)
    n = int(e2e.size)
    answered = np.isfinite(e2e)
    late = answered & (e2e > sla_s)
    with np.errstate(invalid="ignore"):
        done_in_window = int(np.count_nonzero(ends <= window_s))
    return {
        "e2e": latency_stats(e2e),
        "stages": {name: latency_stats(stage_s[i]) for i, name in enumerate(stage_names)},
        "throughput_rps": done_in_window / window_s if window_s > 0 else math.nan,
        "violation_rate": float(np.count_nonzero(late) + (n - np.count_nonzero(answered))) / n if n else math.nan,
        "requests": n,
        "answered": int(np.count_nonzero(answered)),
    }


def _leaves(doc: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    out = []
    for key, value in doc.items():
        if isinstance(value, dict):
            out.extend(_leaves(value, (*prefix, key)))
        else:
            out.append(((*prefix, key), value))
    return out


def _put(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        doc = doc.setdefault(key, {})
    doc[path[-1]] = value


def _median(values: Sequence[float]) -> float:
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    return float(np.median(v)) if v.size else math.nan


def median_figures(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the repeats (each statistic on its own; NaN repeats left out): the ``real`` of a
    configuration. Counts (``requests``, ``answered``) are medians too."""
    if not runs:
        raise ValueError("median over no runs")
    out: dict[str, Any] = {}
    for path, first in _leaves(runs[0]):
        values = [_get(r, path) for r in runs]
        value = _median(values)
        _put(out, path, int(round(value)) if isinstance(first, int) and not math.isnan(value) else value)
    return out


def _get(doc: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def _min_max(values: Sequence[float]) -> list[float]:
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    return [float(v.min()), float(v.max())] if v.size else [math.nan, math.nan]


def band(runs: Sequence[dict[str, Any]], where: str = "e2e") -> dict[str, list[float]]:
    """``{p50, p90, p99: [min, max]}`` over the repeats, end to end (``where="e2e"``) or at a stage (its name)."""
    pick = (lambda r: r["e2e"]) if where == "e2e" else (lambda r: r["stages"][where])
    return {stat: _min_max([pick(r)[stat] for r in runs]) for stat in BAND_STATS}


def ratio(sim: float, real: float) -> float:
    """``sim / real``; NaN where either is not a finite number or ``real`` is not positive."""
    if not (math.isfinite(sim) and math.isfinite(real)) or real <= 0:
        return math.nan
    return sim / real


def ratios(sim: dict[str, Any], real: dict[str, Any]) -> dict[str, Any]:
    """sim/real of every end-to-end statistic, the throughput and the violation rate (`ratio`)."""
    return {
        "e2e": {stat: ratio(sim["e2e"][stat], real["e2e"][stat]) for stat in STATS},
        "throughput_rps": ratio(sim["throughput_rps"], real["throughput_rps"]),
        "violation_rate": ratio(sim["violation_rate"], real["violation_rate"]),
    }


def mape(pairs: Sequence[tuple[float, float]]) -> float:
    """Mean absolute percentage error ``mean(|sim - real| / real)`` over the ``(sim, real)`` pairs with a finite
    sim and a finite, positive real (BLIS's figure of merit); NaN when there is none."""
    errors = [abs(s - r) / r for s, r in pairs if math.isfinite(s) and math.isfinite(r) and r > 0]
    return float(np.mean(errors)) if errors else math.nan


def within_band(value: float, lo_hi: Sequence[float]) -> bool:
    """Whether ``value`` lies in ``[lo, hi]``."""
    lo, hi = lo_hi
    return bool(lo <= value <= hi)


def finite_or_none(doc: Any) -> Any:
    """``doc`` with every NaN or infinity replaced by None (JSON has no NaN), recursively through dicts, lists and
    tuples."""
    if isinstance(doc, dict):
        return {k: finite_or_none(v) for k, v in doc.items()}
    if isinstance(doc, list | tuple):
        return [finite_or_none(v) for v in doc]
    if isinstance(doc, float) and not math.isfinite(doc):
        return None
    if isinstance(doc, np.floating):
        return finite_or_none(float(doc))
    if isinstance(doc, np.integer):
        return int(doc)
    return doc


def violation_rate_at(e2e_s: np.ndarray, sla_s: float) -> float:
    """The share of requests late at ``sla_s`` (``e2e_s > sla_s``) or not answered (NaN); NaN for no request."""
    e2e = np.asarray(e2e_s, dtype=float)
    if not e2e.size or not math.isfinite(sla_s):
        return math.nan
    with np.errstate(invalid="ignore"):
        return float(np.count_nonzero(~(e2e <= sla_s))) / e2e.size
