"""The metrics reader against a real Prometheus scraping a real exporter (both on 127.0.0.1)."""

from __future__ import annotations

import threading
import time

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from rlscale.errors import PermanentError
from rlscale.kube.prometheus import MetricsUnavailable, PrometheusReader
from tests.integration.conftest import free_port


@pytest.fixture
def exporter():
    """A pipeline exporting the standard metrics, with a thread that counts 20 arrivals per second."""
    registry = CollectorRegistry()
    requests = Counter("rlscale_requests", "arrivals", ["pipeline", "stage"], registry=registry)
    latency = Histogram(
        "rlscale_request_latency_seconds",
        "stage latency",
        ["pipeline", "stage"],
        registry=registry,
        buckets=(0.1, 0.2, 0.5, 1.0, 2.0),
    )
    queue = Gauge("rlscale_queue_length", "queued", ["pipeline", "stage"], registry=registry)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    stop = threading.Event()

    def load():
        while not stop.is_set():
            for _ in range(2):
                requests.labels("toy", "crop").inc()
                latency.labels("toy", "crop").observe(0.15)  # every request between 0.1 and 0.2 s
            queue.labels("toy", "crop").set(7)
            time.sleep(0.1)  # 20 arrivals per second

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    yield f"127.0.0.1:{port}"
    stop.set()
    worker.join(timeout=2)
    server.shutdown()


@pytest.mark.e2e
def test_reader_reads_rate_quantile_queue_and_history(prometheus, exporter):
    url, set_targets = prometheus
    set_targets([exporter])
    reader = PrometheusReader(url, "toy")
    reader.wait_for_data("crop", timeout_s=40)
    deadline = time.monotonic() + 30
    while True:  # the rate settles once the window holds several scrapes
        rate = reader.arrival_rate_rps("crop", window="5s")
        if 15 <= rate <= 25 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert 15 <= rate <= 25  # 20 rps generated (thread timing jitters)
    p99 = reader.latency_quantile_s("crop", q=0.99, window="10s")
    assert 0.1 <= p99 <= 0.2  # all observations fall in the (0.1, 0.2] bucket
    assert reader.queue_length("crop") == 7
    history = reader.arrival_history_rps("crop", seconds=10)
    assert history.size >= 2  # one value per second since the first scrapes
    assert 10 <= history[-1] <= 30
    with pytest.raises(MetricsUnavailable, match="no data"):
        reader.queue_length("classification")  # a stage nobody exports


def test_unreachable_prometheus_is_a_temporary_error():
    reader = PrometheusReader(f"http://127.0.0.1:{free_port()}", "toy", timeout_s=1)
    with pytest.raises(MetricsUnavailable, match="did not answer"):
        reader.arrival_rate_rps("crop")


def test_a_prometheus_that_never_answers_is_unavailable_within_the_timeout():
    """A server that accepts the connection but never replies (hung, overloaded): a temporary error, not a hang."""
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # connections queue in the backlog; nobody reads them
        port = listener.getsockname()[1]
        reader = PrometheusReader(f"http://127.0.0.1:{port}", "toy", timeout_s=0.5)
        started = time.monotonic()
        with pytest.raises(MetricsUnavailable, match="did not answer"):
            reader.arrival_rate_rps("crop")
        assert time.monotonic() - started < 5


@pytest.mark.e2e
def test_a_query_prometheus_rejects_is_a_permanent_error_with_its_reason(prometheus):
    url, _ = prometheus
    reader = PrometheusReader(url, "toy", templates={"queue_length": "max(rlscale_queue_length{{stage=}})"})
    with pytest.raises(MetricsUnavailable) as info:
        reader.queue_length("crop")
    assert isinstance(info.value, PermanentError)
    assert "HTTP 400" in str(info.value) and "parse error" in str(info.value)
    assert "\n" not in str(info.value)
