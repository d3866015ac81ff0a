"""The serving overhead of a served model: the CPU seconds one request costs the server beyond the model's own compute
(HTTP, decoding and encoding, the server's event loop), on the replica's own core (DESIGN.md section 3).

Measured from the server's Prometheus metrics (its ``/metrics`` text), never from ``/proc`` (the server may run on
another machine): the process's CPU seconds, ``process_cpu_seconds_total`` (prometheus-client's process collector,
which MLServer and any Python server using prometheus-client's registry export), and the model's own, preferably
``rlscale_model_cpu_seconds_total`` (the reference runtime, `rlscale.serve.batcher`: the model thread's CPU time),
else ``rlscale_busy_seconds_total`` (wall time the model ran). Read before and after a run of ``n`` requests of one
item each, the overhead is ``(cpu_after - cpu_before - (model_after - model_before)) / n``, ``n`` the requests the
server counted (``rlscale_requests_total``) where it exports that count, else the requests sent.

Two runs, each of ``n`` requests after a few untimed ones:

- **no load**: one request at a time (each answered before the next is sent);
- **under load**: a burst of ``n`` requests, `LOAD_CONCURRENCY` in flight at once, so requests arrive while the
  model computes and the server's batcher merges them (as it is deployed).

The figure a profile keeps (``overhead_s``, `Overhead.overhead_s`) is the one under load: the simulator charges
it as work on the replica's core ahead of the batcher, where it matters when the core is busy (it takes capacity
from the model, and queues build from there); the no-load cost is already inside a served point's measured time.
With the model's wall time only (``rlscale_busy_seconds_total``), each figure is a lower bound (with requests in
flight, the wall time also counts the event loop's work on the shared core), so the larger of the two is kept.

``process_cpu_seconds_total`` counts in the kernel's clock ticks (10 ms on Linux): two readings are off by at most
two ticks, so ``n`` requests give the overhead to within ``0.02 / n`` s (0.1 ms for the default 200). The scrapes
cost the server some CPU too (about one scrape per run falls inside it: well under 0.01 ms a request at 200).
"""

from __future__ import annotations

import http.client
import math
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from rlscale.errors import ProfilingError
from rlscale.profiling.served import InputTensor, V2Client, check_response, infer_body
from rlscale.profiling.worker import describe

PROCESS_CPU = "process_cpu_seconds_total"
MODEL_CPU = "rlscale_model_cpu_seconds_total"
MODEL_BUSY = "rlscale_busy_seconds_total"
REQUESTS = "rlscale_requests_total"
SERIES = (PROCESS_CPU, MODEL_CPU, MODEL_BUSY, REQUESTS)
"""The samples read from the metrics (each summed over its label sets)."""
LOAD_CONCURRENCY = 8
"""Requests in flight at once in the run under load."""
DEFAULT_REQUESTS = 200
"""Requests per run (``--overhead-requests``)."""
MAX_METRICS_BYTES = 8 << 20
"""The most of a ``/metrics`` answer read (MLServer's is a few KB)."""


class Unavailable(Exception):
    """The overhead cannot be measured; the message says why (one line)."""


@dataclass(frozen=True)
class Reading:
    """One scrape of the metrics: each of `SERIES` summed over its label sets, None where absent."""

    cpu_s: float | None = None
    model_cpu_s: float | None = None
    busy_s: float | None = None
    requests: float | None = None

    def model_s(self, metric: str) -> float | None:
        return self.model_cpu_s if metric == MODEL_CPU else self.busy_s


def parse_metrics(text: str) -> Reading:
    """The `Reading` of a Prometheus text exposition (each of `SERIES` summed over its label sets; a value that is
    not a finite number counts as absent).

    Raises:
        Unavailable: the text is not the Prometheus exposition format.
    """
    from prometheus_client.parser import text_string_to_metric_families

    sums: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in SERIES and math.isfinite(sample.value):
                    sums[sample.name] = sums.get(sample.name, 0.0) + float(sample.value)
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise Unavailable(f"the metrics are not Prometheus text ({describe(exc)})") from None
    return Reading(sums.get(PROCESS_CPU), sums.get(MODEL_CPU), sums.get(MODEL_BUSY), sums.get(REQUESTS))


def model_metric(reading: Reading) -> str:
    """The model's cost the server exports: `MODEL_CPU` where it has it, else `MODEL_BUSY`.

    Raises:
        Unavailable: no process CPU, or neither of the model's.
    """
    if reading.cpu_s is None:
        raise Unavailable(f"the server exports no {PROCESS_CPU}")
    if reading.model_cpu_s is not None:
        return MODEL_CPU
    if reading.busy_s is not None:
        return MODEL_BUSY
    raise Unavailable(f"the server exports neither {MODEL_CPU} nor {MODEL_BUSY} (the model's own cost)")


