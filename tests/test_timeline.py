"""Per-interval timeline rows (rlscale.timeline): what a simulated run, a comparison and the sidecar write."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from rlscale.errors import RlscaleError
from rlscale.model import plan_fixed_variants
from rlscale.policies.registry import make_policy
from rlscale.sim.cluster import Simulator
from rlscale.sim.runner import run_episode
from rlscale.spec import load_spec
from rlscale.timeline import STAGE_COLUMNS, TimelineWriter, cell, check_appendable, columns, read_rows, row, to_csv
from rlscale.types import PipelineConfig, StageConfig, VariantPool
from rlscale.workload import Trace


@pytest.fixture(scope="module")
def video():
    return load_spec("video")


@pytest.fixture(scope="module")
def steps_trace():
    return Trace("steps", np.concatenate([np.full(60, 5.0), np.full(60, 25.0), np.full(60, 8.0)]))


def _run(spec, trace, policy):
    return run_episode(spec, trace, make_policy(policy, spec, trace, None))


def test_cells_are_empty_for_missing_values_never_nan():
    assert cell(math.nan) == "" and cell(math.inf) == "" and cell(None) == ""
    assert cell(True) == "true" and cell(False) == "false"
    assert cell(0.1234567891) == "0.123457" and cell(3) == "3" and cell("yolov5n") == "yolov5n"


def test_a_runs_rows_hold_its_configs_metrics_and_decisions(video, steps_trace):
    result = _run(video, steps_trace, "ipa")
    rows = result.timeline_rows(video)
    assert len(rows) == len(result.intervals) >= len(result.configs)
    text = to_csv(video, rows)
    assert "nan" not in text.lower()
    parsed = read_rows(text)
    assert list(parsed[0]) == columns(video)
    assert all(f"{st.name}.{c}" in parsed[0] for st in video.stages for c in STAGE_COLUMNS)
    for i, (r, config, m) in enumerate(zip(parsed, result.configs, result.intervals, strict=False)):
        assert r["phase"] == "trace"
        assert float(r["time_s"]) == m.end_s
        for st, sc in zip(video.stages, config.stages, strict=True):
            assert (r[f"{st.name}.variant"], int(r[f"{st.name}.batch"])) == (sc.variant, sc.batch)
            assert (int(r[f"{st.name}.cores"]), int(r[f"{st.name}.replicas"])) == (sc.cores, sc.replicas)
        assert int(r["arrivals"]) == m.arrivals and int(r["completed"]) == m.completed
        assert float(r["arrival_rps_peak"]) == m.arrival_rps_max
        last = i == len(result.configs) - 1
        # a decision ends every trace interval but the last; ipa has no guard and plans for a load
        assert r["reconfigured"] == ("" if last else ("true" if result.configs[i + 1] != config else "false"))
        assert r["guard_changed"] == ""
        assert (r["predicted_rps"] == "") == last
    assert all(r["phase"] == "drain" and r["reconfigured"] == "" for r in parsed[len(result.configs) :])
    loads = [float(r["predicted_rps"]) for r in parsed[: len(result.configs) - 1]]
    assert max(loads) >= 25 > min(loads)  # it follows the step up and down


def test_in_flight_is_what_entered_and_has_not_left_or_dropped(video, steps_trace):
    result = _run(video, steps_trace, "static-min")
    sim = result.simulator
    assert result.record["dropped"] == 0
    entry, finish = sim.requests.entry_s, sim.outcomes.finish_s[-1]
    for r, m in zip(result.timeline_rows(video), result.intervals, strict=True):
        inside = int(np.count_nonzero(entry < m.end_s)) - int(np.count_nonzero(finish < m.end_s))
        assert int(r["in_flight"]) == inside


def test_a_guarded_policy_says_what_the_guard_did(video, steps_trace):
    rows = _run(video, steps_trace, "ppo").timeline_rows(video)
    decided = [r for r in rows if r["reconfigured"]]
    assert decided and {r["guard_changed"] for r in decided} <= {"true", "false"}
    for r in decided:
        assert (r["guard_change"] != "") == (r["guard_changed"] == "true")
    static = _run(video, steps_trace, "static-min").timeline_rows(video)
    assert {r["predicted_rps"] for r in static} == {""}  # no prediction: empty, not 0


def test_the_writer_appends_under_one_header_and_refuses_another_files(tmp_path, video):
    path = tmp_path / "sub" / "t.csv"
    config = plan_fixed_variants(video, [st.variants[0].name for st in video.stages], 5.0)
    from rlscale.timeline import row

    for t in (10.0, 20.0):
        writer = TimelineWriter(path, video)  # as a sidecar restarted (or run --once) twice
        writer.write(row(video, None, config, time_s=t))
        writer.close()
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(columns(video)) and len(lines) == 3
    assert [r["time_s"] for r in read_rows(path.read_text())] == ["10", "20"]
    with open(path, "a") as fh:  # a process killed mid-row
        fh.write("30,tra")
    TimelineWriter(path, video).write(row(video, None, config, time_s=40.0))
    assert path.read_text().splitlines()[-1].startswith("40,")
    other = tmp_path / "other.csv"
    other.write_text("trace,policy\nbursty,ipa\n")
    with pytest.raises(RlscaleError, match="--timeline"):
        TimelineWriter(other, video)
    with pytest.raises(RlscaleError, match="--timeline"):
        check_appendable(other, video)
    assert other.read_text() == "trace,policy\nbursty,ipa\n"
    with pytest.raises(RlscaleError, match=r"\.csv"):
        check_appendable(tmp_path / "t.txt", video)


class _SimCluster:
    """The simulator behind the sidecar's cluster interface (no faults)."""

    def __init__(self, spec, stop, steps):
        self.spec = spec
        initial = plan_fixed_variants(spec, [st.variants[0].name for st in spec.stages], 5.0)
        self.sim = Simulator(spec, Trace("t", np.full(600, 20.0)), initial, seed=0)
        self.stop, self.left = stop, steps

    def observe(self):
        self.left -= 1
        if self.left <= 0:
            self.stop.set()
        self.sim.step()
        return self.sim.observe()

    def apply(self, config):
        from rlscale.kube.actuator import ApplyOutcome, StageOutcome

        self.sim.apply(config)
        return ApplyOutcome(tuple(StageOutcome(st.name, "rolled") for st in self.spec.stages))


