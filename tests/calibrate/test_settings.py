"""Turning the command line into a calibration's settings: stages from --model and --url, the window, the
configurations, the CPUs (stages share them, and say so, when they outnumber them)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from rlscale.calibrate import settings as cs
from rlscale.errors import RlscaleError
from rlscale.spec import load_spec
from rlscale.workload import Trace, load_trace
from tests.calibrate.specs import MLP, mlp_spec_dict, write_mlp_spec


@pytest.fixture
def spec(tmp_path):
    """Three stages of the numpy example family, the last one with two variants."""
    doc = mlp_spec_dict(("a", "b", "c"), name="three")
    doc["stages"][2]["variants"] = [
        {"name": "mlp-512", "accuracy": 0.6, "startup_s": 0},
        {"name": "mlp-256", "accuracy": 0.5, "startup_s": 0},
    ]
    return load_spec(write_mlp_spec(tmp_path, doc))


def test_one_unnamed_factory_serves_every_stage(spec):
    assert cs.parse_models([MLP], spec, taken=set()) == dict.fromkeys("abc", MLP)
    assert cs.parse_models([MLP], spec, taken={"b"}) == {"a": MLP, "c": MLP}


def test_named_and_unnamed_factories(spec):
    got = cs.parse_models(["b=m.x:f", "m.y:g", "m.z:h"], spec, taken=set())
    assert got == {"b": "m.x:f", "a": "m.y:g", "c": "m.z:h"}


@pytest.mark.parametrize(
    ("items", "fragment"),
    [
        (["d=m:f"], "unknown stage 'd'; the spec's stages: a, b, c"),
        (["m"], "expected [STAGE=]MODULE:FUNCTION"),
        (["a=m:f:g"], "expected [STAGE=]MODULE:FUNCTION"),
        (["a=1m:f"], "expected [STAGE=]MODULE:FUNCTION"),
        (["=m:f"], "expected [STAGE=]MODULE:FUNCTION"),
        (["a=m:f", "a=m:g"], "has a factory already"),
        (["m:f", "m:g"], "2 factories without a stage for 3 stage(s) left"),
    ],
)
def test_bad_models(spec, items, fragment):
    with pytest.raises(RlscaleError, match=None) as exc:
        cs.parse_models(items, spec, taken=set())
    assert fragment in str(exc.value)


def test_urls_name_the_model_by_the_stage_or_the_path(spec):
    got = cs.parse_urls(["a=http://127.0.0.1:8080/", "b=http://h:1/v2/models/clf"], spec)
    assert got == {"a": ("http://127.0.0.1:8080", "a"), "b": ("http://h:1", "clf")}
    for items, fragment in (
        (["http://h:1"], "expected STAGE=URL"),
        (["x=http://h:1"], "unknown stage 'x'"),
        (["a=ftp://h"], "expected http://HOST:PORT"),
        (["a=http://h:1", "a=http://h:2"], "has a URL already"),
    ):
        with pytest.raises(RlscaleError) as exc:
            cs.parse_urls(items, spec)
        assert fragment in str(exc.value)


def test_variants(spec):
    stage_c = spec.stages[2]
    assert cs.parse_variants(["c=mlp-256"], spec) == {"c": "mlp-256"}
    with pytest.raises(RlscaleError, match="no variant 'mlp-7'"):
        cs.parse_variants(["c=mlp-7"], spec)
    assert cs.choose_variant(stage_c, ("mlp-256", "mlp-512"), None) == "mlp-512"  # the spec's order
    assert cs.choose_variant(stage_c, ("mlp-256",), None) == "mlp-256"  # the first the factory builds
    assert cs.choose_variant(stage_c, None, None) == "mlp-512"
    with pytest.raises(RlscaleError, match="none of its factory's VARIANTS"):
        cs.choose_variant(stage_c, ("fast",), None)


def test_window():
    trace = Trace("t", np.array([0, 0, 3, 5, 0, 0]), "")
    assert cs.parse_window("1:4", trace) == (1, 4)
    for text, fragment in (
        ("4:1", "START < END"),
        ("a:b", "START < END"),
        ("3", "START < END"),
        ("-1:3", "START < END"),
        ("0:7", "END must be at most"),
        ("4:6", "no request in it"),
        ("0:4000", "at most 3600 s"),
    ):
        with pytest.raises(RlscaleError) as exc:
            cs.parse_window(text, trace)
        assert fragment in str(exc.value), text
    assert cs.parse_window("360:420", load_trace("bursty")) == (360, 420)


def test_configurations_and_fractions():
    configs = cs.configurations([0.5, 0.8, 0.5], [1, 4])
    assert [c.name for c in configs] == ["load0.5-b1", "load0.5-b4", "load0.8-b1", "load0.8-b4"]
    assert configs[1].load_fraction == 0.5 and configs[1].batch == 4
    for bad in (0.0, -0.1, 1.6, float("nan")):
        with pytest.raises(RlscaleError, match="--load-fraction"):
            cs.check_fractions([bad])
    assert cs.check_fractions([1.5, 0.01]) == [1.5, 0.01]


def test_cpus_own_then_shared_with_a_log_line(caplog):
    placed, generator = cs.assign_cpus(["a", "b"], [0, 1, 2])
    assert placed == {"a": 0, "b": 1} and generator == 2  # a CPU no server has
    placed, generator = cs.assign_cpus(["a", "b"], [4, 5])
    assert placed == {"a": 4, "b": 5} and generator == 5  # the pipeline's end
    with caplog.at_level(logging.WARNING, logger="rlscale.calibrate"):
        placed, _ = cs.assign_cpus(["a", "b", "c"], [0, 1])
    assert placed == {"a": 0, "b": 1, "c": 0}
    assert "3 stages on 2 CPU(s): stages share cores (CPU 0: a and c, CPU 1: b)" in caplog.text


def test_build_settings_without_probing(spec, tmp_path):
    s = cs.build_settings(
        spec=spec,
        models=[MLP],
        urls=[],
        trace=load_trace("bursty"),
        window="360:364",
        fractions=[0.5],
        batches=[1, 2],
        out=tmp_path / "out",
        cpus=[0, 1],
        probe=False,
        repeats=2,
    )
    assert [(t.name, t.variant, t.factory, t.cpu) for t in s.stages] == [
        ("a", "mlp-256", MLP, 0),
        ("b", "mlp-256", MLP, 1),
        ("c", "mlp-512", MLP, 0),
    ]
    assert s.window_s == 4 and s.max_batch == 2 and s.repeats == 2 and (tmp_path / "out").is_dir()
    assert all(t.served_here for t in s.stages)