@dataclass(frozen=True)
class RunCost:
    """What a run of requests cost the server.

    Attributes:
        requests: the requests sent.
        concurrency: how many were in flight at once (1: no load).
        counted: the requests (items) the server counted meanwhile, None where it exports no count.
        cpu_s: the server process's CPU seconds over the run.
        model_s: the model's seconds over the run (CPU or wall, as `Overhead.model_metric` says).
    """

    requests: int
    concurrency: int
    counted: int | None
    cpu_s: float
    model_s: float

    @property
    def per(self) -> int:
        """What the costs are divided by: the server's count where it has one (and it saw them all), else sent."""
        return self.counted if self.counted is not None and self.counted >= self.requests else self.requests

    @property
    def overhead_s(self) -> float:
        """CPU seconds a request beyond the model's: ``(cpu_s - model_s) / per``."""
        return (self.cpu_s - self.model_s) / self.per

    def to_dict(self) -> dict:
        return {
            "requests": self.requests,
            "concurrency": self.concurrency,
            "counted": self.counted,
            "cpu_s": self.cpu_s,
            "model_s": self.model_s,
            "cpu_per_request_s": self.cpu_s / self.per,
            "model_per_request_s": self.model_s / self.per,
            "overhead_s": self.overhead_s,
        }


def run_cost(before: Reading, after: Reading, requests: int, concurrency: int, metric: str) -> RunCost:
    """The cost of a run from the readings before and after it.

    Raises:
        Unavailable: a series missing from either reading, a counter that went down (the server restarted), or a
            process that used less CPU than its model (the model runs outside the process the metrics describe).
    """
    cpu = _delta(before.cpu_s, after.cpu_s, PROCESS_CPU)
    model = _delta(before.model_s(metric), after.model_s(metric), metric)
    counted = None
    if before.requests is not None and after.requests is not None:
        counted = round(_delta(before.requests, after.requests, REQUESTS))
    cost = RunCost(requests, concurrency, counted, cpu, model)
    if cost.overhead_s < 0:
        raise Unavailable(
            f"the server process used {cpu:.3g} s of CPU for {requests} requests, less than its model's {model:.3g} s "
            f"({metric}): its {PROCESS_CPU} does not cover the model (a model in another process?), or the run is too "
            "short for its 10 ms ticks (more --overhead-requests)"
        )
    return cost


def _delta(before: float | None, after: float | None, name: str) -> float:
    if before is None or after is None:
        raise Unavailable(f"{name} disappeared from the metrics during the run")
    if after < before:
        raise Unavailable(f"{name} went down during the run (did the server restart?)")
    return after - before


@dataclass(frozen=True)
class Overhead:
    """The serving overhead a served profile measured, or why it did not.

    Attributes:
        metrics_url: where the metrics were read.
        model_metric: `MODEL_CPU` or `MODEL_BUSY`; None when not measured.
        no_load: the run of one request at a time; None when not measured.
        under_load: the burst of `LOAD_CONCURRENCY` in flight; None when not measured.
        note: why a figure is missing (one line), else None.
    """

    metrics_url: str
    model_metric: str | None = None
    no_load: RunCost | None = None
    under_load: RunCost | None = None
    note: str | None = None

    @property
    def kept(self) -> str | None:
        """Which run's figure a profile keeps (``under_load`` or ``no_load``; module docstring), None for neither."""
        runs = {"under_load": self.under_load, "no_load": self.no_load}
        present = {name: run for name, run in runs.items() if run is not None}
        if not present:
            return None
        if self.model_metric == MODEL_BUSY:  # lower bounds: the larger is nearer
            return max(present, key=lambda name: present[name].overhead_s)
        return "under_load" if "under_load" in present else "no_load"

    @property
    def overhead_s(self) -> float | None:
        """The figure a profile keeps (CPU seconds a request), None when not measured."""
        kept = self.kept
        return None if kept is None else {"under_load": self.under_load, "no_load": self.no_load}[kept].overhead_s

    def summary(self) -> str:
        """One line: the figures, or why there are none."""
        if self.overhead_s is None:
            return f"overhead_s left empty: {self.note}"
        parts = []
        if self.under_load is not None:
            parts.append(f"{self.under_load.overhead_s * 1000:.3g} ms under load ({LOAD_CONCURRENCY} in flight)")
        if self.no_load is not None:
            parts.append(f"{self.no_load.overhead_s * 1000:.3g} ms at no load")
        requests = (self.under_load or self.no_load).requests
        text = (
            f"serving overhead: {' and '.join(parts)} a request, CPU beyond the model's ({PROCESS_CPU} less "
            f"{self.model_metric}, {requests} requests each); overhead_s = the {self.kept.replace('_', ' ')} figure"
        )
        return text + (f" ({self.note})" if self.note else "")

    def to_dict(self) -> dict:
        return {
            "overhead_s": self.overhead_s,
            "kept": self.kept,
            "metrics_url": self.metrics_url,
            "model_metric": self.model_metric,
            "no_load": self.no_load.to_dict() if self.no_load else None,
            "under_load": self.under_load.to_dict() if self.under_load else None,
            "note": self.note,
        }


