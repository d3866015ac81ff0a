"""The Prometheus reader and the sidecar step against a hostile Prometheus (`tests.kube.fake_prometheus`): values
that are missing, non-finite, negative or not numbers are "no data"; where they drive the decision (load, load
history, queue) the sidecar holds the current configuration and backs off, and never acts on them."""

from __future__ import annotations

import logging
import math
import threading

import pytest
from prometheus_client import generate_latest

from rlscale.errors import PermanentError, TemporaryError
from rlscale.kube.actuator import ApplyOutcome, StageOutcome
from rlscale.kube.cluster import KubernetesCluster
from rlscale.kube.prometheus import MetricsUnavailable, PrometheusReader
from rlscale.kube.sidecar import Sidecar, SidecarSettings
from rlscale.model import is_feasible, plan_fixed_variants
from rlscale.policies.registry import PolicyOptions, make_live_policy
from rlscale.predictors import last_interval_peak_rps
from rlscale.spec import load_spec
from tests.kube.fake_prometheus import HEALTHY, FakePrometheus, Raw

BAD_LOADS = ["NaN", "+Inf", "-Inf", "-20", True, "twenty", {"v": 1}, None]


@pytest.fixture
def fake_prometheus():
    made: list[FakePrometheus] = []

    def start(**answers) -> FakePrometheus:
        made.append(FakePrometheus(**answers))
        return made[-1]

    yield start
    for fake in made:
        fake.stop()


@pytest.fixture(scope="module")
def video():
    return load_spec("video")


# ------------------------------------------------------------------------------------------------ the reader


@pytest.mark.parametrize("value", BAD_LOADS)
def test_an_unusable_arrival_rate_is_no_data(fake_prometheus, value):
    reader = PrometheusReader(fake_prometheus(arrival_rate=value).url, "video", timeout_s=2)
    with pytest.raises(MetricsUnavailable) as info:
        reader.arrival_rate_rps("crop")
    assert isinstance(info.value, TemporaryError)  # no data now: hold and retry after a backoff
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("value", ["NaN", "+Inf", "-Inf", "-3", True])
def test_an_unusable_queue_length_is_no_data(fake_prometheus, value):
    reader = PrometheusReader(fake_prometheus(queue_length=value).url, "video", timeout_s=2)
    with pytest.raises(MetricsUnavailable):
        reader.queue_length("crop")


@pytest.mark.parametrize("point", ["NaN", "+Inf", "-Inf", "-5", True, "x"])
def test_an_unusable_history_point_is_no_data(fake_prometheus, point):
    history = ["20"] * 60 + [point] + ["20"] * 59
    reader = PrometheusReader(fake_prometheus(history=history).url, "video", timeout_s=2)
    with pytest.raises(MetricsUnavailable, match="arrival history") as info:
        reader.arrival_history_rps("crop")
    assert isinstance(info.value, TemporaryError)


def test_an_empty_history_is_no_data(fake_prometheus):
    reader = PrometheusReader(fake_prometheus(history=[]).url, "video", timeout_s=2)
    with pytest.raises(MetricsUnavailable, match="arrival history"):
        reader.arrival_history_rps("crop")


@pytest.mark.parametrize("name", ["busy_rate", "completed_rate", "late_rate", "dropped_rate", "latency_quantile"])
@pytest.mark.parametrize("value", ["NaN", "-Inf", "-1", True, "abc"])
def test_an_unusable_optional_metric_reads_as_no_data(fake_prometheus, name, value):
    reader = PrometheusReader(fake_prometheus(**{name: value}).url, "video", timeout_s=2)
    assert math.isnan(reader.query(name, optional=True, stage="crop", window="30s", q=0.99, sla="1"))


def test_an_infinite_quantile_is_a_reading_but_an_infinite_rate_is_not(fake_prometheus):
    """histogram_quantile answers +Inf when the quantile lies beyond the largest bucket: very slow, not no data."""
    fake = fake_prometheus(e2e_latency_quantile="+Inf", busy_rate="+Inf")
    reader = PrometheusReader(fake.url, "video", timeout_s=2)
    assert reader.query("e2e_latency_quantile", optional=True, window="30s", q=0.99) == math.inf
    assert math.isnan(reader.query("busy_rate", optional=True, stage="crop", window="30s"))


