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

Every value is a rate, a count or a duration, so a usable one is a finite number >= 0. Anything else (missing,
NaN, ±Inf, negative, not a number: JSON ``true`` is not 1 rps) is *no data*, never a value to act on:

| metric | drives | an unusable value |
|---|---|---|
| ``arrival_rate``, ``arrival_history`` (each point) | load, safety floor | `MetricsUnavailable`: hold, back off |
| ``queue_length`` | backlog, the agent's view | `MetricsUnavailable`: hold, back off |
| ``busy_rate``, ``completed_rate``, ``late_rate``, ``dropped_rate`` | observations | NaN (no data), one warning |
| ``latency_quantile``, ``e2e_latency_quantile`` | observations | NaN (no data), one warning; +Inf is kept |

``histogram_quantile`` answers +Inf when the quantile lies beyond the largest bucket: a reading (very slow), not
a fault.

An answer is also *no data* (the same row of the table above: hold, or NaN for an observation) when

- a sample is stale: its timestamp is more than ``max_staleness_s`` (default 300 s, Prometheus' own lookback
  delta; ``rlscale sidecar --max-staleness`` tightens it) before the query was sent, or more than `CLOCK_SKEW_S`
  after the answer came (a clock or a cache that is off); for the arrival history, its newest point must be that
  recent and none may lie in the future;
- it holds several series: a template must answer one, and says in PromQL how series combine (the defaults
  ``sum(...)`` them); whether several series are parts to add (pods), copies (two scrape jobs, HA pairs) or
  quantiles that do not add at all is not for the reader to guess, so it never picks one;
- it carries ``warnings`` (a partial answer: a remote store or shard did not answer, so values may be low);
- a rate of requests (the load, its history, the completed, late and dropped rates) is above `MAX_LOAD_RPS`, the
  most requests per second any trace rlscale accepts may carry (`rlscale.inputs.MAX_TRACE_RPS`); a queue is
  above `MAX_QUEUE`, that load for the longest drop limit a spec may have. Such a figure is a broken exporter or
  template, and acting on it would scale to the whole core budget.

