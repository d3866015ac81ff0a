"""``rlscale demo``: the main job on the bundled default pipeline (video) and IPA's four load patterns.

Runs the bundled PPO agent (behind the safety layer), IPA, its tuned variant, the oracle, FA2-low and the
Kubernetes HPA on the simulator over the four IPA windows
(through `rlscale.evaluate.compare`, the code path of ``rlscale compare``) and prints the comparison (violations,
accuracy, cost, score); writes the comparison's files and plots, a timeline per run, and the inputs every
experiment runs on (the traces; the latency model: measured and derived points against the fit).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rlscale.spec import PipelineSpec, bundled_pipelines, load_spec
from rlscale.workload import IPA_PATTERNS, load_trace

if TYPE_CHECKING:
    from rlscale.evaluate.compare import PolicyFactory

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


DEMO_POLICIES = ("ppo", "ipa", "ipa-tuned", "ipa-hold", "oracle", "fa2-low", "hpa")


def run_demo(
    out_dir: Path,
    make_policy: PolicyFactory | str,
    pipeline: str = DEFAULT_PIPELINE,
    seed: int = 0,
    executor: str = "process",
    workers: int | None = None,
    ray_address: str | None = None,
) -> int:
    """Run the comparison, print it and write the plots; returns the exit code.

    Args:
        out_dir: folder for the comparison's files and the plots.
        make_policy: builds each policy by name (`rlscale.evaluate.compare.PolicyFactory`, or its ``module:function``
            name; the CLI hands in its registry's).
        pipeline: bundled name or spec path.
        seed: kept for callers; the demo runs seed 0 with even arrivals.
        executor: ``serial``, ``process`` or ``ray`` (`rlscale.evaluate.sweep`), as in ``rlscale compare``.
        workers: worker processes for ``process``, CPUs of the local Ray for ``ray`` (None: every core).
        ray_address: the Ray cluster for ``ray`` (None: a local Ray started for the demo).
    """
    from rich.console import Console
    from rich.table import Table

    from rlscale.evaluate.compare import run_comparison

    console = Console() if sys.stdout.isatty() else Console(width=160)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = load_spec(pipeline)
    comp = run_comparison(
        pipeline,
        list(IPA_PATTERNS),
        list(DEMO_POLICIES),
        make_policy=make_policy,
        seeds=1,
        out=out_dir,
        progress=sys.stderr.isatty(),
        overwrite=True,  # the demo always redoes every run: the previous demo's results are replaced
        executor=executor,
        workers=workers,
        ray_address=ray_address,
    )
    table = Table(title=f"rlscale demo: {spec.name} pipeline (SLA {spec.sla_s:g} s), IPA's load patterns")
    for col in ("trace", "policy", "requests", "violations", "accuracy", "cost (cores)", "score", "reconfigs"):
        table.add_column(col, justify="left" if col in ("trace", "policy") else "right")
    for r in comp.records:
        table.add_row(
            r["trace"],
            r["policy"],
            str(r["requests"]),
            f"{r['sla_violation_rate']:.2%}",
            f"{r['accuracy']:.3f}",
            f"{r['cost_cores']:.2f}",
            f"{r['score']:.2f}",
            str(r["reconfigurations"]),
            end_section=r["policy"] == DEMO_POLICIES[-1],
        )
    console.print(table)
    files = comp.files + [plot_traces(out_dir), plot_profiles(spec, out_dir)]
    console.print(
        f"wrote {len(files)} files to {out_dir}/: results.md/.csv, accuracy_vs_cost.png, violations.png, "
        f"timeline-<trace>-<policy>.png and -seed0.csv, traces.png, profiles-{spec.name}.png"
    )
    console.print(f"bundled pipelines: {', '.join(bundled_pipelines())} (see `rlscale pipelines`)")
    return 0