def test_a_200_answer_with_status_error_reports_prometheus_own_reason(fake_prometheus):
    body = {"status": "error", "errorType": "bad_data", "error": "invalid parameter 'query': parse error at char 5"}
    fake = fake_prometheus(arrival_rate=Raw(body), history=Raw(body))
    reader = PrometheusReader(fake.url, "video", timeout_s=2)
    for read in (lambda: reader.arrival_rate_rps("crop"), lambda: reader.arrival_history_rps("crop")):
        with pytest.raises(MetricsUnavailable) as info:
            read()
        message = str(info.value)
        assert "parse error at char 5" in message and "bad_data" in message, message
        assert "KeyError" not in message
        assert isinstance(info.value, PermanentError)  # bad_data: waiting will not fix the query


def test_a_200_answer_that_is_not_the_prometheus_api_says_so(fake_prometheus):
    fake = fake_prometheus(arrival_rate=Raw(b"<html>login</html>"))
    with pytest.raises(MetricsUnavailable, match="not a Prometheus API answer") as info:
        PrometheusReader(fake.url, "video", timeout_s=2).arrival_rate_rps("crop")
    assert "JSONDecodeError" not in str(info.value)


def test_a_slow_prometheus_is_reported_as_a_timeout(fake_prometheus):
    fake = fake_prometheus(arrival_rate=Raw(FakePrometheus.instant_answer("20").body, delay_s=2.0))
    with pytest.raises(MetricsUnavailable) as info:
        PrometheusReader(fake.url, "video", timeout_s=0.3).arrival_rate_rps("crop")
    message = str(info.value)
    assert "timed out" in message and "0.3s" in message, message
    assert "ConnectionError" not in message
    assert isinstance(info.value, TemporaryError)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:s3cret@prom:9090", "http://***@prom:9090"),
        ("https://s3cret@prom.example/prometheus", "https://***@prom.example/prometheus"),
        ("http://user:s3cr@t@prom:9090/", "http://***@prom:9090/"),
        ("http://prom:9090", "http://prom:9090"),
        ("user:s3cret@prom:9090", "***@prom:9090"),
    ],
)
def test_redact_url(url, shown):
    from rlscale.kube.prometheus import redact_url

    assert redact_url(url) == shown


def test_credentials_in_the_url_are_used_but_never_shown(fake_prometheus):
    body = {"status": "error", "errorType": "execution", "error": "query timed out in expression evaluation"}
    fake = fake_prometheus(arrival_rate=Raw(body, status=503), queue_length=Raw(b"nope"))
    host = fake.url.removeprefix("http://")
    reader = PrometheusReader(f"http://alice:s3cret@{host}", "video", timeout_s=2, bearer_token=None)
    messages = [repr(reader)]
    for read in (lambda: reader.arrival_rate_rps("crop"), lambda: reader.queue_length("crop")):
        with pytest.raises(MetricsUnavailable) as info:
            read()
        messages.append(str(info.value))
    assert fake.auth[0] and fake.auth[0].startswith("Basic ")  # the credentials reach Prometheus
    fake.stop()  # now unreachable: every message names the URL without its credentials
    with pytest.raises(MetricsUnavailable) as info:
        reader.arrival_history_rps("crop")
    messages.append(str(info.value))
    assert all("s3cret" not in m and "alice" not in m for m in messages), messages
    assert f"http://***@{host}" in messages[1]


# ------------------------------------------------------------------------------------------------ the sidecar


class RecordingActuator:
    """The actuator's interface on a fixed configuration; records what the sidecar asked to apply."""

    def __init__(self, spec, config):
        self.spec, self.config, self.applied = spec, config, []

    def read(self):
        return self.config, [sc.replicas for sc in self.config.stages]

    def apply(self, config):
        self.applied.append(config)
        return ApplyOutcome(tuple(StageOutcome(st.name, "rolled") for st in self.spec.stages))


def one_step(video, url, caplog, policy_name="ipa"):
    """One sidecar step (ipa + safety, reactive predictor) against Prometheus at ``url``, from a small config
    that 20 rps overloads; returns (report, actuator, metrics text, warning-or-worse log lines)."""
    tiny = plan_fixed_variants(video, [st.variants[0].name for st in video.stages], 2.0)
    actuator = RecordingActuator(video, tiny)
    cluster = KubernetesCluster(
        video, PrometheusReader(url, video.name, timeout_s=2), actuator, interval_s=video.interval_s, window_s=30
    )
    live = make_live_policy(policy_name, video, PolicyOptions(predictor="reactive", guard=True))
    policy, safety = live.policy, live.guard
    stop = threading.Event()
    stop.set()  # one step, then the loop returns
    sidecar = Sidecar(cluster, policy, safety, SidecarSettings(interval_s=video.interval_s), stop=stop)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="rlscale"):
        assert sidecar.run() == 0
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    return sidecar, actuator, generate_latest(sidecar.metrics.registry).decode(), lines