Credentials in the URL (``http://user:password@host``) are used, and shown nowhere (`redact_url`).
"""

from __future__ import annotations

import ast
import json
import logging
import math
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from rlscale.errors import PermanentError, RlscaleError, RuntimeFault, TemporaryError
from rlscale.inputs import MAX_TRACE_RPS

# the templates and their check live in the core (the spec validates with them); re-exported for existing importers
from rlscale.promql import DEFAULT_TEMPLATES as DEFAULT_TEMPLATES
from rlscale.promql import MAX_TEMPLATE_CHARS as MAX_TEMPLATE_CHARS
from rlscale.promql import TEMPLATE_FIELDS as TEMPLATE_FIELDS
from rlscale.promql import check_template as check_template
from rlscale.urls import redact_url as redact_url  # re-exported for existing importers

log = logging.getLogger(__name__)

QUANTILES = ("latency_quantile", "e2e_latency_quantile")
"""Templates whose +Inf is a reading (the quantile lies beyond the largest bucket), not a fault."""


MAX_STALENESS_S = 300.0
"""The oldest sample the reader acts on, in seconds before the query: Prometheus' own lookback delta (5 minutes,
``--query.lookback-delta``), beyond which Prometheus itself calls a series stale."""

CLOCK_SKEW_S = 30.0
"""How far in the future (of the sidecar's clock) a sample may lie: clocks of the sidecar's node and Prometheus'
disagree a little; a sample further ahead is from a broken clock or a cache, and no data."""

MAX_LOAD_RPS = MAX_TRACE_RPS
"""The highest plausible request rate (per second): the limit on every trace rlscale simulates, trains or plans
on. A higher reading is a broken exporter or template (1e300 rps), not a load to scale for."""

MAX_QUEUE = MAX_LOAD_RPS * 3600.0
"""The most requests a pipeline can hold queued: `MAX_LOAD_RPS` for the longest drop limit a spec may set (1 h)."""

PLAUSIBLE_MAX = {
    "arrival_rate": MAX_LOAD_RPS,
    "arrival_history": MAX_LOAD_RPS,
    "completed_rate": MAX_LOAD_RPS,
    "late_rate": MAX_LOAD_RPS,
    "dropped_rate": MAX_LOAD_RPS,
    "queue_length": MAX_QUEUE,
}
"""The largest value of each template that is a reading rather than a fault (templates not listed: no bound)."""


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


def sample_value(raw: Any) -> float | None:
    """A sample value as Prometheus writes it (a string: ``"1.5"``, ``"NaN"``, ``"+Inf"``) or a JSON number; None
    for anything else (``true``, objects, text that is no number)."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        return float(raw)
    if isinstance(raw, str):
        try:
            return float(raw)
        except ValueError:
            return None
    return None


def unusable(name: str, value: float | None) -> str | None:
    """Why ``value`` of template ``name`` is no data (``NaN``, ``+Inf``, ``-20``, ``not a number``), or None if
    it is a finite number >= 0 (or +Inf of a quantile, see `QUANTILES`)."""
    if value is None:
        return "not a number"
    if math.isnan(value):
        return "NaN"
    if value < 0:
        return "-Inf" if math.isinf(value) else f"{value:g}"
    if math.isinf(value) and name not in QUANTILES:
        return "+Inf"
    bound = PLAUSIBLE_MAX.get(name)
    if bound is not None and value > bound:
        return f"{value:g}, above the plausible maximum of {bound:g}"
    return None


def sample_time(raw: Any) -> float | None:
    """A sample's timestamp (Unix seconds, a JSON number) or None if it is not a finite number."""
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        return None
    try:
        t = float(raw)
    except ValueError:
        return None
    return t if math.isfinite(t) else None


def stale(t: float, sent: float, received: float, max_staleness_s: float) -> str | None:
    """Why a sample stamped ``t`` is stale for a query sent at ``sent`` and answered at ``received`` (Unix
    seconds), or None if it is recent: older than ``max_staleness_s`` or more than `CLOCK_SKEW_S` in the future."""
    if t < sent - max_staleness_s:
        return f"a sample {sent - t:.0f} s old (stale: more than {max_staleness_s:g} s)"
    if t > received + CLOCK_SKEW_S:
        return f"a sample {t - received:.0f} s in the future (more than the {CLOCK_SKEW_S:g} s clock skew allowed)"
    return None


class MetricsUnavailable(RuntimeFault):
    """Prometheus did not answer, answered too slowly, or has no data for a query: a runtime fault, made as a
    `TemporaryError` (hold, back off, retry) or, with ``permanent``, a `PermanentError`: what waiting will not fix
    (Prometheus rejected the query: a template error, or the credentials); the sidecar then says so once and keeps
    holding instead of backing off.
    """

    def __new__(cls, message: str, permanent: bool = False) -> MetricsUnavailable:
        if cls is MetricsUnavailable:
            cls = _PermanentMetricsError if permanent else _TemporaryMetricsError
        return super().__new__(cls)

    def __init__(self, message: str, permanent: bool = False) -> None:
        Exception.__init__(self, message)

    def __reduce__(self):
        return (MetricsUnavailable, (str(self), not self.temporary))


class _TemporaryMetricsError(MetricsUnavailable, TemporaryError):
    """No data now: waiting may fix it."""


class _PermanentMetricsError(MetricsUnavailable, PermanentError):
    """Prometheus refused the query: waiting will not fix it."""


def _is_timeout(exc: BaseException) -> bool:
    """Whether a failed request timed out: requests reports a read timeout under ``Retry(total=0)`` as a
    ConnectionError wrapping urllib3's ReadTimeoutError, so look through the wrapped errors."""
    from requests.exceptions import Timeout
    from urllib3.exceptions import TimeoutError as Urllib3Timeout

    seen: set[int] = set()
    stack: list[Any] = [exc]
    while stack:
        e = stack.pop()
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, Timeout | Urllib3Timeout | TimeoutError):
            return True
        stack += [getattr(e, "reason", None), e.__cause__, e.__context__, *e.args]
    return False


