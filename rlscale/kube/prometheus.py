"""Reading a pipeline's metrics from Prometheus (prometheus-api-client), through PromQL templates.

A pipeline instrumented with the standard names below needs no configuration; others override the templates.
Every stage exports (labels ``pipeline`` and ``stage``):

| metric | type | meaning |
|---|---|---|
| ``rlscale_requests_total`` | counter | requests that arrived at the stage |
| ``rlscale_request_latency_seconds`` | histogram | stage latency (queue wait + service) of each request |
| ``rlscale_queue_length`` | gauge | requests waiting at the stage |

Templates are Python format strings with the fields ``pipeline``, ``stage``, ``window`` (a PromQL duration) and
``q`` (a quantile). A query that cannot be answered (Prometheus unreachable, slow, or no data yet) raises
`MetricsUnavailable`, a temporary error: the caller keeps its configuration and retries later.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from rlscale.errors import RlscaleError

DEFAULT_TEMPLATES = {
    "arrival_rate": 'sum(rate(rlscale_requests_total{{pipeline="{pipeline}",stage="{stage}"}}[{window}]))',
    "latency_quantile": (
        "histogram_quantile({q}, sum by (le) "
        '(rate(rlscale_request_latency_seconds_bucket{{pipeline="{pipeline}",stage="{stage}"}}[{window}])))'
    ),
    "queue_length": 'max(rlscale_queue_length{{pipeline="{pipeline}",stage="{stage}"}})',
}


class MetricsUnavailable(RlscaleError):
    """Prometheus did not answer, answered too slowly, or has no data for a query (temporary)."""


@dataclass
class PrometheusReader:
    """Answers metric questions about one pipeline.

    Attributes:
        url: Prometheus base URL, e.g. ``http://127.0.0.1:9090``.
        pipeline: the ``pipeline`` label value.
        templates: PromQL templates by name (defaults: `DEFAULT_TEMPLATES`).
        timeout_s: per-query HTTP timeout; a slower answer counts as unavailable.
    """

    url: str
    pipeline: str
    templates: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_TEMPLATES))
    timeout_s: float = 3.0

    def __post_init__(self) -> None:
        from prometheus_api_client import PrometheusConnect

        unknown = set(self.templates) - set(DEFAULT_TEMPLATES)
        if unknown:
            raise RlscaleError(f"unknown PromQL template(s): {', '.join(sorted(unknown))}")
        self.templates = {**DEFAULT_TEMPLATES, **self.templates}
        self._prom = PrometheusConnect(url=self.url, disable_ssl=True, timeout=self.timeout_s)

    def _query(self, name: str, **fields) -> float:
        promql = self.templates[name].format(pipeline=self.pipeline, **fields)
        try:
            result = self._prom.custom_query(promql, timeout=self.timeout_s)
        except Exception as exc:  # noqa: BLE001 - connection refused, timeouts, HTTP errors: all temporary here
            raise MetricsUnavailable(f"Prometheus at {self.url} did not answer {name}: {type(exc).__name__}") from None
        if not result:
            raise MetricsUnavailable(f"Prometheus has no data for {name} ({promql})")
        value = float(result[0]["value"][1])
        if math.isnan(value):
            raise MetricsUnavailable(f"Prometheus returned NaN for {name} ({promql})")
        return value

    def arrival_rate_rps(self, stage: str, window: str = "10s") -> float:
        """Requests per second arriving at ``stage``, averaged over ``window``."""
        return self._query("arrival_rate", stage=stage, window=window)

    def latency_quantile_s(self, stage: str, q: float = 0.99, window: str = "10s") -> float:
        """The ``q`` quantile of the stage latency over ``window``, from the histogram buckets."""
        return self._query("latency_quantile", stage=stage, window=window, q=q)

    def queue_length(self, stage: str) -> int:
        return int(round(self._query("queue_length", stage=stage)))

    def arrival_history_rps(self, stage: str, seconds: int = 120, step_s: int = 1) -> np.ndarray:
        """Per-step arrival rates at ``stage`` over the last ``seconds`` (oldest first), for the predictors."""
        promql = self.templates["arrival_rate"].format(pipeline=self.pipeline, stage=stage, window=f"{2 * step_s}s")
        end = datetime.now()
        try:
            result = self._prom.custom_query_range(
                promql,
                start_time=end - timedelta(seconds=seconds),
                end_time=end,
                step=f"{step_s}s",
                timeout=self.timeout_s,
            )
        except Exception as exc:  # noqa: BLE001
            raise MetricsUnavailable(
                f"Prometheus at {self.url} did not answer a range query: {type(exc).__name__}"
            ) from None
        if not result:
            raise MetricsUnavailable(f"Prometheus has no arrival history for stage {stage!r}")
        values = np.array([float(v) for _t, v in result[0]["values"]])
        return np.nan_to_num(values, nan=0.0)

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
