"""The twin's exported metrics: weighted histogram buckets, ``le`` labels as client libraries write them, and
counters scaled so that Prometheus' per-wall-second rate reads per-simulated-second."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from rlscale.kube.prometheus import le_label
from rlscale.spec import load_spec
from tests.integration.twin import TwinMetrics, _Histogram


@pytest.mark.parametrize("bound", [6.89, 10.0, 0.05, 1.0, 2.5])
def test_le_label_matches_prometheus_client(bound):
    registry = CollectorRegistry()
    Histogram("h", "h", registry=registry, buckets=(bound,)).observe(0)
    assert f'h_bucket{{le="{le_label(bound)}"}}' in generate_latest(registry).decode()


def test_weighted_histogram_is_cumulative_and_le_inclusive():
    h = _Histogram((1.0, 2.0))
    h.observe(np.array([0.5, 1.0, 1.5, 3.0]), weight=0.1)
    assert h.buckets() == [("1.0", pytest.approx(0.2)), ("2.0", pytest.approx(0.3)), ("+Inf", pytest.approx(0.4))]
    assert h.total == pytest.approx(0.6)


def test_exported_families_carry_the_standard_names_and_the_sla_bucket():
    spec = load_spec("video")
    metrics = TwinMetrics(spec)
    metrics.requests["crop"] = 12.5
    metrics.e2e.observe(np.array([1.0, spec.sla_s, 9.0]), weight=1.0)
    registry = CollectorRegistry()
    registry.register(metrics)
    text = generate_latest(registry).decode()
    assert 'rlscale_requests_total{pipeline="video",stage="crop"} 12.5' in text
    # the late_rate template needs a bucket boundary exactly at the SLA: 2 of 3 requests are within it
    assert f'rlscale_e2e_latency_seconds_bucket{{le="{le_label(spec.sla_s)}",pipeline="video"}} 2.0' in text
    for name in ("rlscale_queue_length", "rlscale_busy_seconds_total", "rlscale_dropped_requests_total"):
        assert name in text


@pytest.mark.parametrize(("bound", "written"), [(10.0, "10.0"), (10.0, "10"), (6.89, "6.89"), (0.5, "0.5")])
def test_le_pattern_matches_python_and_go_clients(bound, written):
    import re

    from rlscale.kube.prometheus import le_pattern

    regex = le_pattern(bound).replace("\\\\", "\\")  # PromQL string escapes -> the regex Prometheus applies
    assert re.fullmatch(regex, written)
    assert not re.fullmatch(regex, written + "1")


def test_template_patch_creates_a_missing_env_list_once():
    import jsonpatch

    from rlscale.kube.objects import template_patch
    from rlscale.types import StageConfig

    spec = load_spec("video")
    dep = {"metadata": {"name": "d"}, "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "s"}]}}}}
    patched = jsonpatch.apply_patch(dep, template_patch(dep, spec.kubernetes, StageConfig.one("yolov5s", 4, 3, 2)))
    container = patched["spec"]["template"]["spec"]["containers"][0]
    assert container["env"] == [{"name": "MODEL_VARIANT", "value": "yolov5s"}, {"name": "MAX_BATCH_SIZE", "value": "4"}]
    assert container["resources"] == {"requests": {"cpu": "2"}, "limits": {"cpu": "2"}}
    assert patched["spec"]["replicas"] == 3
