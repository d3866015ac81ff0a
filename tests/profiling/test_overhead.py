"""The serving overhead of a served model (`rlscale.profiling.overhead`): the metrics read, the arithmetic on fake
readings, the runs against the stdlib test server with scripted metrics, what a server without metrics leaves, and
``rlscale profile --url --metrics-url`` against a real ``rlscale serve`` started here."""

from __future__ import annotations

import json
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

import pytest

from rlscale.profiles import load_profile, runs_path
from rlscale.profiling.overhead import (
    LOAD_CONCURRENCY,
    MODEL_BUSY,
    MODEL_CPU,
    MetricsReader,
    Overhead,
    Reading,
    RunCost,
    Unavailable,
    measure_overhead,
    model_metric,
    parse_metrics,
    run_cost,
)
from rlscale.profiling.served import V2Client, input_tensor
from tests.profiling.v2_server import ServedModel, serve
from tests.serve.stage_server import StageServer, require_mlserver

ROOT = Path(__file__).resolve().parents[2]

EXPOSITION = """\
# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 12.5
# HELP rlscale_requests_total requests (items) that arrived
# TYPE rlscale_requests_total counter
rlscale_requests_total{pipeline="p",stage="a"} 40.0
rlscale_requests_total{pipeline="p",stage="b"} 2.0
rlscale_requests_created{pipeline="p",stage="a"} 1.7e+09
# TYPE rlscale_model_cpu_seconds_total counter
rlscale_model_cpu_seconds_total{pipeline="p",stage="a"} 0.75
# TYPE rlscale_busy_seconds_total counter
rlscale_busy_seconds_total{pipeline="p",stage="a"} NaN
# TYPE rest_server_requests_total counter
rest_server_requests_total{path="/v2/models/{model_name}/infer",status_code="200"} 7.0
"""


def test_the_metrics_are_summed_over_label_sets():
    reading = parse_metrics(EXPOSITION)
    assert reading == Reading(cpu_s=12.5, model_cpu_s=0.75, busy_s=None, requests=42.0)  # NaN: absent
    assert model_metric(reading) == MODEL_CPU
    assert model_metric(Reading(cpu_s=1.0, busy_s=0.5)) == MODEL_BUSY
    with pytest.raises(Unavailable, match="no process_cpu_seconds_total"):
        model_metric(Reading(model_cpu_s=1.0))
    with pytest.raises(Unavailable, match="neither rlscale_model_cpu_seconds_total nor rlscale_busy_seconds_total"):
        model_metric(Reading(cpu_s=1.0, requests=3.0))


@pytest.mark.parametrize("text", ["<html>not found</html>", 'x{a="1" 2', "metric not-a-number"])
def test_text_that_is_no_exposition_is_unavailable(text):
    with pytest.raises(Unavailable, match="not Prometheus text"):
        parse_metrics(text)


def test_the_overhead_is_the_process_cpu_beyond_the_models_per_request():
    before = Reading(cpu_s=10.0, model_cpu_s=2.0, busy_s=3.0, requests=100.0)
    after = Reading(cpu_s=10.5, model_cpu_s=2.1, busy_s=3.3, requests=300.0)
    cost = run_cost(before, after, 200, 1, MODEL_CPU)
    assert (cost.cpu_s, cost.model_s, cost.counted) == (pytest.approx(0.5), pytest.approx(0.1), 200)
    assert cost.overhead_s == pytest.approx((0.5 - 0.1) / 200)  # 2 ms a request
    doc = cost.to_dict()
    assert doc["cpu_per_request_s"] == pytest.approx(0.0025) and doc["model_per_request_s"] == pytest.approx(0.0005)
    busy = run_cost(before, after, 200, LOAD_CONCURRENCY, MODEL_BUSY)  # the model's wall time instead
    assert busy.overhead_s == pytest.approx((0.5 - 0.3) / 200) and busy.concurrency == LOAD_CONCURRENCY
    # another client's requests meanwhile: per request the server counted; no count: per request sent
    crowded = run_cost(before, Reading(cpu_s=11.0, model_cpu_s=2.2, requests=500.0), 200, 1, MODEL_CPU)
    assert crowded.per == 400 and crowded.overhead_s == pytest.approx(0.8 / 400)
    uncounted = run_cost(Reading(cpu_s=1.0, model_cpu_s=0.0), Reading(cpu_s=1.2, model_cpu_s=0.1), 50, 1, MODEL_CPU)
    assert uncounted.counted is None and uncounted.overhead_s == pytest.approx(0.1 / 50)


