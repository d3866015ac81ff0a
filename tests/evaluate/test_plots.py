"""The plots are drawn, show what happened (batch, cores, intervals with no completion) and mark runs that violate
the SLA; checked on the figures' artists, not on pixels."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from rlscale.evaluate.compare import (
    SLA_THRESHOLD,
    Comparison,
    draw_accuracy_vs_cost,
    markdown_table,
    place_labels,
    plot_accuracy_vs_cost,
    violates_sla,
)
from rlscale.evaluate.plots import draw_timeline, plot_timeline, timeline_series
from rlscale.policies.registry import make_policy
from rlscale.sim.runner import run_episode
from rlscale.spec import load_spec
from rlscale.workload import Trace


@pytest.fixture(scope="module")
def video():
    return load_spec("video")


@pytest.fixture(scope="module")
def result(video):
    trace = Trace("steps", np.concatenate([np.full(60, 5.0), np.full(60, 25.0), np.full(60, 8.0)]))
    return run_episode(video, trace, make_policy("ipa", video, trace, None))


@pytest.mark.slow
def test_the_timeline_has_batch_and_cores_panels_and_marks_intervals_with_no_completion(tmp_path, video, result):
    # intervals 3 and 4 as if everything had been dropped: no completion, no p99
    ivs = list(result.intervals)
    for i in (3, 4):
        ivs[i] = dataclasses.replace(
            ivs[i], completed=0, dropped=ivs[i].arrivals, e2e_p99_s=float("nan"), sla_violation_rate=1.0
        )
    broken = dataclasses.replace(result, intervals=ivs)
    series = timeline_series(broken)
    assert list(np.flatnonzero(series.no_completion)) == [3, 4]
    assert series.violation_share[3] == 1.0 and series.dropped_share[3] == 1.0
    fig = draw_timeline(video, broken)
    labels = [a.get_ylabel() for a in fig.axes]
    for st in video.stages:
        assert f"{st.name}\nreplicas" in labels and f"{st.name}\nbatch, cores" in labels
    latency = next(a for a in fig.axes if a.get_ylabel() == "latency (s)")
    spans = [p for p in latency.patches if p.get_label() != "_nolegend_"]
    assert len(latency.patches) == 2, spans
    starts = sorted(p.get_x() for p in latency.patches)
    assert starts == [ivs[3].start_s, ivs[4].start_s]
    assert any("no request completed" in t.get_text() for t in latency.get_legend().get_texts())
    batch_ax = next(a for a in fig.axes if a.get_ylabel() == f"{video.stages[0].name}\nbatch, cores")
    drawn = batch_ax.get_lines()[0].get_ydata()
    assert list(drawn[:-1]) == [c.stages[0].batch for c in result.configs]
    path = plot_timeline(video, result, tmp_path / "t.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def _record(policy, cost, accuracy, violations, seed=0):
    return {
        "trace": "bursty",
        "policy": policy,
        "seed": seed,
        "requests": 1000,
        "late": 1000 * violations,
        "dropped": 0,
        "in_flight": 0,
        "sla_violation_rate": violations,
        "accuracy": accuracy,
        "cost_cores": cost,
        "objective": 0.0,
        "score": 0.0,
        "p99_latency_s": 1.0,
        "reconfigurations": 0,
        "decision_ms_p99": 0.1,
    }


def test_a_run_that_violates_the_sla_is_drawn_hollow_red_and_listed(tmp_path, video):
    comp = Comparison(video)
    comp.records = [_record("cheap-bad", 2.0, 0.6, 0.75), _record("good", 8.0, 0.5, 0.001)]
    assert violates_sla(comp, "bursty", "cheap-bad") and not violates_sla(comp, "bursty", "good")
    fig = draw_accuracy_vs_cost(comp, ["bursty"], ["cheap-bad", "good"])
    ax = fig.axes[0]
    hollow = [c for c in ax.collections if len(c.get_facecolors()) == 0 or c.get_facecolors()[0][3] == 0]
    assert len(hollow) == 1
    assert tuple(hollow[0].get_offsets()[0]) == (2.0, 0.6)
    assert tuple(hollow[0].get_edgecolors()[0][:3]) == (1.0, 0.0, 0.0)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("violates the SLA" in t and f"{SLA_THRESHOLD:.0%}" in t for t in legend)
    assert "SLA-meeting" in fig._suptitle.get_text()
    assert plot_accuracy_vs_cost(comp, ["bursty"], ["cheap-bad", "good"], tmp_path / "a.png").exists()
    table = markdown_table(comp, ["bursty"], ["cheap-bad", "good"])
    assert "bursty / cheap-bad: violates the SLA (75.00%" in table and "good: violates" not in table


def test_labels_of_nearby_points_do_not_overlap(video):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4))
    points = [(x, y, f"policy-{i}") for i, (x, y) in enumerate([(1, 1), (1.05, 1.0), (1.0, 1.04), (1.1, 1.05)])]
    ax.scatter([p[0] for p in points], [p[1] for p in points])
    ax.set_xlim(0, 3)
    ax.set_ylim(0, 3)
    anns = place_labels(ax, [*points, (1, 1, "twin")])
    assert len(anns) == 4 and any(a.get_text() == "policy-0, twin" for a in anns)  # one place, one label
    from matplotlib.text import Text

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [Text.get_window_extent(a, renderer) for a in anns]  # the text, not the line to its point
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b)
    plt.close(fig)