def _queried_url(response: Any) -> str | None:
    """The URL a response answered, without its query string or credentials (None when unknown)."""
    url = getattr(response, "url", None)
    return redact_url(str(url).split("?", 1)[0]) if url else None


def _api_error(body: Any) -> tuple[str, str] | None:
    """(errorType, error) of a Prometheus API error answer (``{"status": "error", ...}``), else None."""
    if isinstance(body, dict) and body.get("status") == "error":
        return str(body.get("errorType") or "error"), " ".join(str(body.get("error") or "").split())[:300]
    return None


@dataclass(repr=False)
class PrometheusReader:
    """Answers metric questions about one pipeline.

    Attributes:
        url: Prometheus base URL, e.g. ``http://127.0.0.1:9090`` (``http://user:password@host`` sends basic
            auth; the credentials are shown nowhere).
        pipeline: the ``pipeline`` label value.
        templates: PromQL templates by name (defaults: `DEFAULT_TEMPLATES`).
        timeout_s: per-query HTTP timeout; a slower answer counts as unavailable.
        bearer_token: sent as ``Authorization: Bearer`` (managed and OpenShift Prometheus need one).
        verify_tls: check an https Prometheus' certificate (turn off only for a test setup).
        basic_auth: (user, password) sent as basic auth (what the manifests' Secret gives the sidecar); shown
            nowhere.
        max_staleness_s: the oldest sample acted on, in seconds before the query (`MAX_STALENESS_S`: Prometheus'
            own 5 minutes); an older (or a future) one is no data.
    """

    url: str
    pipeline: str
    templates: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_TEMPLATES))
    timeout_s: float = 3.0
    bearer_token: str | None = None
    verify_tls: bool = True
    basic_auth: tuple[str, str] | None = field(default=None, repr=False)
    max_staleness_s: float = MAX_STALENESS_S
    _last_response: Any = field(default=None, init=False)
    _warned: set[str] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        import requests
        from prometheus_api_client import PrometheusConnect
        from urllib3.util.retry import Retry

        for name, template in self.templates.items():
            problem = check_template(name, template)
            if problem:
                raise RlscaleError(f"PromQL template {name}: {problem}")
        self.templates = {**DEFAULT_TEMPLATES, **self.templates}
        # our own session, so a 200 answer the client cannot parse can still be explained (`_failure`)
        session = requests.Session()
        session.verify = self.verify_tls
        session.hooks["response"].append(self._keep_response)
        # no client-side retries: a failed query is reported at once and the sidecar's backoff decides when to retry
        headers = {"Authorization": f"Bearer {self.bearer_token}"} if self.bearer_token else None
        self._prom = PrometheusConnect(
            url=self.url,
            headers=headers,
            disable_ssl=not self.verify_tls,
            timeout=self.timeout_s,
            retry=Retry(total=0),
            auth=self.basic_auth,
            session=session,
        )

    def __repr__(self) -> str:
        return f"PrometheusReader({redact_url(self.url)!r}, {self.pipeline!r}, timeout_s={self.timeout_s:g})"

    def _keep_response(self, response: Any, *args: Any, **kwargs: Any) -> None:
        self._last_response = response

    def _failure(self, name: str, exc: Exception) -> MetricsUnavailable:
        """A one-line `MetricsUnavailable` for a failed request: a timeout, Prometheus' own reason when it gave
        one (an HTTP error, or a 200 answer with ``"status": "error"``), else the kind of failure."""
        url = redact_url(self.url)
        if _is_timeout(exc):
            return MetricsUnavailable(f"Prometheus at {url} did not answer {name}: timed out after {self.timeout_s:g}s")
        text = str(exc)
        response, self._last_response = self._last_response, None
        found = re.match(r"HTTP Status Code (\d+) \((.*)\)$", text, re.S)
        if found is not None:
            status, body = int(found.group(1)), found.group(2)
            try:  # the client quotes the body as bytes' repr
                raw = ast.literal_eval(body)
                body = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                pass
            try:  # Prometheus' own error answers are JSON with an "error" field
                detail = str(json.loads(body).get("error", ""))
            except (ValueError, TypeError, AttributeError):
                detail = ""
            detail = " ".join((detail or body).split())[:300]
            queried = _queried_url(response)
            hint = ""
            if status == 404:
                hint = (
                    f"; {queried or 'the query URL'} does not exist: --prometheus must be the URL Prometheus serves "
                    "its API under, with its path prefix if it has one (--web.route-prefix or a proxy path, e.g. "
                    "http://host/prometheus)"
                )
            elif queried:
                hint = f" (queried {queried})"
            return MetricsUnavailable(
                f"Prometheus at {url} refused {name}: HTTP {status}: {detail}{hint}",
                permanent=400 <= status < 500 and status != 429,
            )
        if isinstance(exc, KeyError | TypeError | ValueError) and response is not None:
            # the client read an HTTP 200 answer as {"data": {"result": ...}} and failed
            try:
                error = _api_error(response.json())
            except ValueError:
                kind = response.headers.get("Content-Type", "no content type")
                return MetricsUnavailable(
                    f"Prometheus at {url} answered {name} with HTTP {response.status_code} that is not a Prometheus "
                    f"API answer ({kind}); is the URL Prometheus' base URL?",
                    permanent=True,
                )
            if error is not None:
                kind, detail = error
                return MetricsUnavailable(
                    f"Prometheus at {url} refused {name}: {kind}: {detail}", permanent=kind == "bad_data"
                )
            return MetricsUnavailable(
                f"Prometheus at {url} answered {name} without data.result (not a Prometheus API answer)",
                permanent=True,
            )
        return MetricsUnavailable(f"Prometheus at {url} did not answer {name}: {type(exc).__name__}")

    def _warnings(self) -> str | None:
        """The ``warnings`` of the last answer (a partial answer), joined into one short line; None if it has none."""
        response = self._last_response
        try:
            body = response.json() if response is not None else None
        except ValueError:
            return None
        warnings = body.get("warnings") if isinstance(body, dict) else None
        if not warnings:
            return None
        items = warnings if isinstance(warnings, list) else [warnings]
        return " ".join("; ".join(str(w) for w in items).split())[:300]

    def _answer_problem(self, result: Any) -> str | None:
        """Why an answer as a whole is no data (a partial answer, several series), or None."""
        warnings = self._warnings()
        if warnings is not None:
            return f"a partial answer (warnings: {warnings})"
        if isinstance(result, list) and len(result) > 1:
            return (
                f"{len(result)} series where one is needed (aggregate them in the template, e.g. sum(...): several "
                "series may be parts, copies or quantiles, and are never guessed at)"
            )
        return None

    def query(self, name: str, *, optional: bool = False, **fields) -> float:
        """The value of template ``name`` (its one series); NaN when ``optional`` and there is no data.

        No data is: no series; a value that is not a finite number >= 0 (NaN, ±Inf, negative, not a number; see
        `unusable`) or above its plausible maximum (`PLAUSIBLE_MAX`); a stale or future sample (`stale`); several
        series; a partial answer (``warnings``).

        Raises:
            MetricsUnavailable: Prometheus did not answer in time, or a non-optional query has no data.
        """
        promql = self.templates[name].format(pipeline=self.pipeline, **fields)
        self._last_response = None
        sent = time.time()
        try:
            result = self._prom.custom_query(promql, timeout=self.timeout_s)
        except Exception as exc:  # noqa: BLE001 - connection refused, timeouts, HTTP errors: one line each
            raise self._failure(name, exc) from None
        received = time.time()
        problem = self._answer_problem(result)
        value: float | None = math.nan
        if problem is None and result:
            try:
                raw_t, raw = result[0]["value"][0], result[0]["value"][1]
            except (KeyError, IndexError, TypeError):
                raise MetricsUnavailable(
                    f"{name} ({promql}) did not return an instant vector", permanent=True
                ) from None
            t = sample_time(raw_t)
            value = sample_value(raw)
            if t is None:
                problem = "a sample without a timestamp"
            else:
                problem = stale(t, sent, received, self.max_staleness_s)
        if problem is None:
            problem = unusable(name, value)
            if problem is None:
                return value
            problem = f"an unusable value ({problem})"
        if optional:
            if problem != "an unusable value (NaN)" and name not in self._warned:  # NaN: a metric without data
                self._warned.add(name)
                log.warning(
                    "Prometheus answered %s (%s) with %s: need one recent, finite number >= 0; read as no data "
                    "(said once)",
                    name,
                    promql,
                    problem,
                )
            return math.nan
        if problem == "an unusable value (NaN)":
            raise MetricsUnavailable(
                f"Prometheus has no data for {name} ({promql}); is the metric exported, and does the window span two "
                "scrapes?"
            )
        raise MetricsUnavailable(
            f"Prometheus answered {name} ({promql}) with {problem}: need one recent, finite number >= 0; not acting "
            "on it"
        )

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
        sent = end.timestamp()
        self._last_response = None
        try:
            result = self._prom.custom_query_range(
                promql,
                start_time=end - timedelta(seconds=seconds),
                end_time=end,
                step=f"{step_s:g}",  # float seconds: sub-second steps serve a twin in accelerated time
                timeout=self.timeout_s,
            )
        except Exception as exc:  # noqa: BLE001
            raise self._failure("the arrival history", exc) from None
        received = time.time()
        problem = self._answer_problem(result)
        if problem is not None:
            raise MetricsUnavailable(
                f"Prometheus answered the arrival history of stage {stage!r} ({promql}) with {problem}; not acting "
                "on it"
            )
        if not result:
            raise MetricsUnavailable(f"Prometheus has no arrival history for stage {stage!r}")
        try:
            points = [(t, v) for t, v in result[0]["values"]]
        except (KeyError, IndexError, TypeError, ValueError):
            raise MetricsUnavailable(
                f"the arrival history of stage {stage!r} is not a range vector", permanent=True
            ) from None
        if not points:
            raise MetricsUnavailable(f"Prometheus has no arrival history for stage {stage!r}")
        times = [sample_time(t) for t, _v in points]
        if any(t is None for t in times):
            problem = "a point without a timestamp"
        else:  # the newest point must be recent (a series that stopped is stale) and not ahead of the clocks
            problem = stale(max(times), sent, received, self.max_staleness_s)
        if problem is not None:
            raise MetricsUnavailable(
                f"Prometheus answered the arrival history of stage {stage!r} ({promql}) with {problem}; not acting "
                "on it"
            )
        raws = [v for _t, v in points]
        values = [sample_value(v) for v in raws]
        bad = [p for p in (unusable("arrival_history", v) for v in values) if p is not None]
        if bad:  # the safety floor is the history's peak: a NaN read as 0 would protect 0 rps under load
            shown = ", ".join(list(dict.fromkeys(bad))[:5])
            raise MetricsUnavailable(
                f"Prometheus answered the arrival history of stage {stage!r} ({promql}) with {len(bad)} unusable "
                f"points of {len(values)} ({shown}): need finite numbers >= 0, at most {MAX_LOAD_RPS:g}; not acting on "
                "them"
            )
        return np.array(values, dtype=float)

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