def test_the_sidecar_appends_one_row_per_decision(tmp_path, video):
    from ilp_baseline.safety import SafetyLayer
    from rlscale.kube.sidecar import Sidecar, SidecarSettings

    class Fixed:
        name = "fixed"

        def decide(self, state):
            return plan_fixed_variants(video, [st.variants[0].name for st in video.stages], 2.0)  # too small

    path = tmp_path / "t.csv"
    stop = threading.Event()
    sidecar = Sidecar(_SimCluster(video, stop, 3), Fixed(), SafetyLayer(video), SidecarSettings(0.01), stop=stop)
    sidecar.timeline = TimelineWriter(path, video)
    assert sidecar.run() == 0
    rows = read_rows(path.read_text())
    assert len(rows) == 3 == sidecar.steps
    assert rows[0]["guard_changed"] == "true" and "safety moved" in rows[0]["guard_change"]
    assert rows[0]["reconfigured"] == "true"
    assert all(float(r["arrival_rps_peak"]) == 20 for r in rows)
    assert "nan" not in path.read_text().lower()


@pytest.mark.subprocess
def test_simulate_writes_the_timeline_and_the_json_record_shows_each_stage(tmp_path):
    import json
    import subprocess
    import sys

    trace = tmp_path / "steps.csv"
    trace.write_text("rps\n" + "\n".join(["5"] * 60 + ["25"] * 60) + "\n")
    out = tmp_path / "new" / "t.csv"
    argv = ["simulate", "--pipeline", "video", "--trace", str(trace), "--policy", "ipa", "--json", "--timeline"]
    done = subprocess.run(
        [sys.executable, "-m", "rlscale.cli", *argv, str(out)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["in_flight_share"] == 0 and record["in_flight"] == 0
    for stage in record["stages"]:
        assert {"variant_mode", "batch_mode", "cores_mean", "replicas_mean"} <= set(stage)
    rows = read_rows(out.read_text())
    assert sum(r["phase"] == "trace" for r in rows) == record["intervals"]
    assert "nan" not in out.read_text().lower()


def test_a_pooled_stage_shows_its_pools_when_it_runs_several():
    spec = load_spec("video", ["stages.1.max_pools=2"])
    cols = columns(spec)
    assert "crop.pools" not in cols and columns(load_spec("video")) == [c for c in cols if c != "classification.pools"]
    assert cols.index("classification.pools") == cols.index("classification.replicas") + 1
    crop = StageConfig.one("yolov5n", 1, 2, 2)
    mixed = StageConfig.of_pools(
        [VariantPool("resnet152", 1, 3, 8, share=0.7), VariantPool("resnet50", 2, 1, 4, share=0.3)]
    )
    one = row(spec, None, PipelineConfig((crop, StageConfig.one("resnet50", 1, 2, 4))), time_s=10.0)
    two = row(spec, None, PipelineConfig((crop, mixed)), time_s=20.0)
    assert one["classification.pools"] == ""
    assert two["classification.pools"] == "resnet152 b1 x3 c8 70% + resnet50 b2 x1 c4 30%"
    assert two["classification.variant"] == "resnet152" and two["classification.replicas"] == "4"  # every pool's


def test_per_request_slos_add_the_budget_columns(video):
    sponge = load_spec("sponge")
    cols = columns(sponge)
    i = cols.index("violation_rate")
    assert cols[i + 1 : i + 4] == ["budget_min_s", "budget_p5_s", "budget_p50_s"]
    assert "budget_p5_s" not in columns(video)
    trace = Trace("ten", np.full(5, 10.0))
    rows = _run(sponge, trace, "ipa").timeline_rows(sponge)
    first = rows[0]
    assert 0.3 < float(first["budget_min_s"]) <= float(first["budget_p5_s"]) <= float(first["budget_p50_s"]) < 1.0
    assert set(rows[0]) == set(cols)
