"""Plots people would rather look at than read: an episode's timeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rlscale.sim.runner import RunResult
from rlscale.spec import PipelineSpec


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_timeline(spec: PipelineSpec, result: RunResult, path: Path) -> Path:
    """Load, per-stage replicas (coloured by variant), and end-to-end p99 against the SLA, over time."""
    plt = _pyplot()
    sim = result.simulator
    assert sim is not None
    n_iv = result.record["intervals"]
    ivs = result.intervals[:n_iv]
    starts = np.array([m.start_s for m in ivs])
    fig, axes = plt.subplots(2 + len(spec.stages), 1, figsize=(10, 2.2 * (2 + len(spec.stages))), sharex=True)
    ax = axes[0]
    ax.plot(np.arange(sim.trace.duration_s), sim.trace.rps, lw=0.7, color="0.3")
    ax.set_ylabel("load (rps)")
    r = result.record
    ax.set_title(
        f"{spec.name} / {r['trace']} / {r['policy']}: violations {r['sla_violation_rate']:.2%}, "
        f"accuracy {r['accuracy']:.3f}, cost {r['cost_cores']:.1f} cores",
        fontsize=9,
    )
    for s, stage in enumerate(spec.stages):
        ax = axes[1 + s]
        variants = stage.variant_names
        colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(variants)))
        reps = np.array([c.stages[s].replicas for c in result.configs[:n_iv]])
        var_idx = np.array([variants.index(c.stages[s].variant) for c in result.configs[:n_iv]])
        ax.step(starts, reps, where="post", color="0.5", lw=0.8)
        for i, v in enumerate(variants):
            sel = var_idx == i
            if sel.any():
                ax.scatter(starts[sel], reps[sel], s=10, color=colours[i], label=v)
        ax.set_ylabel(f"{stage.name}\nreplicas")
        ax.set_ylim(0, max(1, int(reps.max())) * 1.15 + 0.5)
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=7, loc="upper right", ncol=min(5, len(variants)))
    ax = axes[-1]
    p99 = np.array([m.e2e_p99_s for m in ivs])
    ax.plot(starts, p99, lw=1, label="end-to-end p99")
    ax.axhline(spec.sla_s, color="red", ls="--", lw=1, label=f"SLA {spec.sla_s:g} s")
    ax.set_ylabel("latency (s)")
    ax.set_xlabel("time (s)")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
