"""A hostile Prometheus for unit tests: a tiny HTTP server on 127.0.0.1 that answers the reader's queries with
canned (and crafted) JSON, so tests can feed NaN, +Inf, negative or non-numeric values, error bodies and slow
answers without a real Prometheus.

Instant queries are recognised by the metric their default template reads (`answer_key`); the range query is
the arrival history. A healthy pipeline at 20 rps is the default answer to everything.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

HEALTHY: dict[str, Any] = {
    "arrival_rate": "20",
    "queue_length": "3",
    "busy_rate": "1.5",
    "latency_quantile": "0.5",
    "e2e_latency_quantile": "2.0",
    "completed_rate": "20",
    "late_rate": "0",
    "dropped_rate": "0",
    "history": ["20"] * 120,
}


class Raw:
    """An answer sent as it is: ``body`` (a JSON-able value, or bytes) with ``status``, after ``delay_s``."""

    def __init__(self, body: Any, status: int = 200, delay_s: float = 0.0) -> None:
        self.body, self.status, self.delay_s = body, status, delay_s


def answer_key(promql: str) -> str:
    """Which template a default-template PromQL query came from."""
    if "histogram_quantile" in promql:
        return "e2e_latency_quantile" if "rlscale_e2e_latency" in promql else "latency_quantile"
    if "rlscale_e2e_latency_seconds_count" in promql:
        return "late_rate" if "_bucket" in promql else "completed_rate"
    for metric, key in (
        ("rlscale_requests_total", "arrival_rate"),
        ("rlscale_queue_length", "queue_length"),
        ("rlscale_busy_seconds_total", "busy_rate"),
        ("rlscale_dropped_requests_total", "dropped_rate"),
    ):
        if metric in promql:
            return key
    raise AssertionError(f"unexpected query {promql!r}")


class FakePrometheus:
    """Serves ``answers`` (template name or ``history`` -> sample value(s), None for no data, or a `Raw`).

    Attributes:
        url: base URL, ``http://127.0.0.1:PORT``.
        queries: every (path, PromQL) asked, in order.
        auth: the Authorization header of every request.
    """

    def __init__(self, **answers: Any) -> None:
        self.answers = {**HEALTHY, **answers}
        self.queries: list[tuple[str, str]] = []
        self.auth: list[str | None] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                parts = urlsplit(self.path)
                promql = parse_qs(parts.query).get("query", [""])[0]
                fake.queries.append((parts.path, promql))
                fake.auth.append(self.headers.get("Authorization"))
                if parts.path == "/api/v1/query_range":
                    self._send(fake.range_answer(fake.answers["history"]))
                elif parts.path == "/api/v1/query":
                    self._send(fake.instant_answer(fake.answers[answer_key(promql)]))
                else:
                    self._send(Raw({"status": "error", "error": "not found"}, 404))

            def _send(self, answer: Raw) -> None:
                if answer.delay_s:
                    time.sleep(answer.delay_s)
                body = answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body).encode()
                try:
                    self.send_response(answer.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the client gave up (a timeout test)
                    pass

            def log_message(self, format, *args) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        # a short poll: stop() (shutdown) waits for the loop to look, and tests start and stop many of these
        serve = lambda: self.server.serve_forever(poll_interval=0.02)  # noqa: E731
        threading.Thread(target=serve, name="fake-prometheus", daemon=True).start()

    @staticmethod
    def instant_answer(value: Any) -> Raw:
        if isinstance(value, Raw):
            return value
        result = [] if value is None else [{"metric": {}, "value": [time.time(), value]}]
        return Raw({"status": "success", "data": {"resultType": "vector", "result": result}})

    @staticmethod
    def range_answer(values: Any) -> Raw:
        if isinstance(values, Raw):
            return values
        now = time.time()
        points = [[now - len(values) + i, v] for i, v in enumerate(values or [])]
        result = [] if values is None else [{"metric": {}, "values": points}]
        return Raw({"status": "success", "data": {"resultType": "matrix", "result": result}})

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
