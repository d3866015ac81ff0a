"""Plots people would rather look at than read: an episode's timeline.

`plot_timeline` draws, over the trace's time:

- the load (per second) and, where the policy says, the load it planned for;
- for each stage, its replicas (dots coloured by the variant in force) and its batch size and cores per replica;
- the end-to-end p99 against the SLA, with the intervals in which no request completed shaded and marked
  (everything dropped or still queued: there is no p99 to draw, and a gap would hide the worst intervals);
- the share of requests that violated the SLA (late + dropped) and that were dropped, and the requests still
  inside the pipeline at each interval's end.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rlscale.sim.runner import RunResult
from rlscale.spec import PipelineSpec


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@dataclass(frozen=True)
class TimelineSeries:
    """Per-interval arrays of a run's trace intervals (drain excluded), what `draw_timeline` draws.

    Attributes:
        starts_s / ends_s: each interval's bounds.
        p99_s: end-to-end p99 (NaN where nothing completed).
        no_completion: intervals in which no request completed although some were expected (arrivals or a queue).
        violation_share / dropped_share: (late + dropped) / arrivals and dropped / arrivals (0 with no arrivals;
            above 1 when requests that arrived earlier are dropped in an interval of few arrivals).
        in_flight: requests inside the pipeline at each interval's end.
        predicted_rps: the load the policy planned for at the end of each interval (NaN where it does not say).
    """

    starts_s: np.ndarray
    ends_s: np.ndarray
    p99_s: np.ndarray
    no_completion: np.ndarray
    violation_share: np.ndarray
    dropped_share: np.ndarray
    in_flight: np.ndarray
    predicted_rps: np.ndarray


def timeline_series(result: RunResult) -> TimelineSeries:
    """The per-interval series of ``result``'s trace intervals."""
    n_iv = len(result.configs)
    ivs = result.intervals[:n_iv]
    arrivals = np.array([m.arrivals for m in ivs], dtype=float)
    completed = np.array([m.completed for m in ivs], dtype=float)
    dropped = np.array([m.dropped for m in ivs], dtype=float)
    in_flight = np.cumsum(arrivals - completed - dropped)
    waiting_before = np.concatenate([[0.0], in_flight[:-1]])
    with np.errstate(invalid="ignore", divide="ignore"):
        dropped_share = np.where(arrivals > 0, dropped / np.maximum(arrivals, 1), 0.0)
    predicted = np.full(n_iv, np.nan)
    for i, note in enumerate(result.steps[:n_iv]):
        if note.predicted_rps is not None:
            predicted[i] = note.predicted_rps
    return TimelineSeries(
        starts_s=np.array([m.start_s for m in ivs]),
        ends_s=np.array([m.end_s for m in ivs]),
        p99_s=np.array([m.e2e_p99_s if m.completed else np.nan for m in ivs], dtype=float),
        no_completion=(completed == 0) & ((arrivals > 0) | (waiting_before > 0)),
        violation_share=np.array([m.sla_violation_rate for m in ivs], dtype=float),
        dropped_share=dropped_share,
        in_flight=in_flight,
        predicted_rps=predicted,
    )


