"""``rlscale demo``: the main job on the bundled default pipeline (video) and IPA's four load patterns.

At this stage of the project the demo shows the inputs every later experiment runs on: the bundled pipelines, the
evaluation traces, and the video pipeline's latency model (measured and derived points against the fit). It
writes ``traces.png`` and ``profiles-video.png`` to the output folder.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from rlscale.spec import PipelineSpec, bundled_pipelines, load_spec
from rlscale.workload import IPA_PATTERNS, load_trace

log = logging.getLogger(__name__)

DEFAULT_PIPELINE = "video"


def plot_traces(out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(IPA_PATTERNS), 1, figsize=(9, 7), sharex=True)
    for ax, name in zip(axes, IPA_PATTERNS, strict=True):
        t = load_trace(name)
        ax.plot(np.arange(t.duration_s), t.rps, lw=0.8)
        ax.set_ylabel("rps")
        ax.set_title(f"{name}: {t.total_requests} requests, peak {t.peak_rps:g} rps", fontsize=9)
    axes[-1].set_xlabel("time (s)")
    fig.tight_layout()
    path = out / "traces.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_profiles(spec: PipelineSpec, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(spec.stages), figsize=(6 * len(spec.stages), 4.5), squeeze=False)
    for ax, stage in zip(axes[0], spec.stages, strict=True):
        cores = min(stage.cores)
        batches = np.arange(1, max(stage.batch_sizes) + 1)
        for v in stage.variants:
            fit = [stage.latency.latency_s(v.name, int(b), cores) for b in batches]
            line = ax.plot(batches, fit, lw=1, label=f"{v.name}")[0]
            pts = [p for p in stage.latency.points.values() if p.variant == v.name and p.cores == cores]
            for kind, marker in (("measured", "o"), ("derived", "x")):
                sel = [p for p in pts if p.kind == kind]
                if sel:
                    ax.scatter(
                        [p.batch for p in sel],
                        [p.latency_s for p in sel],
                        marker=marker,
                        color=line.get_color(),
                    )
        ax.set_title(
            f"{spec.name}/{stage.name}: p99 batch latency at {cores} core(s) (o measured, x derived)",
            fontsize=9,
        )
        ax.set_xlabel("batch size")
        ax.set_ylabel("latency (s)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / f"profiles-{spec.name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_demo(out_dir: Path, pipeline: str = DEFAULT_PIPELINE) -> int:
    """Print the bundled inputs and write the plots; returns the exit code."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    out_dir.mkdir(parents=True, exist_ok=True)
    table = Table(title="bundled pipelines")
    for col in ("pipeline", "SLA (s)", "stages", "variants", "core budget"):
        table.add_column(col)
    for name in bundled_pipelines():
        s = load_spec(name)
        table.add_row(
            s.name,
            f"{s.sla_s:g}",
            " -> ".join(st.name for st in s.stages),
            " | ".join(str(len(st.variants)) for st in s.stages),
            str(s.core_budget),
        )
    console.print(table)

    spec = load_spec(pipeline)
    table = Table(title=f"{spec.name}: throughput of one replica (rps) at batch {max(spec.stages[0].batch_sizes)}")
    table.add_column("stage / variant")
    for c in spec.stages[0].cores:
        table.add_column(f"{c} core(s)")
    for st in spec.stages:
        b = max(st.batch_sizes)
        for v in st.variants:
            table.add_row(
                f"{st.name} / {v.name}",
                *[f"{st.latency.throughput_rps(v.name, b, c):.1f}" for c in spec.stages[0].cores],
            )
    console.print(table)

    paths = [plot_traces(out_dir), plot_profiles(spec, out_dir)]
    for p in paths:
        console.print(f"wrote {p}")
    return 0
