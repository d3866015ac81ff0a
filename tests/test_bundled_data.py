"""The bundled pipelines and profiles: published numbers where they exist, full grid coverage, provenance."""

from __future__ import annotations

import json
import re

import pytest

from rlscale.spec import bundled_pipelines, data_dir, load_spec

PIPELINES = ["video", "audio-qa", "audio-sent", "sum-qa", "nlp", "resnet"]
CALIBRATED_PROFILES = ("resnet-tiny", "mlp")
"""Bundled profiles measured by ``rlscale calibrate`` (pipeline ``resnet-mlp``), not derived from published data."""
SLAS = {"video": 6.89, "audio-qa": 9.23, "audio-sent": 9.42, "sum-qa": 3.84, "nlp": 17.61, "resnet": 0.75}
# InfAdapter's measured model load times (s), the anchor of every startup delay
RESNET_LOAD_S = {"resnet18": 6.44, "resnet34": 6.79, "resnet50": 6.82, "resnet101": 7.77, "resnet152": 8.52}
# IPA's accuracies for the video pipeline, as published (percent)
VIDEO_ACCURACY = {"yolov5n": 45.7, "yolov5x": 68.9, "resnet18": 69.75, "resnet152": 78.31}


def test_all_bundled_pipelines_are_present():
    assert set(PIPELINES) <= set(bundled_pipelines())


@pytest.mark.parametrize("name", PIPELINES)
def test_pipeline_loads_with_published_sla(name):
    spec = load_spec(name)
    assert spec.sla_s == pytest.approx(SLAS[name])
    assert spec.drop_limit_s >= spec.sla_s
    assert spec.stages and all(st.variants for st in spec.stages)


@pytest.mark.parametrize("name", PIPELINES)
def test_every_stage_grid_point_is_in_the_table(name):
    """Planners never extrapolate on-grid: every variant x batch x cores of a stage is a table point."""
    spec = load_spec(name)
    for st in spec.stages:
        for v in st.variant_names:
            for b in st.batch_sizes:
                for c in st.cores:
                    assert (v, b, float(c)) in st.latency.points, (name, st.name, v, b, c)


@pytest.mark.parametrize("name", PIPELINES)
def test_bigger_variants_are_slower_and_cores_help(name):
    """Sanity of the profiles: at batch 1, more accurate variants are not faster, more cores are not slower."""
    spec = load_spec(name)
    for st in spec.stages:
        c0, c1 = min(st.cores), max(st.cores)
        ordered = sorted(st.variants, key=lambda v: v.accuracy)
        for v in ordered:
            assert st.latency.latency_s(v.name, 1, c1) <= st.latency.latency_s(v.name, 1, c0) * 1.02
        lat = [st.latency.latency_s(v.name, 1, c0) for v in ordered]
        if st.task in ("crop", "classification", "resnet"):  # CNN families scale with FLOPs
            assert lat == sorted(lat), (name, st.name, lat)


def test_startup_delays_match_infadapter_load_times():
    for name in ("video", "resnet"):
        spec = load_spec(name)
        stage = spec.stages[-1]
        for v in stage.variants:
            assert v.startup_s == pytest.approx(RESNET_LOAD_S[v.name])


def test_video_accuracies_are_ipas():
    spec = load_spec("video")
    for st in spec.stages:
        for v in st.variants:
            if v.name in VIDEO_ACCURACY:
                assert v.metric_value == pytest.approx(VIDEO_ACCURACY[v.name])
                assert v.accuracy == pytest.approx(VIDEO_ACCURACY[v.name] / 100)


