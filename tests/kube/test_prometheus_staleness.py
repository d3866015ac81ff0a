"""Answers that look healthy but are not data to act on: stale or future samples, several series for one query,
partial answers (``warnings``) and implausible figures (1e300 rps). The reader reads them as no data, and the
sidecar (the real ``rlscale sidecar --once`` against the kmock API emulator) holds with no patch; the same values
with current timestamps act."""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlscale.errors import TemporaryError
from rlscale.inputs import MAX_TRACE_RPS
from rlscale.kube.prometheus import MetricsUnavailable, PrometheusReader
from rlscale.model import plan_fixed_variants
from rlscale.spec import load_spec
from tests.kube.fake_prometheus import FakePrometheus, Raw

ROOT = Path(__file__).resolve().parents[2]
YEAR_S = 365 * 86400.0
NS = "pipeline"


class SkewedPrometheus(FakePrometheus):
    """`FakePrometheus` whose answers to the templates in ``only`` (all when None; ``history`` is the range query)
    are shifted in time by ``shift_s``, repeated as ``series`` series and carry ``warnings``."""

    def __init__(
        self,
        shift_s: float = 0.0,
        series: int = 1,
        warnings: list[str] | None = None,
        only: set[str] | None = None,
        **answers,
    ) -> None:
        self.shift_s, self.series, self.warnings, self.only = shift_s, series, warnings, only
        super().__init__(**answers)
        self.answers = {key: (key, value) for key, value in self.answers.items()}  # which template is asked

    def _skew(self, raw: Raw, key: str) -> Raw:
        if self.only is not None and key not in self.only:
            return raw
        body = copy.deepcopy(raw.body)
        result = body["data"]["result"]
        for item in result:
            if "value" in item:
                item["value"][0] += self.shift_s
            for point in item.get("values", []):
                point[0] += self.shift_s
        body["data"]["result"] = [
            {**copy.deepcopy(item), "metric": {"pod": f"p{i}"}} for i in range(self.series) for item in result
        ]
        if self.warnings:
            body["warnings"] = self.warnings
        return Raw(body, raw.status, raw.delay_s)

    def instant_answer(self, tagged):  # called on the instance by the handler, so it may be a plain method
        key, value = tagged
        return self._skew(FakePrometheus.instant_answer(value), key)

    def range_answer(self, tagged):
        key, values = tagged
        return self._skew(FakePrometheus.range_answer(values), key)


@pytest.fixture
def skewed():
    made: list[FakePrometheus] = []

    def start(**kwargs) -> SkewedPrometheus:
        made.append(SkewedPrometheus(**kwargs))
        return made[-1]

    yield start
    for fake in made:
        fake.stop()


def _reads(reader: PrometheusReader) -> dict:
    return {
        "arrival_rate": lambda: reader.arrival_rate_rps("crop", window="30s"),
        "queue_length": lambda: reader.queue_length("crop"),
        "history": lambda: reader.arrival_history_rps("crop"),
    }


HOSTILE = {
    "a year old": ({"shift_s": -YEAR_S}, "old"),
    "an hour ahead": ({"shift_s": 3600.0}, "future"),
    "two series": ({"series": 2}, "2 series"),
    "a partial answer": ({"warnings": ["remote store prom-b: context deadline exceeded"]}, "partial answer"),
}


# ------------------------------------------------------------------------------------------------ the reader


@pytest.mark.parametrize("target", ["arrival_rate", "queue_length", "history"])
@pytest.mark.parametrize("case", list(HOSTILE), ids=list(HOSTILE))
def test_stale_future_several_and_partial_answers_are_no_data(skewed, target, case):
    kwargs, why = HOSTILE[case]
    reader = PrometheusReader(skewed(only={target}, **kwargs).url, "video", timeout_s=2)
    reads = _reads(reader)
    with pytest.raises(MetricsUnavailable) as info:
        reads[target]()
    message = str(info.value)
    assert why in message and "\n" not in message, message
    assert isinstance(info.value, TemporaryError)  # no data now: hold and retry after a backoff
    for other, read in reads.items():  # the same fake's untouched answers are read as they are
        if other != target:
            read()


@pytest.mark.parametrize("target", ["arrival_rate", "queue_length", "history"])
def test_the_same_answers_with_current_timestamps_are_read(skewed, target):
    reader = PrometheusReader(skewed(only={target}, shift_s=-5.0, series=1).url, "video", timeout_s=2)
    reads = _reads(reader)
    assert reads["arrival_rate"]() == 20.0 and reads["queue_length"]() == 3
    assert list(reads["history"]()) == [20.0] * 120


@pytest.mark.parametrize(
    ("answers", "target"),
    [
        ({"arrival_rate": "1e300"}, "arrival_rate"),
        ({"arrival_rate": str(MAX_TRACE_RPS * 1.01)}, "arrival_rate"),
        ({"history": ["20"] * 119 + ["1e300"]}, "history"),
        ({"queue_length": "1e300"}, "queue_length"),
    ],
)
def test_an_implausible_load_is_no_data(skewed, answers, target):
    reader = PrometheusReader(skewed(**answers).url, "video", timeout_s=2)
    with pytest.raises(MetricsUnavailable, match="plausible maximum") as info:
        _reads(reader)[target]()
    assert isinstance(info.value, TemporaryError)


