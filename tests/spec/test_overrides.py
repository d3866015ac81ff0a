"""``--set FIELD=VALUE``: spec overrides by dotted path, in `load_spec` and in every command that takes a spec."""

from __future__ import annotations

import dataclasses
import json
import types
from pathlib import Path

import pytest
import yaml

from rlscale.cli import main
from rlscale.errors import RlscaleError, SpecError
from rlscale.spec import DEFAULT_RESIZE_S, apply_overrides, load_spec


def test_overrides_by_dotted_path_with_yaml_values(write_spec):
    path = write_spec()
    spec = load_spec(
        path,
        [
            "objective.alpha=10",
            "stages.0.max_replicas=8",
            "sla_s=1.5",
            "stages.0.cores=[2, 1]",
            "stages.1.variants.0.accuracy=0.75",
            "objective.accuracy_method=product",
            "kubernetes.namespace=ml",
            "kubernetes.deployments.first=det",
            "description=  spaced  ",
        ],
    )
    assert spec.objective.alpha == 10.0 and spec.stages[0].max_replicas == 8 and spec.sla_s == 1.5
    assert spec.stages[0].cores == (1, 2) and spec.stages[1].variants[0].accuracy == 0.75
    assert spec.objective.accuracy_method == "product"
    assert spec.kubernetes.namespace == "ml" and spec.kubernetes.deployments == {"first": "det"}
    assert spec.description == "spaced"
    assert spec.objective.sla_penalty == 100.0  # derived defaults still apply
    assert spec.source == path  # relative profiles still resolve from the spec's folder
    assert load_spec(path) != spec  # the file is untouched


def test_overrides_do_not_touch_the_document():
    raw = {"sla_s": 1, "objective": {"alpha": 1}}
    out = apply_overrides(raw, ["objective.alpha=2", "sla_s=3"])
    assert raw == {"sla_s": 1, "objective": {"alpha": 1}} and out == {"sla_s": 3, "objective": {"alpha": 2}}


