"""Reading a pipeline's metrics from Prometheus (prometheus-api-client), through PromQL templates.

A pipeline instrumented with the standard names below needs no configuration; others override the templates in
the spec's ``kubernetes.promql`` section. Every metric carries the labels ``pipeline`` and (per stage) ``stage``:

| metric | type | labels | meaning |
|---|---|---|---|
| ``rlscale_requests_total`` | counter | pipeline, stage | requests that arrived at the stage |
| ``rlscale_request_latency_seconds`` | histogram | pipeline, stage | stage latency (queue wait + service) |
| ``rlscale_queue_length`` | gauge | pipeline, stage | requests waiting (per replica or per stage: summed) |
| ``rlscale_busy_seconds_total`` | counter | pipeline, stage | replica-seconds spent serving batches |
| ``rlscale_e2e_latency_seconds`` | histogram | pipeline | end-to-end latency; needs a bucket boundary at the SLA |
| ``rlscale_dropped_requests_total`` | counter | pipeline | requests dropped at any stage |

Templates are Python format strings with the fields ``pipeline``, ``stage``, ``window`` (a PromQL duration),
``q`` (a quantile) and ``sla`` (a regex matching the ``le`` label of the SLA's bucket, ``10|10\\\\.0``).
Only ``arrival_rate``, ``arrival_history`` and ``queue_length`` are required; the others may have no data (no
traffic, a pipeline that does not export them) and then read as NaN. A query that cannot be answered
(Prometheus unreachable or slow, or no data for a required metric) raises `MetricsUnavailable`: the caller keeps
its configuration and tries again: after a backoff if the error is temporary, next interval if Prometheus
rejected the query.
"""

from __future__ import annotations

import ast
import json
import math
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from rlscale.errors import RlscaleError

_STAGE = '{{pipeline="{pipeline}",stage="{stage}"}}'
_PIPE = '{{pipeline="{pipeline}"}}'
DEFAULT_TEMPLATES = {
    "arrival_rate": f"sum(rate(rlscale_requests_total{_STAGE}[{{window}}]))",
    # the history policies see: irate uses the last two scrapes in the window, so peaks keep the scrape's resolution
    "arrival_history": f"sum(irate(rlscale_requests_total{_STAGE}[{{window}}]))",
    "latency_quantile": (
        f"histogram_quantile({{q}}, sum by (le) (rate(rlscale_request_latency_seconds_bucket{_STAGE}[{{window}}])))"
    ),
    "queue_length": f"sum(rlscale_queue_length{_STAGE})",
    "busy_rate": f"sum(rate(rlscale_busy_seconds_total{_STAGE}[{{window}}]))",
    "e2e_latency_quantile": (
        f"histogram_quantile({{q}}, sum by (le) (rate(rlscale_e2e_latency_seconds_bucket{_PIPE}[{{window}}])))"
    ),
    "completed_rate": f"sum(rate(rlscale_e2e_latency_seconds_count{_PIPE}[{{window}}]))",
    "late_rate": (
        f"sum(rate(rlscale_e2e_latency_seconds_count{_PIPE}[{{window}}])) - "
        'sum(rate(rlscale_e2e_latency_seconds_bucket{{pipeline="{pipeline}",le=~"{sla}"}}[{window}]))'
    ),
    "dropped_rate": f"sum(rate(rlscale_dropped_requests_total{_PIPE}[{{window}}]))",
}
REQUIRED = ("arrival_rate", "queue_length")
_FIELDS = {"pipeline": "p", "stage": "s", "window": "10s", "q": 0.99, "sla": "1|1\\\\.0"}


def check_template(name: str, template: str) -> str | None:
    """Why a template cannot be used (unknown name, unknown field, bad braces), or None if it can."""
    if name not in DEFAULT_TEMPLATES:
        return f"unknown template {name!r} (known: {', '.join(DEFAULT_TEMPLATES)})"
    try:
        template.format(**_FIELDS)
    except KeyError as exc:
        return f"unknown field {{{exc.args[0]}}} (fields: {', '.join(_FIELDS)}; write PromQL braces as {{{{ }}}})"
    except (ValueError, IndexError) as exc:
        return f"not a format string ({exc}); write PromQL braces as {{{{ }}}}"
    return None


def duration(seconds: float) -> str:
    """A PromQL duration for ``seconds`` (whole milliseconds, at least 1 ms): ``30s``, ``3s``, ``250ms``."""
    ms = max(1, int(round(seconds * 1000)))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def le_label(value: float) -> str:
    """A bucket boundary as prometheus-client writes it in the ``le`` label (``6.89``, ``10.0``)."""
    return repr(float(value))


def le_pattern(value: float) -> str:
    """A PromQL regex (inside a double-quoted string) for the ``le`` label of a boundary, however the client
    wrote it: Python writes ``10.0``, Go ``10``; ``6.89`` is the same in both."""
    forms = {le_label(value), f"{float(value):g}", format(float(value), "f").rstrip("0").rstrip(".")}
    return "|".join(sorted(f.replace(".", "\\\\.").replace("+", "\\\\+") for f in forms))


class MetricsUnavailable(RlscaleError):
    """Prometheus did not answer, answered too slowly, or has no data for a query.

    ``permanent`` marks what waiting will not fix (Prometheus rejected the query: a template error, or the
    credentials); the sidecar then says so once and keeps holding instead of backing off.
    """

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