def test_a_high_but_plausible_load_is_read(skewed):
    reader = PrometheusReader(skewed(arrival_rate="5000", history=["5000"] * 120).url, "video", timeout_s=2)
    assert reader.arrival_rate_rps("crop") == 5000.0
    assert reader.arrival_history_rps("crop").max() == 5000.0


def test_max_staleness_tightens_the_bound(skewed):
    url = skewed(shift_s=-60.0).url
    assert PrometheusReader(url, "video", timeout_s=2).arrival_rate_rps("crop") == 20.0  # 300 s by default
    tight = PrometheusReader(url, "video", timeout_s=2, max_staleness_s=30.0)
    for read in _reads(tight).values():
        with pytest.raises(MetricsUnavailable, match=r"s old \(stale: more than 30 s\)"):
            read()


@pytest.mark.parametrize("case", list(HOSTILE), ids=list(HOSTILE))
def test_an_observation_with_such_an_answer_reads_as_no_data(skewed, case, caplog):
    kwargs, why = HOSTILE[case]
    reader = PrometheusReader(skewed(only={"busy_rate"}, **kwargs).url, "video", timeout_s=2)
    assert math.isnan(reader.query("busy_rate", optional=True, stage="crop", window="30s"))
    assert any(why in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]


# ------------------------------------------------------------------------------------------------ the sidecar


@pytest.fixture
def cluster(tmp_path):
    """The kmock emulator holding video's Deployments at a small configuration that 20 rps overloads; yields
    (server, kubeconfig)."""
    from tests.integration.closed_loop import create_stage_objects
    from tests.integration.servers import BackgroundApiServer

    video = load_spec("video")
    server = BackgroundApiServer()
    try:
        tiny = plan_fixed_variants(video, [st.variants[0].name for st in video.stages], 2.0)
        create_stage_objects(server.apps_api(), video, tiny, NS)
        yield server, server.write_kubeconfig(tmp_path / "kubeconfig", NS)
    finally:
        server.stop()


def _sidecar_once(url: str, kubeconfig: Path, *extra: str) -> subprocess.CompletedProcess:
    argv = ["sidecar", "--spec", "video", "--prometheus", url, "--kubeconfig", str(kubeconfig), "--namespace", NS]
    argv += ["--policy", "ipa", "--predictor", "reactive", "--once", "--metrics-port", "0", *extra]
    return subprocess.run(
        [sys.executable, "-m", "rlscale.cli", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def _patches(server) -> list[dict]:
    from tests.integration.servers import is_sidecar_change_entry

    return [e for e in server.emulator.seen if is_sidecar_change_entry(e)]


SIDECAR_CASES = {
    "stale": ({"shift_s": -YEAR_S}, (), "old"),
    "future": ({"shift_s": 3600.0}, (), "future"),
    "stale-history": ({"shift_s": -YEAR_S, "only": {"history"}}, (), "old"),
    "two-series-of-load": ({"series": 2, "only": {"arrival_rate"}}, (), "2 series"),
    "two-series-of-queue": ({"series": 2, "only": {"queue_length"}}, (), "2 series"),
    "partial": ({"warnings": ["remote store prom-b: context deadline exceeded"]}, (), "partial answer"),
    "1e300-rps": ({"arrival_rate": "1e300"}, (), "plausible maximum"),
    "1e300-rps-history": ({"history": ["20"] * 119 + ["1e300"]}, (), "plausible maximum"),
    "older-than-max-staleness": ({"shift_s": -60.0}, ("--max-staleness", "30"), "stale: more than 30 s"),
}


@pytest.mark.parametrize("case", list(SIDECAR_CASES), ids=list(SIDECAR_CASES))
@pytest.mark.subprocess
def test_the_sidecar_holds_with_no_patch(skewed, cluster, case):
    server, kubeconfig = cluster
    kwargs, extra, why = SIDECAR_CASES[case]
    result = _sidecar_once(skewed(**kwargs).url, kubeconfig, *extra)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert len(lines) == 1 and why in lines[0], lines
    assert "nothing was changed" in lines[0] or "holding the current config" in lines[0], lines
    assert _patches(server) == []


@pytest.mark.parametrize("shift_s", [-60.0, 5.0], ids=["a-minute-old", "5s-ahead"])
@pytest.mark.subprocess
def test_the_same_values_with_current_timestamps_act(skewed, cluster, shift_s):
    """The control: a healthy answer a minute old (within Prometheus' 5 minutes) or a few seconds ahead (clock
    skew) makes the sidecar scale the small configuration up."""
    server, kubeconfig = cluster
    result = _sidecar_once(skewed(shift_s=shift_s).url, kubeconfig)
    assert result.returncode == 0, result.stderr
    assert len(_patches(server)) >= 1, result.stdout + result.stderr
