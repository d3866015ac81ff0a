"""The stage runtime's metrics through a real Prometheus: ``rlscale serve`` (MLServer) under load, scraped every
second, read back with the sidecar's own reader and default PromQL templates (both on 127.0.0.1)."""

from __future__ import annotations

import math
import threading
import time

import pytest

from rlscale.kube.prometheus import PrometheusReader
from tests.serve.stage_server import StageServer, require_mlserver


@pytest.fixture
def loaded_stage(tmp_path):
    """A stage server (pipeline toy, stage classify) with a client thread sending about 20 requests per second;
    yields ``(server, sent)`` where ``sent()`` is the client's (requests, seconds) so far."""
    require_mlserver()
    server = StageServer(
        tmp_path,
        *("--pipeline", "toy", "--stage", "classify", "--variant", "triple", "--batch", "2"),
        env={"TEST_SERVICE_S": "0.005"},
    )
    server.start()
    stop = threading.Event()
    count = [0]
    start = time.monotonic()

    def load():
        while not stop.is_set():
            status, _ = server.infer("classify", [[1, 2, 3, 4]])
            assert status == 200
            count[0] += 1
            time.sleep(0.05)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    yield server, lambda: (count[0], time.monotonic() - start)
    stop.set()
    worker.join(timeout=5)
    assert server.stop() == 0, server.output()


@pytest.mark.e2e
def test_prometheus_scrapes_what_the_sidecar_reads(prometheus, loaded_stage):
    url, set_targets = prometheus
    server, sent = loaded_stage
    set_targets([f"127.0.0.1:{server.metrics_port}"])
    reader = PrometheusReader(url, "toy")
    reader.wait_for_data("classify", timeout_s=30)
    deadline = time.monotonic() + 20
    while True:  # the rate settles once the window holds several scrapes
        rate = reader.arrival_rate_rps("classify", window="5s")
        requests, seconds = sent()
        client_rate = requests / seconds
        if 0.6 * client_rate <= rate <= 1.4 * client_rate or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert 0.6 * client_rate <= rate <= 1.4 * client_rate, (rate, client_rate)
    assert reader.queue_length("classify") in (0, 1)  # one client: at most its own request waits
    p99 = reader.latency_quantile_s("classify", q=0.99, window="10s")
    assert math.isfinite(p99) and 0 < p99 < 1  # a 5 ms model on an idle server
    busy = reader.query("busy_rate", stage="classify", window="5s", optional=True)
    assert 0 < busy < 1  # a fraction of each second spent running batches