@pytest.mark.parametrize(
    "item,message",
    [
        ("objective.alfa=1", "--set objective.alfa=1: objective.alfa: unknown field (allowed: accuracy_method, alpha,"),
        ("colour=blue", "--set colour=blue: colour: unknown field (allowed: batch_timeout_s, core_budget,"),
        ("stages.5.max_replicas=8", "--set stages.5.max_replicas=8: stages[5]: not an index of stages (0 to 1)"),
        ("stages.first.max_replicas=8", "stages.first: not an index of stages"),
        ("stages.0.replicas=3", "--set stages.0.replicas=3: stages[0].replicas: unknown field"),
        ("sla_s.value=3", "--set sla_s.value=3: sla_s: is a value, it has no fields"),
        ("stages.0.cores.0.x=1", "stages[0].cores[0]: is a value, it has no fields"),
        ("stages.0.latency=1", "stages[0].latency: unknown field"),
        ("source=/etc/passwd", "--set source=/etc/passwd: source: unknown field"),
        ("sla_s", "--set sla_s: expected FIELD=VALUE"),
        ("=3", "expected FIELD=VALUE"),
        ("objective..alpha=1", "is not a dotted field path"),
        ("sla_s=[1", "--set sla_s=[1: not valid YAML"),
    ],
)
def test_a_bad_path_is_one_line_naming_it(write_spec, item, message):
    with pytest.raises(SpecError) as info:
        load_spec(write_spec(), [item])
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "item,message",
    [
        ("objective.alpha=-1", "objective.alpha: must be >= 0, got -1 (with --set objective.alpha=-1)"),
        ("stages.0.max_replicas=0", "stages[0].max_replicas: must be >= 1, got 0 (with --set stages.0.max_replicas=0)"),
        ("sla_s=fast", "sla_s: must be a number, got 'fast' (with --set sla_s=fast)"),
        ("sla_s=true", "sla_s: must be a number, got True"),
        ("stages.0.cores=[1,1]", "stages[0].cores: has duplicates: [1, 1] (with --set stages.0.cores=[1,1])"),
        ("sla_s=5", "drop_limit_s: must be >= sla_s (5), got 2 (with --set sla_s=5)"),  # the cause, not the field
        ("objective=3", "objective: must be a mapping, got int (with --set objective=3)"),
        ("stages.0.max_pools=0", "stages[0].max_pools: must be >= 1, got 0 (with --set stages.0.max_pools=0)"),
        ("stages.0.max_pools=1.5", "stages[0].max_pools: must be an integer, got 1.5"),
        ("stages.0.max_pools=3", "stages[0].max_pools: must be <= the stage's number of variants (2), got 3"),
        ("stages.1.max_pools=2", "stages[1].max_pools: must be <= the stage's number of variants (1), got 2"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_field_and_the_set(write_spec, item, message):
    path = write_spec()
    with pytest.raises(SpecError) as info:
        load_spec(path, [item])
    assert str(info.value) == f"{path}: {message}" or str(info.value).startswith(f"{path}: {message}")


def test_at_most_so_many_overrides(write_spec):
    with pytest.raises(SpecError, match="at most 64"):
        load_spec(write_spec(), ["sla_s=1"] * 65)


# ---------------------------------------------------------------------------------------------- commands


def _main(capfd, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capfd.readouterr()
    return code, out, err


COMMANDS = {
    "pipelines": ["pipelines", "--spec", "video"],
    "simulate": ["simulate", "--pipeline", "video", "--trace", "bursty", "--policy", "static-min"],
    "train": ["train", "--pipeline", "video", "--timesteps", "10"],
    "compare": ["compare", "--pipeline", "video", "--traces", "bursty", "--policies", "static-min"],
    "sidecar": ["sidecar", "--spec", "video", "--prometheus", "http://127.0.0.1:9", "--once"],
    "manifests": ["manifests", "--spec", "video"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_with_a_spec_rejects_a_bad_set(command, capfd, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # train and compare would write under the working folder
    for item, message in (
        ("objective.alfa=1", "--set objective.alfa=1: objective.alfa: unknown field"),
        ("objective.alpha=-1", "objective.alpha: must be >= 0, got -1 (with --set objective.alpha=-1)"),
    ):
        code, out, err = _main(capfd, *COMMANDS[command], "--set", item)
        assert code == 2, err
        assert err.count("\n") == 1 and message in err and err.startswith(f"rlscale {command}: error: ")
    assert not list(tmp_path.iterdir())  # nothing was written


def test_pipelines_json_applies_the_overrides(capfd):
    code, out, err = _main(capfd, "pipelines", "--spec", "video", "--set", "objective.alpha=10", "--json")
    assert code == 0, err
    assert json.loads(out)[0]["objective"]["alpha"] == 10.0


def test_schema_takes_no_spec(capfd):
    code, out, err = _main(capfd, "pipelines", "--schema", "--spec", "video")
    assert code == 2 and "--schema" in err and out == ""


def test_simulate_runs_the_overridden_spec(capfd, monkeypatch):
    import rlscale.sim.runner as runner

    seen = {}

    def fake_run(spec, trace, policy, **kwargs):
        seen["spec"] = spec
        return types.SimpleNamespace(record={"pipeline": spec.name})

    monkeypatch.setattr(runner, "run_episode", fake_run)
    code, out, err = _main(
        capfd, *COMMANDS["simulate"], "--set", "stages.0.max_replicas=3", "--set", "sla_s=5", "--json"
    )
    assert code == 0, err
    assert seen["spec"].stages[0].max_replicas == 3 and seen["spec"].sla_s == 5.0


def _stop(seen: dict, key: str):
    def fake(first, *args, **kwargs):
        seen[key] = first
        raise RlscaleError("stopped by the test")

    return fake


def test_compare_hands_on_a_spec_file_with_the_overrides(capfd, monkeypatch, tmp_path):
    import rlscale.evaluate.compare as compare

    seen: dict = {}
    monkeypatch.setattr(compare, "run_comparison", _stop(seen, "pipeline"))
    out_dir = tmp_path / "cmp"
    argv = [*COMMANDS["compare"], "--out", str(out_dir), "--set", "objective.alpha=7"]
    code, out, err = _main(capfd, *argv)
    assert code == 2 and "stopped by the test" in err
    written = Path(seen["pipeline"])
    assert written.parent == out_dir and written.name.startswith("spec-video-") and written.suffix == ".yaml"
    assert "--set objective.alpha=7" in written.read_text().splitlines()[0]
    spec = load_spec(written)
    assert spec.objective.alpha == 7.0
    assert spec == dataclasses.replace(load_spec("video", ["objective.alpha=7"]), source=written)
    _main(capfd, *argv)
    assert seen["pipeline"] == str(written)  # same overrides, same file: --resume finds the same settings
    code, out, err = _main(capfd, *COMMANDS["compare"], "--out", str(out_dir))
    assert seen["pipeline"] == "video"  # without --set the name is handed on unchanged


def test_train_hands_on_a_spec_file_with_the_overrides(capfd, monkeypatch, tmp_path):
    import agents.training as training

    seen: dict = {}
    monkeypatch.setattr(training, "train", lambda cfg, **kw: _stop(seen, "cfg")(cfg))
    runs = tmp_path / "runs"
    code, out, err = _main(capfd, *COMMANDS["train"], "--out", str(runs), "--set", "stages.1.max_replicas=9")
    assert code == 2 and "stopped by the test" in err
    written = Path(seen["cfg"].pipeline)
    assert written.parent == runs
    assert load_spec(written).stages[1].max_replicas == 9


def test_manifests_ship_the_overridden_spec(capfd):
    code, out, err = _main(capfd, *COMMANDS["manifests"], "--set", "objective.alpha=11", "--set", "sla_s=6")
    assert code == 0, err
    config_map = next(d for d in yaml.safe_load_all(out) if d and d.get("kind") == "ConfigMap")
    shipped = yaml.safe_load(config_map["data"]["spec.yaml"])
    assert shipped["objective"]["alpha"] == 11 and shipped["sla_s"] == 6
    assert all("profile" not in s for s in shipped["stages"])  # bundled profiles: the image has them
    code, plain, err = _main(capfd, *COMMANDS["manifests"])
    assert code == 0 and "alpha: 11" not in plain


def test_max_pools_defaults_to_one_and_is_set_per_stage(write_spec):
    path = write_spec()
    plain = load_spec(path)
    assert [st.max_pools for st in plain.stages] == [1, 1] and not plain.pooled
    pooled = load_spec(path, ["stages.0.max_pools=2"])
    assert [st.max_pools for st in pooled.stages] == [2, 1] and pooled.pooled
    assert pooled.to_dict()["stages"][0]["max_pools"] == 2
    assert "max_pools" not in plain.to_document()["stages"][0]  # the default stays implicit in documents
    again = path.parent / "again.yaml"
    again.write_text(yaml.safe_dump(pooled.to_document(), sort_keys=False))
    assert load_spec(again).stages[0].max_pools == 2


def test_sponge_fields_by_override(write_spec, tmp_path):
    """The fields of issue 17: queue discipline per stage, per-request SLOs, in-place resizing."""
    path = write_spec()
    (Path(path).parent / "bw.csv").write_text("bandwidth_bytes_per_s\n1000\n")
    spec = load_spec(
        path,
        [
            "stages.0.queue_discipline=edf",
            "request_slo.payload_kb=284",
            "request_slo.bandwidth=bw.csv",  # relative to the spec's folder
            "in_place_resize=true",
            "resize_s=2",
        ],
    )
    assert [st.queue_discipline for st in spec.stages] == ["edf", "fifo"]
    assert spec.request_slo.payload_kb == 284.0 and spec.request_slo.trace.bytes_per_s.tolist() == [1000.0]
    assert spec.in_place_resize and spec.resize_s == 2.0
    plain = load_spec(path)
    assert plain.request_slo is None and not plain.in_place_resize and plain.stages[0].queue_discipline == "fifo"
    # the document written back reads to the same spec (the CSV by absolute path)
    again = tmp_path / "again.yaml"
    again.write_text(yaml.safe_dump(spec.to_document()))
    back = load_spec(again)
    assert back.to_document() == spec.to_document() and back.request_slo.trace.bytes_per_s.tolist() == [1000.0]


def test_in_place_resize_is_off_by_default_and_set_at_the_top(write_spec):
    path = write_spec()
    plain = load_spec(path)
    assert plain.in_place_resize is False and plain.resize_s == DEFAULT_RESIZE_S
    assert "in_place_resize" not in plain.to_document() and "resize_s" not in plain.to_document()
    resized = load_spec(path, ["in_place_resize=true", "resize_s=2.5"])
    assert resized.in_place_resize is True and resized.resize_s == 2.5 and resized != plain
    assert resized.to_dict()["in_place_resize"] is True and resized.to_dict()["resize_s"] == 2.5
    again = path.parent / "again.yaml"
    again.write_text(yaml.safe_dump(resized.to_document(), sort_keys=False))
    back = load_spec(again)
    assert (back.in_place_resize, back.resize_s) == (True, 2.5)


@pytest.mark.parametrize(
    "item,message",
    [
        ("stages.0.queue_discipline=lifo", "stages[0].queue_discipline: must be one of fifo, edf, got 'lifo'"),
        ("in_place_resize=3", "in_place_resize: must be true or false, got 3"),
        ("resize_s=-1", "resize_s: must be >= 0, got -1"),
        ("request_slo.payload_kb=0", "request_slo.payload_kb: must be > 0, got 0"),
        ("request_slo.bandwidth=wifi", "request_slo.bandwidth: unknown bandwidth trace 'wifi': not a bundled name"),
        ("request_slo.bandwidth=none.csv", "request_slo.bandwidth: "),
        ("request_slo.speed=3", "request_slo.speed: unknown field (allowed: bandwidth, payload_kb)"),
    ],
)
def test_sponge_fields_bad_values_are_one_line(write_spec, item, message):
    path = write_spec()
    sets = [item]
    if item.startswith(("request_slo.payload", "request_slo.speed")):
        sets.append("request_slo.bandwidth=lte-bus")
    with pytest.raises(SpecError) as info:
        load_spec(path, sets)
    text = str(info.value)
    assert message in text and "\n" not in text and "--set" in text


@pytest.mark.parametrize(
    "item,message",
    [
        ("in_place_resize=maybe", "in_place_resize: must be true or false, got 'maybe'"),
        ("in_place_resize=1", "in_place_resize: must be true or false, got 1"),
        ("resize_s=-1", "resize_s: must be >= 0, got -1"),
        ("resize_s=fast", "resize_s: must be a number, got 'fast'"),
    ],
)
def test_in_place_resize_fields_refuse_bad_values(write_spec, item, message):
    with pytest.raises(SpecError) as info:
        load_spec(write_spec(), [item])
    assert message in str(info.value) and f"--set {item}" in str(info.value)