class MetricsReader:
    """Reads a server's metrics endpoint (straight to it: a proxy from the environment is not used).

    Args:
        url: the metrics' URL (``http://HOST:PORT/metrics``).
        timeout_s: how long one read may take.
    """

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def read(self) -> Reading:
        """One scrape.

        Raises:
            Unavailable: unreachable, not HTTP 200, too large, or not Prometheus text.
        """
        try:
            with self._opener.open(self.url, timeout=self.timeout_s) as response:
                body = response.read(MAX_METRICS_BYTES + 1)
        except urllib.error.HTTPError as exc:
            exc.close()
            raise Unavailable(f"no metrics at {self.url} (HTTP {exc.code})") from None
        except (OSError, ValueError, http.client.HTTPException) as exc:  # unreachable, refused, timed out, garbage
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            text = describe(reason) if isinstance(reason, BaseException) else str(reason)
            raise Unavailable(f"no metrics at {self.url} ({text})") from None
        if len(body) > MAX_METRICS_BYTES:
            raise Unavailable(f"the metrics at {self.url} exceed {MAX_METRICS_BYTES >> 20} MiB")
        return parse_metrics(body.decode("utf-8", errors="replace"))


def measure_overhead(
    client: V2Client,
    tensor: InputTensor,
    variant: str,
    metrics: MetricsReader,
    *,
    requests: int = DEFAULT_REQUESTS,
    warmup: int = 3,
    concurrency: int = LOAD_CONCURRENCY,
    advance: Callable[[str], None] = lambda detail: None,
) -> Overhead:
    """Measure the serving overhead (module docstring): a run at no load, then one under load, of ``requests``
    requests of one item each (``warmup`` untimed ones first). Never raises for the server's sake: what cannot be
    measured is `Overhead.note`.

    Args:
        client: the served model's client.
        tensor: the input tensor a request carries (one item of it).
        variant: the variant's name, for a message.
        metrics: the server's metrics.
        requests: requests per run (>= 1).
        warmup: untimed requests before the first run.
        concurrency: requests in flight at once under load.
        advance: called after each run, with what it measured (a progress bar's).
    """
    body = infer_body(tensor, 1, seed=1)
    result = Overhead(metrics.url)
    try:
        result = replace(result, model_metric=model_metric(metrics.read()))
        for _ in range(warmup):
            check_response(*client.infer(body), variant, 1)
        for name, in_flight in (("no_load", 1), ("under_load", concurrency)):
            before = metrics.read()
            answers = _send(client, body, requests, in_flight)
            after = metrics.read()
            for answer in answers:  # checked after the run, which the readings bound
                check_response(*answer, variant, 1)
            cost = run_cost(before, after, requests, in_flight, result.model_metric)
            result = replace(result, **{name: cost})
            advance(f"serving overhead {name.replace('_', ' ')}: {cost.overhead_s * 1000:.3g} ms a request")
    except (Unavailable, ProfilingError) as exc:
        return replace(result, note=str(exc))
    if result.model_metric == MODEL_BUSY:
        return replace(result, note=f"the server exports no {MODEL_CPU}: from the model's wall time, a lower bound")
    return result


def _send(client: V2Client, body: bytes, requests: int, in_flight: int) -> list[tuple[int, bytes]]:
    """``requests`` inference requests, ``in_flight`` at a time; their answers.

    Raises:
        ProfilingError: the server stopped answering.
    """
    if in_flight <= 1:
        return [client.infer(body) for _ in range(requests)]
    pool = ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="rlscale-profile-load")
    try:
        return list(pool.map(lambda _: client.infer(body), range(requests)))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
