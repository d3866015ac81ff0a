"""`KubernetesCluster` (the `Cluster` protocol on a cluster) reading the twin through a real Prometheus and the
API emulator: the state a policy sees matches what the simulator behind them did."""

from __future__ import annotations

import math

import pytest

from rlscale.interfaces import Cluster
from rlscale.kube.actuator import DeploymentActuator
from rlscale.kube.cluster import KubernetesCluster
from rlscale.kube.prometheus import PrometheusReader
from rlscale.model import plan_fixed_variants
from rlscale.spec import load_spec
from tests.integration.closed_loop import NS, SPEEDUP, ClosedLoop, step_trace

RPS = 20.0


@pytest.fixture
def loop(prometheus_server, kube_api, tmp_path):
    spec = load_spec("video")
    config = plan_fixed_variants(spec, [st.variants[0].name for st in spec.stages], RPS * 1.3)
    made = ClosedLoop(spec, step_trace(RPS, RPS, 0, 900), config, prometheus_server, kube_api, tmp_path)
    yield made
    made.close()


@pytest.mark.e2e
def test_observe_and_step_read_what_the_twin_did(loop):
    spec = loop.spec
    cluster = KubernetesCluster(
        spec,
        PrometheusReader(loop.prometheus.url, spec.name),
        DeploymentActuator(spec, loop.kube_api.apps_api(), NS),
        interval_s=spec.interval_s,
        window_s=30,
        speedup=SPEEDUP,
    )
    assert isinstance(cluster, Cluster)
    scraped_from = len(loop.twin.ticks)  # Prometheus has data from here on
    assert loop.wait_for(lambda: len(loop.twin.ticks) >= scraped_from + 80, timeout_s=30)  # 80 s of history

    state = cluster.observe()
    deployed = loop.deployed_config()
    assert state.config == deployed and state.interval_s == spec.interval_s
    last = state.last
    assert abs(last.arrivals / spec.interval_s - RPS) < 0.25 * RPS  # Poisson arrivals, a 30 s window
    assert state.arrival_rps.size >= 50 and abs(state.arrival_rps[-5:].mean() - RPS) < 0.3 * RPS
    assert 0 < last.e2e_p99_s < spec.sla_s and last.sla_violation_rate < 0.05
    assert last.cost_cores == deployed.total_cores
    for m, sc in zip(last.stages, deployed.stages, strict=True):
        assert m.replicas_serving == sc.replicas  # the twin writes status.readyReplicas
        assert 0 < m.utilisation <= 1 and m.queue_len >= 0 and math.isfinite(m.latency_p99_s)
    # the twin's own record of the same stretch of time
    recent = [t for t in loop.twin.ticks if t.time_s > loop.twin.ticks[-1].time_s - 30]
    assert abs(sum(t.arrivals for t in recent) / 30 - last.arrivals / spec.interval_s) < 0.3 * RPS

    before = state.time_s
    metrics = cluster.step()  # waits one interval (1 s of wall time at 10x)
    assert metrics.end_s - before == pytest.approx(spec.interval_s, abs=3.0)
    assert abs(metrics.arrivals / spec.interval_s - RPS) < 0.25 * RPS