def test_a_healthy_prometheus_makes_the_sidecar_scale_up(video, fake_prometheus, caplog):
    """The control for the tests below: with good data at 20 rps the small config is replaced."""
    _sidecar, actuator, text, lines = one_step(video, fake_prometheus().url, caplog)
    assert len(actuator.applied) == 1 and is_feasible(video, actuator.applied[0], 20.0)
    assert 'rlscale_sidecar_decisions_total{outcome="applied"} 1.0' in text and not lines


@pytest.mark.parametrize(
    ("answers", "why"),
    [
        ({"history": ["NaN"] * 120}, "NaN"),
        ({"history": ["20"] * 119 + ["+Inf"]}, "+Inf"),
        ({"history": ["-Inf"] + ["20"] * 119}, "-Inf"),
        ({"history": ["-20"] * 120}, "-20"),
        ({"arrival_rate": "-20"}, "-20"),
        ({"arrival_rate": "NaN"}, "no data"),
        ({"arrival_rate": True}, "not a number"),
        ({"queue_length": "-1"}, "-1"),
    ],
)
def test_unusable_load_data_holds_the_config_and_counts_a_metrics_error(video, fake_prometheus, caplog, answers, why):
    _sidecar, actuator, text, lines = one_step(video, fake_prometheus(**answers).url, caplog)
    assert actuator.applied == []  # nothing was patched
    assert 'rlscale_sidecar_decisions_total{outcome="held"} 1.0' in text
    assert 'rlscale_sidecar_errors_total{kind="metrics"} 1.0' in text
    assert len(lines) == 1 and "holding the current config" in lines[0] and why in lines[0], lines


def test_unusable_load_data_backs_off(video, fake_prometheus, caplog):
    sidecar, _actuator, _text, _lines = one_step(video, fake_prometheus(history=["NaN"] * 120).url, caplog)
    report = sidecar.step()
    assert report.outcome == "held" and report.temporary
    interval_s = video.interval_s
    # doubling, as for an unreachable Prometheus; each wait drawn from the upper half of it (equal jitter)
    assert interval_s / 2 <= sidecar.delay_after(report) <= interval_s
    assert interval_s <= sidecar.delay_after(sidecar.step()) <= 2 * interval_s


def test_the_load_floor_is_at_least_the_instant_arrival_rate(video, fake_prometheus, caplog):
    """A history that reads far below the arrival rate (stale, or a template that undercounts) cannot lower
    the load the safety layer protects below what the instant rate shows."""
    fake = fake_prometheus(history=["1"] * 120, arrival_rate="20")
    tiny = plan_fixed_variants(video, [st.variants[0].name for st in video.stages], 2.0)
    cluster = KubernetesCluster(
        video, PrometheusReader(fake.url, video.name), RecordingActuator(video, tiny), video.interval_s, 30
    )
    state = cluster.observe()
    assert last_interval_peak_rps(state) >= 20.0
    _sidecar, actuator, _text, _lines = one_step(video, fake.url, caplog)
    assert len(actuator.applied) == 1 and is_feasible(video, actuator.applied[0], 20.0)


def test_an_unusable_optional_metric_does_not_hold(video, fake_prometheus, caplog):
    fake = fake_prometheus(busy_rate="-5", latency_quantile="NaN", e2e_latency_quantile="+Inf", dropped_rate=True)
    _sidecar, actuator, text, lines = one_step(video, fake.url, caplog)
    assert len(actuator.applied) == 1
    assert 'rlscale_sidecar_errors_total{kind="metrics"} 0.0' in text
    # one warning per metric that answered nonsense (said once), none for the NaN of a metric with no data
    assert len(lines) == 2 and any("busy_rate" in m for m in lines) and any("dropped_rate" in m for m in lines)


def test_healthy_defaults_cover_every_template():
    from rlscale.kube.prometheus import DEFAULT_TEMPLATES
    from tests.kube.fake_prometheus import answer_key

    assert {answer_key(t) for n, t in DEFAULT_TEMPLATES.items() if n != "arrival_history"} | {"history"} == set(HEALTHY)


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{pipeline!r:>100000000}", "must be plain"),
        ("{stage:>99999999}", "must be plain"),
        ("{pipeline!s}", "must be plain"),
        ("x" * 5000, "longer than 4096"),
        ("rate(x{{stage={stage}}}[{window}]", None),
    ],
)
def test_promql_templates_cannot_grow_a_query(template, problem):
    from rlscale.kube.prometheus import DEFAULT_TEMPLATES, check_template

    name = next(iter(DEFAULT_TEMPLATES))
    found = check_template(name, template)
    assert (found is None) if problem is None else (problem in found), found
    assert all(check_template(k, v) is None for k, v in DEFAULT_TEMPLATES.items())
