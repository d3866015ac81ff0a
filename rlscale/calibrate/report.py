"""A calibration's outputs, in BLIS's format: per configuration, stage and end to end, the mean, p50, p90 and p99
real (the median over repeats, with its band) against simulated (calibrated and uncalibrated) and their ratios;
throughput and the violation rate at the SLA; the planned p99; and the mean absolute percentage error over the
configurations. ``results.csv`` (one row per configuration, place and metric), ``results.md``, ``calibrate.json``
(the ``--json`` document) and ``sim_vs_real.png``.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from rlscale.calibrate.settings import Configuration
from rlscale.calibrate.stats import STATS, band, finite_or_none, mape, median_figures, ratio, ratios, within_band

SOURCES = {"sim": "calibrated", "sim_served": "served", "sim_uncalibrated": "uncalibrated"}
"""The simulated columns and their labels: with the calibrated profile (the model in-process and the serving
overhead), with the served requests' run times and the overhead, and with the spec's own profile
(`rlscale.calibrate.calibrated`)."""
E2E = "end-to-end"
SLA_QUANTILES = ("p90", "p99")
"""The real end-to-end percentiles (median over repeats) at which SLAs are set to compare violation rates."""
CSV_FIELDS = (
    *("config", "load_fraction", "batch", "peak_rps", "mean_rps", "where", "metric", "real", "real_min", "real_max"),
    *(column for source in SOURCES for column in (source, f"{source}_over_real")),
)


@dataclass
class ConfigResult:
    """One configuration's outcome.

    Attributes:
        config: the configuration.
        peak_rps / mean_rps: the window's load as replayed.
        real_runs: each repeat's figures (`rlscale.calibrate.stats.run_figures`).
        sims: the simulator's figures by source (`SOURCES`).
        planned_p99_s: the planner's latency model's end-to-end p99 over the window's seconds
            (`rlscale.calibrate.run.window_planned_p99_s`; at the peak for a p99-only profile).
        planned_p99_s_uncalibrated / planned_p99_s_at_peak: the planner's end-to-end p99 at the window's peak (the
            sum over stages of `rlscale.model.stage_latency_s`, its steady state there), on the spec's profile and on
            the calibrated one.
        diagnostics: per repeat, what the servers and the generator said (`rlscale.calibrate.run`).
        at_real_slas: the violation rates at SLAs set at the real end-to-end p90 and p99 (`SLA_QUANTILES`; the
            median over the repeats): ``{"sla_s": {p90, p99}, "real": {p90, p99}`` (the median over repeats of each
            repeat's rate) and one entry per simulated source.
    """

    config: Configuration
    peak_rps: float
    mean_rps: float
    real_runs: list[dict[str, Any]]
    sims: dict[str, dict[str, Any]]
    planned_p99_s: float
    planned_p99_s_uncalibrated: float
    planned_p99_s_at_peak: float = math.nan
    diagnostics: list[dict[str, Any]] = field(default_factory=list)
    at_real_slas: dict[str, dict[str, float]] = field(default_factory=dict)

    @cached_property
    def real(self) -> dict[str, Any]:
        """The median over the repeats (each figure on its own)."""
        return median_figures(self.real_runs)

    @cached_property
    def real_band(self) -> dict[str, list[float]]:
        """End to end, ``{p50, p90, p99: [min, max]}`` over the repeats."""
        return band(self.real_runs)

    def spread(self, where: str, key: str) -> list[float]:
        """[min, max] over the repeats of one figure: ``where`` a stage, ``e2e``, or ``run`` for a run's own figures
        (throughput, violation rate)."""
        values = np.asarray([_pick(r, where, key) for r in self.real_runs], dtype=float)
        values = values[~np.isnan(values)]
        return [float(values.min()), float(values.max())] if values.size else [math.nan, math.nan]

    def to_dict(self) -> dict[str, Any]:
        real = self.real
        return {
            "name": self.config.name,
            "load_fraction": self.config.load_fraction,
            "batch": self.config.batch,
            "peak_rps": self.peak_rps,
            "mean_rps": self.mean_rps,
            "real": real,
            "real_band": self.real_band,
            "real_stage_bands": {name: band(self.real_runs, name) for name in real["stages"]},
            "real_repeats": self.real_runs,
            **self.sims,
            "ratios": {source: ratios(self.sims[source], real) for source in SOURCES},
            "planned_p99_s": self.planned_p99_s,
            "planned_p99_s_at_peak": self.planned_p99_s_at_peak,
            "planned_p99_s_uncalibrated": self.planned_p99_s_uncalibrated,
            "violation_rate_at_real_slas": self.at_real_slas,
            "errors": sum(d.get("errors", 0) for d in self.diagnostics),
        }


def _pick(figures: dict[str, Any], where: str, key: str) -> float:
    if where == "run":
        return figures[key]
    return (figures["e2e"] if where == "e2e" else figures["stages"][where])[key]


def _rows_of(result: ConfigResult) -> list[dict[str, Any]]:
    real = result.real
    base = {
        "config": result.config.name,
        "load_fraction": result.config.load_fraction,
        "batch": result.config.batch,
        "peak_rps": result.peak_rps,
        "mean_rps": result.mean_rps,
    }
    rows = []
    places = [*((name, name) for name in real["stages"]), ("e2e", E2E)]
    metrics = [(where, shown, stat, f"{stat}_s") for where, shown in places for stat in STATS]
    metrics += [("run", E2E, "throughput_rps", "throughput_rps"), ("run", E2E, "violation_rate", "violation_rate")]
    for where, shown, key, metric in metrics:
        value = _pick(real, where, key)
        lo, hi = result.spread(where, key)
        row = {**base, "where": shown, "metric": metric, "real": value, "real_min": lo, "real_max": hi}
        for source in SOURCES:
            sim = _pick(result.sims[source], where, key)
            row[source] = sim
            row[f"{source}_over_real"] = ratio(sim, value)
        rows.append(row)
    return rows


def table_rows(results: Sequence[ConfigResult]) -> list[dict[str, Any]]:
    """The table's rows (`CSV_FIELDS`), one per configuration, place (each stage, end to end) and metric."""
    return [row for r in results for row in _rows_of(r)]


def csv_text(results: Sequence[ConfigResult]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in table_rows(results):
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return out.getvalue()


def errors_summary(results: Sequence[ConfigResult]) -> dict[str, dict[str, float]]:
    """Per simulated source, the mean absolute percentage error over the configurations of each end-to-end
    statistic, the throughput and the violation rate (against the median of the repeats), and the share of
    configurations whose simulated p99 lies inside the real band."""
    out: dict[str, dict[str, float]] = {}
    for source in SOURCES:
        summary = {}
        for stat in STATS:
            summary[f"e2e_{stat}"] = mape([(r.sims[source]["e2e"][stat], r.real["e2e"][stat]) for r in results])
        for key in ("throughput_rps", "violation_rate"):
            summary[key] = mape([(r.sims[source][key], r.real[key]) for r in results])
        for q in SLA_QUANTILES:
            summary[f"violation_rate_at_real_{q}"] = mape(
                [(r.at_real_slas[source][q], r.at_real_slas["real"][q]) for r in results if r.at_real_slas]
            )
        inside = [within_band(r.sims[source]["e2e"]["p99"], r.real_band["p99"]) for r in results]
        summary["p99_inside_band_share"] = float(np.mean(inside)) if inside else math.nan
        out[source] = summary
    return out


def _ms(x: float) -> str:
    return "-" if not math.isfinite(x) else f"{x * 1e3:.2f}"


def _r(x: float) -> str:
    return "-" if not math.isfinite(x) else f"{x:.2f}"


def _value(metric: str, x: float) -> str:
    if metric.endswith("_s"):
        return _ms(x)
    if metric == "violation_rate":
        return "-" if not math.isfinite(x) else f"{x:.2%}"
    return "-" if not math.isfinite(x) else f"{x:.1f}"


def markdown(results: Sequence[ConfigResult], meta: dict[str, Any]) -> str:
    """The report: setup, the table (latencies in ms; a column per simulated source, `SOURCES`), the planned p99
    and the errors."""
    lines = [f"# rlscale calibrate: {meta.get('spec', '')}", ""]
    lines.append(
        f"Trace {meta.get('trace')} seconds {meta.get('window')}, {meta.get('arrivals')} arrivals (seed "
        f"{meta.get('seed')}), SLA {meta.get('sla_s')} s, {meta.get('repeats')} real repeats a configuration on "
        "fresh servers; load: peak = fraction x the bottleneck's capacity at batch 1 "
        f"({meta.get('capacity_rps', 0):.1f} rps). Real: the median over the repeats, [min, max] the band. "
        f"Simulated ({meta.get('service_model')} service model) on the same arrivals: calibrated, the model's "
        "in-process run times and the serving overhead; served, the served requests' run times and the overhead; "
        "uncalibrated, the spec's own profile."
    )
    lines.append("")
    fit = meta.get("fit") or {}
    fitted = {f["stage"]: f for f in fit.get("stages", [])}
    for stage in meta.get("stages", []):
        overhead = stage.get("overhead_s")
        shown = "-" if overhead is None else f"{overhead * 1e3:.2f} ms"
        line = (
            f"- stage `{stage['stage']}`: {stage['variant']} ({stage.get('factory') or stage.get('url')}), CPU "
            f"{stage.get('cpu')}; serving overhead {shown} measured ({stage.get('overhead_how')})"
        )
        if stage["stage"] in fitted:
            f = fitted[stage["stage"]]
            mode = fit.get("mode", "off-core")
            if mode != "off-core" and f.get("overhead_s") is not None:
                line += (
                    f"; fitted on the core: {f['overhead_s'] * 1e3:.2f} ms a request"
                    + (f" and {f['batch_cost_s'] * 1e3:.2f} ms a batch" if mode == "on-core" else "")
                    + f" (the server's CPU a request less the model's: {f['overhead_ceiling_s'] * 1e3:.2f} ms)"
                )
            line += (
                f"; fitted off the core: a delay of {f['delay_s'] * 1e3:.2f} ms and a jitter of mean "
                f"{f['jitter_s'] * 1e3:.2f} ms"
            )
        lines.append(line)
    if fitted:
        lines.append("")
        lines.append(
            "The calibrated column uses the fitted figures: fit runs "
            f"{', '.join(fit.get('runs', []))} ({fit.get('repeats', 1)} repeats each, matched at their median) with "
            f"arrivals of seed {fit.get('seed')}, none of them a configuration below (`rlscale.calibrate.fit`)."
        )
    lines.append("")
    head = "".join(f" {label} | /real |" for label in SOURCES.values())
    lines.append(f"| config | where | metric | real | real band |{head}")
    lines.append("|---|---|---|---|---|" + "---|---|" * len(SOURCES))
    for row in table_rows(results):
        m = row["metric"]
        cells = "".join(f" {_value(m, row[source])} | {_r(row[f'{source}_over_real'])} |" for source in SOURCES)
        lines.append(
            f"| {row['config']} | {row['where']} | {m.removesuffix('_s')} | {_value(m, row['real'])} | "
            f"[{_value(m, row['real_min'])}, {_value(m, row['real_max'])}] |{cells}"
        )
    lines.append("")
    if any(r.at_real_slas for r in results):
        lines.append("Violation rates at SLAs set at the real end-to-end p90 and p99 (the median over the repeats):")
        lines.append("")
        head = "".join(f" {label} |" for label in SOURCES.values())
        lines.append(f"| config | SLA | SLA (ms) | real |{head}")
        lines.append("|---|---|---|---|" + "---|" * len(SOURCES))
        for r in results:
            if not r.at_real_slas:
                continue
            for q in SLA_QUANTILES:
                rates = "".join(f" {_value('violation_rate', r.at_real_slas[source][q])} |" for source in SOURCES)
                lines.append(
                    f"| {r.config.name} | real {q} | {_ms(r.at_real_slas['sla_s'][q])} | "
                    f"{_value('violation_rate', r.at_real_slas['real'][q])} |{rates}"
                )
        lines.append("")
    lines.append(
        "Planned end-to-end p99 against the real p99: the planner's latency model over the window's seconds (each "
        "second's load), and its steady state at the window's peak (what a planner planning for the peak promises), "
        "calibrated and on the spec's own profile:"
    )
    lines.append("")
    lines.append(
        "| config | real p99 (ms) | planned (ms) | planned/real | at peak (ms) | peak/real | uncal. at peak (ms) "
        "| uncal./real |"
    )
    lines.append("|---|---|---|---|---|---|---|---|")
    for r in results:
        real = r.real["e2e"]["p99"]
        lines.append(
            f"| {r.config.name} | {_ms(real)} | {_ms(r.planned_p99_s)} | {_r(ratio(r.planned_p99_s, real))} | "
            f"{_ms(r.planned_p99_s_at_peak)} | {_r(ratio(r.planned_p99_s_at_peak, real))} | "
            f"{_ms(r.planned_p99_s_uncalibrated)} | {_r(ratio(r.planned_p99_s_uncalibrated, real))} |"
        )
    lines.append("")
    lines.append("Mean absolute percentage error over the configurations (end to end, against the median):")
    lines.append("")
    summary = errors_summary(results)
    keys = list(summary["sim"])
    lines.append("| simulator | " + " | ".join(keys) + " |")
    lines.append("|---|" + "---|" * len(keys))
    for source, label in SOURCES.items():
        cells = [
            (f"{v:.0%}" if k == "p99_inside_band_share" else f"{v:.1%}") if math.isfinite(v) else "-"
            for k, v in summary[source].items()
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def document(results: Sequence[ConfigResult], meta: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The ``--json`` document: ``meta``'s fields, ``configs`` (`ConfigResult.to_dict`), ``errors`` (the MAPE
    summary); NaN as null."""
    doc = {**meta, **extra, "configs": [r.to_dict() for r in results], "errors": errors_summary(results)}
    return finite_or_none(doc)


def plot(results: Sequence[ConfigResult], path: Path) -> Path:
    """End-to-end p50, p90 and p99 per configuration: real (the median, the band as an error bar) against the
    simulator calibrated and uncalibrated; log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.config.name for r in results]
    x = np.arange(len(results))
    width = 0.8 / (1 + len(SOURCES))
    fig, axes = plt.subplots(1, 3, figsize=(max(9.0, 1.6 * len(results) * 3), 3.8), sharey=True)
    for ax, stat in zip(axes, ("p50", "p90", "p99"), strict=True):
        real = np.array([r.real["e2e"][stat] for r in results]) * 1e3
        lo_hi = np.array([r.real_band[stat] for r in results]).reshape(-1, 2) * 1e3
        err = np.abs(np.vstack([real - lo_hi[:, 0], lo_hi[:, 1] - real]))
        offset = -len(SOURCES) / 2 * width
        ax.bar(x + offset, real, width, yerr=np.nan_to_num(err), capsize=3, label="real (band)")
        for i, (source, label) in enumerate(SOURCES.items(), start=1):
            values = [r.sims[source]["e2e"][stat] * 1e3 for r in results]
            ax.bar(x + offset + i * width, values, width, label=f"sim, {label}")
        ax.set_xticks(x, names, rotation=30, ha="right")
        ax.set_yscale("log")
        ax.set_title(f"end-to-end {stat}")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("ms (log)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