def _held(starts: np.ndarray, ends: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A per-interval value as a post-step line that holds to the last interval's end (not only its start)."""
    if not starts.size:
        return starts, values
    return np.append(starts, ends[-1]), np.append(values, values[-1])


def draw_timeline(spec: PipelineSpec, result: RunResult):
    """The timeline figure of ``result`` (a matplotlib Figure; the caller saves and closes it)."""
    plt = _pyplot()
    sim = result.simulator
    if sim is None:
        raise ValueError("the run's simulator is needed to draw its timeline")
    n_iv = len(result.configs)
    series = timeline_series(result)
    starts, ends = series.starts_s, series.ends_s
    n_stages = len(spec.stages)
    heights = [1.6] + [1.3, 1.1] * n_stages + [1.6, 1.4]
    fig, axes = plt.subplots(
        len(heights), 1, figsize=(10, 1.25 * sum(heights)), sharex=True, gridspec_kw={"height_ratios": heights}
    )
    r = result.record
    in_flight_note = f", {r['in_flight']} still queued at the end" if r.get("in_flight") else ""
    axes[0].set_title(
        f"{spec.name} / {r['trace']} / {r['policy']}: violations {r['sla_violation_rate']:.2%}, "
        f"accuracy {r['accuracy']:.3f}, cost {r['cost_cores']:.1f} cores{in_flight_note}",
        fontsize=9,
    )
    ax = axes[0]
    ax.plot(np.arange(sim.trace.duration_s), sim.trace.rps, lw=0.7, color="0.3", label="load")
    if np.isfinite(series.predicted_rps).any():
        # planned at the end of interval i for interval i + 1
        ax.step(ends, series.predicted_rps, where="post", lw=0.9, color="tab:orange", ls="--", label="planned for")
    ax.set_ylabel("load (rps)", fontsize=8)
    ax.legend(fontsize=7, loc="upper right")

    for s, stage in enumerate(spec.stages):
        ax = axes[1 + 2 * s]
        variants = stage.variant_names
        colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(variants)))
        configs = [c.stages[s] for c in result.configs[:n_iv]]
        reps = np.array([c.total_replicas for c in configs])  # over every pool; variant, batch, cores: the main pool's
        var_idx = np.array([variants.index(c.main.variant) for c in configs])
        ax.step(*_held(starts, ends, reps), where="post", color="0.5", lw=0.8)
        for i, v in enumerate(variants):
            sel = var_idx == i
            if sel.any():
                ax.scatter(starts[sel], reps[sel], s=10, color=colours[i], label=v, zorder=3)
        ax.set_ylabel(f"{stage.name}\nreplicas", fontsize=8)
        ax.set_ylim(0, max(1, int(reps.max())) * 1.25 + 0.5)
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=6, loc="upper right", ncol=min(5, len(variants)), title="variant", title_fontsize=6)

        ax = axes[2 + 2 * s]
        batch = np.array([c.main.batch for c in configs])
        cores = np.array([c.main.cores for c in configs])
        ax.step(*_held(starts, ends, batch), where="post", color="tab:blue", lw=1.0, label="batch size")
        ax.step(
            *_held(starts, ends, cores), where="post", color="tab:green", lw=1.0, ls="--", label="cores per replica"
        )
        ax.set_ylabel(f"{stage.name}\nbatch, cores", fontsize=8)
        ax.set_ylim(0, max(int(batch.max()), int(cores.max()), 1) * 1.3 + 0.5)
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=6, loc="upper right", ncol=2)

    ax = axes[-2]
    ax.plot(starts, series.p99_s, lw=1, marker=".", ms=2, label="end-to-end p99")
    ax.axhline(spec.sla_s, color="red", ls="--", lw=1, label=f"SLA {spec.sla_s:g} s")
    top = np.nanmax(np.append(series.p99_s, spec.sla_s)) * 1.45  # room for the legend above the lines
    ax.set_ylim(0, top)
    if series.no_completion.any():
        label = "no request completed (all dropped or queued)"
        for i in np.flatnonzero(series.no_completion):
            ax.axvspan(starts[i], ends[i], color="tab:red", alpha=0.25, lw=0, label=label)
            label = None
        # a marker at the top too, so a single interval is seen at any width
        mid = (starts + ends)[series.no_completion] / 2
        ax.scatter(mid, np.full(mid.size, top * 0.95), marker="v", s=12, color="tab:red", zorder=3)
    ax.set_ylabel("latency (s)", fontsize=8)
    ax.legend(fontsize=7, loc="upper left")

    ax = axes[-1]
    ax.step(
        *_held(starts, ends, 100 * series.violation_share), where="post", color="tab:red", lw=1, label="late + dropped"
    )
    ax.fill_between(
        *_held(starts, ends, 100 * series.dropped_share), step="post", color="tab:red", alpha=0.3, lw=0, label="dropped"
    )
    peak = max(100.0, 100 * float(np.max(series.violation_share, initial=0.0)))  # drops of earlier arrivals: > 100%
    ax.set_ylim(0, peak * 1.4)  # room for the legend above the lines
    ax.set_yticks(np.linspace(0, 100, 5) if peak <= 100 else ax.get_yticks())
    ax.set_ylabel("violations\n(% of arrivals)", fontsize=8)
    ax.set_xlabel("time (s)")
    twin = ax.twinx()
    twin.step(ends, series.in_flight, where="pre", color="0.35", lw=0.8, ls=":", label="in the pipeline")
    twin.set_ylabel("requests in\nthe pipeline", fontsize=8)
    twin.set_ylim(0, max(1.0, float(series.in_flight.max(initial=0.0))) * 1.4)
    handles = ax.get_legend_handles_labels()
    extra = twin.get_legend_handles_labels()
    ax.legend(handles[0] + extra[0], handles[1] + extra[1], fontsize=7, loc="upper left", ncol=3)
    for a in axes:
        a.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def plot_timeline(spec: PipelineSpec, result: RunResult, path: Path) -> Path:
    """Draw `draw_timeline` into ``path`` (a PNG); returns ``path``."""
    plt = _pyplot()
    fig = draw_timeline(spec, result)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path