@pytest.mark.parametrize(
    "after, message",
    [
        (Reading(cpu_s=10.05, model_cpu_s=2.1), "less than its model's"),  # the model outside the process
        (Reading(cpu_s=1.0, model_cpu_s=0.1), "process_cpu_seconds_total went down"),  # a restart
        (Reading(cpu_s=11.0), "rlscale_model_cpu_seconds_total disappeared"),
    ],
)
def test_a_run_that_cannot_be_costed_says_why(after, message):
    with pytest.raises(Unavailable, match=message):
        run_cost(Reading(cpu_s=10.0, model_cpu_s=2.0), after, 100, 1, MODEL_CPU)


def _cost(overhead_s: float, concurrency: int) -> RunCost:
    return RunCost(100, concurrency, 100, overhead_s * 100 + 0.2, 0.2)


def test_the_figure_kept_is_the_one_under_load_or_with_wall_time_the_larger():
    low, high = _cost(0.001, LOAD_CONCURRENCY), _cost(0.002, 1)
    cpu = Overhead("u", MODEL_CPU, no_load=high, under_load=low)
    assert cpu.kept == "under_load" and cpu.overhead_s == pytest.approx(0.001)
    assert Overhead("u", MODEL_CPU, no_load=high).kept == "no_load"  # the burst failed: the no-load figure
    wall = Overhead("u", MODEL_BUSY, no_load=high, under_load=low, note="lower bound")
    assert wall.kept == "no_load" and wall.overhead_s == pytest.approx(0.002)
    none = Overhead("u", note="no metrics at u (HTTP 404)")
    assert none.overhead_s is None and none.summary() == "overhead_s left empty: no metrics at u (HTTP 404)"
    doc = cpu.to_dict()
    assert doc["kept"] == "under_load" and doc["no_load"]["concurrency"] == 1 and doc["note"] is None
    assert "1 ms under load (8 in flight) and 2 ms at no load" in cpu.summary()


class ScriptedMetrics:
    """A metrics reader whose process CPU grows by 3 ms and the model's by 1 ms per request the server answered."""

    url = "scripted"

    def __init__(self, served: ServedModel, model: str = MODEL_CPU) -> None:
        self.served = served
        self.model = model

    def read(self) -> Reading:
        n = len(self.served.requests)
        model = {"model_cpu_s" if self.model == MODEL_CPU else "busy_s": 0.001 * n}
        return Reading(cpu_s=0.003 * n, requests=float(n), **model)


def test_two_runs_of_one_item_requests_no_load_then_under_load():
    with serve() as (url, served):
        client = V2Client(url, "mlp")
        tensor = input_tensor(client.metadata())
        seen = []
        overhead = measure_overhead(
            client, tensor, "mlp-256", ScriptedMetrics(served), requests=24, warmup=2, advance=seen.append
        )
    assert served.requests == [[1, 3, 32, 32]] * (2 + 24 + 24)  # warm-up, then each run: one item a request
    assert overhead.note is None and overhead.model_metric == MODEL_CPU
    assert overhead.no_load.concurrency == 1 and overhead.under_load.concurrency == LOAD_CONCURRENCY
    assert overhead.no_load.counted == overhead.under_load.counted == 24
    assert overhead.overhead_s == pytest.approx(0.002) and overhead.kept == "under_load"
    assert [s.split(":")[0] for s in seen] == ["serving overhead no load", "serving overhead under load"]


def test_with_the_models_wall_time_only_the_figure_is_said_to_be_a_lower_bound():
    with serve() as (url, served):
        client = V2Client(url, "mlp")
        overhead = measure_overhead(
            client, input_tensor(client.metadata()), "mlp-256", ScriptedMetrics(served, MODEL_BUSY), requests=5
        )
    assert overhead.model_metric == MODEL_BUSY and overhead.overhead_s == pytest.approx(0.002)
    assert "lower bound" in overhead.note and "lower bound" in overhead.summary()


def test_a_server_without_metrics_leaves_the_overhead_empty_and_sends_nothing():
    with serve() as (url, served):
        client = V2Client(url, "mlp")
        overhead = measure_overhead(client, input_tensor(client.metadata()), "v", MetricsReader(f"{url}/metrics"))
    assert overhead.overhead_s is None and served.requests == []
    assert overhead.note == f"no metrics at {url}/metrics (HTTP 404)"


def test_a_refused_request_of_one_item_leaves_the_overhead_empty():
    with serve(ServedModel(input_name="pixels")) as (url, served):
        client = V2Client(url, "mlp")
        tensor = input_tensor(None)  # input-0: the server wants "pixels"
        overhead = measure_overhead(client, tensor, "mlp-256", ScriptedMetrics(served), requests=5)
    assert overhead.overhead_s is None and "variant 'mlp-256' rejects batch 1: HTTP 400" in overhead.note