def _http_failure(url: str, name: str, exc: Exception) -> MetricsUnavailable:
    """A one-line `MetricsUnavailable` for a failed request, with Prometheus' own reason when it gave one."""
    text = str(exc)
    found = re.match(r"HTTP Status Code (\d+) \((.*)\)$", text, re.S)
    if found is None:
        return MetricsUnavailable(f"Prometheus at {url} did not answer {name}: {type(exc).__name__}")
    status, body = int(found.group(1)), found.group(2)
    try:  # the client quotes the body as bytes' repr; Prometheus' body is JSON with an "error" field
        detail = str(json.loads(ast.literal_eval(body)).get("error", ""))
    except (ValueError, SyntaxError, TypeError, AttributeError):
        detail = ""
    detail = " ".join((detail or body).split())[:300]
    return MetricsUnavailable(
        f"Prometheus at {url} refused {name}: HTTP {status}: {detail}", permanent=400 <= status < 500 and status != 429
    )


@dataclass
class PrometheusReader:
    """Answers metric questions about one pipeline.

    Attributes:
        url: Prometheus base URL, e.g. ``http://127.0.0.1:9090``.
        pipeline: the ``pipeline`` label value.
        templates: PromQL templates by name (defaults: `DEFAULT_TEMPLATES`).
        timeout_s: per-query HTTP timeout; a slower answer counts as unavailable.
        bearer_token: sent as ``Authorization: Bearer`` (managed and OpenShift Prometheus need one).
        verify_tls: check an https Prometheus' certificate (turn off only for a test setup).
    """

    url: str
    pipeline: str
    templates: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_TEMPLATES))
    timeout_s: float = 3.0
    bearer_token: str | None = None
    verify_tls: bool = True

    def __post_init__(self) -> None:
        from prometheus_api_client import PrometheusConnect
        from urllib3.util.retry import Retry

        for name, template in self.templates.items():
            problem = check_template(name, template)
            if problem:
                raise RlscaleError(f"PromQL template {name}: {problem}")
        self.templates = {**DEFAULT_TEMPLATES, **self.templates}
        # no client-side retries: a failed query is reported at once and the sidecar's backoff decides when to retry
        headers = {"Authorization": f"Bearer {self.bearer_token}"} if self.bearer_token else None
        self._prom = PrometheusConnect(
            url=self.url,
            headers=headers,
            disable_ssl=not self.verify_tls,
            timeout=self.timeout_s,
            retry=Retry(total=0),
        )

    def query(self, name: str, *, optional: bool = False, **fields) -> float:
        """The value of template ``name`` (the first series); NaN when ``optional`` and there is no data.

        Raises:
            MetricsUnavailable: Prometheus did not answer in time, or a non-optional query has no data.
        """
        promql = self.templates[name].format(pipeline=self.pipeline, **fields)
        try:
            result = self._prom.custom_query(promql, timeout=self.timeout_s)
        except Exception as exc:  # noqa: BLE001 - connection refused, timeouts, HTTP errors: one line each
            raise _http_failure(self.url, name, exc) from None
        try:
            value = float(result[0]["value"][1]) if result else math.nan
        except (KeyError, IndexError, TypeError, ValueError):
            raise MetricsUnavailable(f"{name} ({promql}) did not return an instant vector", permanent=True) from None
        if math.isinf(value):
            raise MetricsUnavailable(f"{name} ({promql}) returned {value}")
        if math.isnan(value) and not optional:
            raise MetricsUnavailable(
                f"Prometheus has no data for {name} ({promql}); is the metric exported, and does the window span two "
                "scrapes?"
            )
        return value

    def arrival_rate_rps(self, stage: str, window: str = "10s") -> float:
        """Requests per second arriving at ``stage``, averaged over ``window``."""
        return self.query("arrival_rate", stage=stage, window=window)

    def latency_quantile_s(self, stage: str, q: float = 0.99, window: str = "10s", optional: bool = False) -> float:
        """The ``q`` quantile of the stage latency over ``window``, from the histogram buckets."""
        return self.query("latency_quantile", optional=optional, stage=stage, window=window, q=q)

    def queue_length(self, stage: str) -> int:
        return int(round(self.query("queue_length", stage=stage)))

    def arrival_history_rps(
        self, stage: str, seconds: float = 120, step_s: float = 1.0, window: str = "2s"
    ) -> np.ndarray:
        """Per-step arrival rates at ``stage`` over the last ``seconds`` (oldest first), for the predictors.

        Each value is the ``arrival_history`` template at that step: by default the rate between the last two
        scrapes inside ``window`` (``irate``), so a peak is as sharp as the scrape interval allows; ``window`` must
        span two scrapes (30 s or more with a 15 s scrape interval).
        """
        promql = self.templates["arrival_history"].format(
            pipeline=self.pipeline, stage=stage, window=window, q=0.99, sla="1"
        )
        end = datetime.now()
        try:
            result = self._prom.custom_query_range(
                promql,
                start_time=end - timedelta(seconds=seconds),
                end_time=end,
                step=f"{step_s:g}",  # float seconds: sub-second steps serve a twin in accelerated time
                timeout=self.timeout_s,
            )
        except Exception as exc:  # noqa: BLE001
            raise _http_failure(self.url, "the arrival history", exc) from None
        if not result:
            raise MetricsUnavailable(f"Prometheus has no arrival history for stage {stage!r}")
        try:
            values = np.array([float(v) for _t, v in result[0]["values"]])
        except (KeyError, IndexError, TypeError, ValueError):
            raise MetricsUnavailable(
                f"the arrival history of stage {stage!r} is not a range vector", permanent=True
            ) from None
        return np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)

    def wait_for_data(self, stage: str, timeout_s: float = 30.0, poll_s: float = 0.5) -> None:
        """Block until Prometheus has scraped the stage's arrival counter (it starts scraping a few s after start)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.arrival_rate_rps(stage, window="5s")
                return
            except MetricsUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(poll_s)