def test_measured_rows_come_from_named_sources():
    """Every measured row names its source; the Sponge grid and InfAdapter's table are there unchanged."""
    for path in (data_dir() / "profiles").glob("*.csv"):
        if path.name.endswith(".runs.csv") or path.stem in CALIBRATED_PROFILES:
            continue  # rlscale's own measurements (provenance: "The calibrated pair")
        text = path.read_text().splitlines()
        for line in text[1:]:
            *_x, source, kind = line.split(",")
            assert kind in ("measured", "derived"), (path.name, line)
            assert re.match(r"(sponge|ipa|infadapter|derived):", source), (path.name, line)
            if kind == "measured":
                assert not source.startswith("derived:"), (path.name, line)
    crop = load_spec("video").stages[0].latency
    assert crop.points[("yolov5n", 1, 1.0)].latency_s == pytest.approx(0.045993)  # Sponge grid, batch 1, 1 core
    assert crop.points[("yolov5n", 1, 1.0)].kind == "measured"


def test_provenance_covers_every_bundled_file():
    provenance = (data_dir() / "PROVENANCE.md").read_text()
    files = [p.relative_to(data_dir()).as_posix() for p in data_dir().rglob("*") if p.is_file()]
    files = [f for f in files if f != "PROVENANCE.md"]
    assert files
    for f in files:
        name = f.split("/")[-1]
        stem = name.rsplit(".", 1)[0]
        assert name in provenance or stem in provenance, f"PROVENANCE.md does not mention {f}"
    assert "leave-one-out" in provenance.lower()


def test_pipelines_json_is_serialisable():
    for name in PIPELINES:
        json.dumps(load_spec(name).to_dict())


@pytest.mark.slow
def test_sponge_pipeline_and_trace_run(capfd):
    """Sponge's benchmark: one YOLOv5n stage on Sponge's grid, SLO 1 s over the 4G trace, in place, 10 rps."""
    from rlscale.cli import main
    from rlscale.workload import load_trace

    spec = load_spec("sponge")
    assert (spec.sla_s, spec.interval_s, spec.core_budget, spec.in_place_resize) == (1.0, 1.0, 16, True)
    assert (spec.request_slo.payload_kb, spec.request_slo.bandwidth) == (284.0, "lte-bus")
    stage = spec.stages[0]
    assert stage.variant_names == ["yolov5n"] and stage.max_replicas == 1
    assert stage.cores == tuple(range(1, 17)) and stage.batch_sizes == (1, 2, 4, 8, 16)
    assert stage.latency.points[("yolov5n", 16, 16.0)].latency_s == pytest.approx(0.088064)  # Sponge's grid
    trace = load_trace("sponge")
    assert trace.duration_s == 600 and set(trace.rps.tolist()) == {10.0}
    assert main(["simulate", "--pipeline", "sponge", "--trace", "sponge", "--policy", "ipa", "--json"]) == 0
    record = json.loads(capfd.readouterr().out)
    assert record["pipeline"] == "sponge" and record["requests"] == 6000 and "resizes" in record


def test_the_calibrated_pair_is_bundled_with_its_runs():
    """``resnet-mlp``: the sim-to-real pair with its calibrated profiles (issue 28): run times, the serving
    overhead, the delay and jitter off the core; simulated with sampled service times under ``auto``, and planned
    with the calibrated latency."""
    from rlscale.model import is_calibrated, stage_latency_s
    from rlscale.sim.engine import empirical_service

    spec = load_spec("resnet-mlp")
    assert [s.name for s in spec.stages] == ["detect", "classify"]
    for st in spec.stages:
        v = st.variant_names[0]
        assert st.latency.has_runs and st.latency.has_overhead and empirical_service(spec, st)
        assert st.latency.overhead_s(v, 1) > 0 and st.latency.delay_s(v, 1) + st.latency.jitter_s(v, 1) > 0
        assert is_calibrated(st, v)
        for b in st.batch_sizes:
            assert (v, b, 1.0) in st.latency.points and len(st.latency.points[(v, b, 1.0)].runs_s) == 100
        # the plan at low load is at least the model's p99 plus its overhead and delay
        low = stage_latency_s(st, v, 1, 1, 1.0, replicas=1, timeout_s=0.0)
        assert low >= st.latency.latency_s(v, 1, 1) + st.latency.overhead_s(v, 1) + st.latency.delay_s(v, 1)