def _text_server(body: bytes, status: int = 200):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format, *args):  # noqa: A002
            pass

        def do_GET(self):  # noqa: N802
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_the_reader_reads_a_metrics_endpoint_and_refuses_what_is_not_one():
    server = _text_server(EXPOSITION.encode())
    try:
        assert MetricsReader(f"http://127.0.0.1:{server.server_port}/metrics").read().cpu_s == 12.5
    finally:
        server.shutdown()
    server = _text_server(b"\x00\xff garbage {{{")
    try:
        with pytest.raises(Unavailable, match="not Prometheus text"):
            MetricsReader(f"http://127.0.0.1:{server.server_port}/metrics").read()
    finally:
        server.shutdown()
    with pytest.raises(Unavailable, match="no metrics at http://127.0.0.1:1/metrics"):
        MetricsReader("http://127.0.0.1:1/metrics", timeout_s=2).read()


TINY_CPU_FACTORY = '''
"""A model that spins the CPU 2 ms a batch (whatever its size) and a model of 3 ms that sleeps instead."""
import os
import time

import numpy as np

VARIANTS = ("spin", "sleep")


def build(variant):
    def model(x):
        end = time.perf_counter() + (0.002 if variant == "spin" else 0.003)
        if variant == "spin":
            while time.perf_counter() < end:
                pass
        else:
            time.sleep(0.003)
        return x * 2.0

    return model, lambda b: np.ones((b, 4), dtype=np.float32)
'''


@pytest.mark.subprocess
@pytest.mark.e2e
@pytest.mark.parametrize("variant", ["spin", "sleep"])
def test_rlscale_profile_measures_the_serving_overhead_of_the_reference_runtime(tmp_path, variant):
    """`rlscale profile --url --metrics-url` against `rlscale serve` started here: the overhead is a positive number
    of CPU seconds, below a request's wall time, at no load and under load, in every row of the CSV, from the
    model thread's CPU time (a model that sleeps costs its thread no CPU, so its 3 ms never count as overhead, nor
    are they taken off it as the wall time would be); the run times beside the CSV, as many as the repeats."""
    require_mlserver()
    (tmp_path / "cpumodels.py").write_text(TINY_CPU_FACTORY)
    server = StageServer(
        tmp_path, "--model", "cpumodels:build", "--variant", variant, "--batch", "4", "--batch-timeout", "0",
        "--pipeline", "toy", "--stage", "classify",
    )  # fmt: skip
    server.start()
    try:
        out = tmp_path / "served.csv"
        argv = ["profile", "--url", server.url, "--model-name", "classify", "--variant", variant, "--batch", "1,2"]
        argv += ["--cores", "1", "--warmup", "2", "--repeats", "7", "--out", str(out), "--json"]
        argv += ["--metrics-url", server.metrics_url, "--overhead-requests", "100"]
        run = subprocess.run(
            [sys.executable, "-m", "rlscale.cli", *argv], capture_output=True, text=True, timeout=300, cwd=tmp_path
        )
    finally:
        assert server.stop() == 0, server.output()
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)  # one document
    overhead = doc["overhead"]
    assert overhead["note"] is None and overhead["model_metric"] == MODEL_CPU, overhead
    assert overhead["kept"] == "under_load" and overhead["metrics_url"] == server.metrics_url
    wall_s = min(p["p50_s"] for p in doc["points"])  # a request of one item, from sending to its whole answer
    for name in ("no_load", "under_load"):
        cost = overhead[name]
        assert cost["requests"] == cost["counted"] == 100
        assert 0 < cost["overhead_s"] < wall_s, (name, cost, wall_s)
        if variant == "sleep":
            assert cost["model_per_request_s"] < 0.0015  # sleeping costs the model's thread (almost) no CPU
    assert overhead["under_load"]["concurrency"] == LOAD_CONCURRENCY
    assert all(p["overhead_s"] == overhead["overhead_s"] for p in doc["points"])
    model = load_profile(out)
    assert model.overhead_s(variant, 1) == pytest.approx(overhead["overhead_s"], rel=1e-5)
    assert all(len(model.runs_s(variant, b, 1)) == 7 for b in (1, 2))
    assert doc["runs"] == str(runs_path(out)) and "overhead_s under load from " + MODEL_CPU in doc["source"]
    for p in doc["points"]:
        assert p["p50_s"] <= p["p90_s"] <= p["p99_s"] and p["repeats"] == 7
    assert run.stderr.strip() == ""  # nothing to say: the overhead was measured


def test_the_command_line_names_the_measurements_defaults():
    """The parser is built without the profiler, so it keeps its own copies of the defaults --help names."""
    from rlscale.cli import profile
    from rlscale.profiling import overhead

    assert profile.DEFAULT_OVERHEAD_REQUESTS == overhead.DEFAULT_REQUESTS
    assert profile.LOAD_CONCURRENCY == overhead.LOAD_CONCURRENCY
