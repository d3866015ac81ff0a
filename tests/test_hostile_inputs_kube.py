"""Hostile input to the Kubernetes-facing commands (``manifests``, ``sidecar``) and to the spec fields that become
Kubernetes objects or PromQL: one line on stderr, exit 2, no traceback, no secret shown, nothing on disk lost.

The pattern of tests/test_hostile_inputs.py: each case runs ``rlscale`` in a folder that already holds earlier work
(``keep/results.csv``, ``keep.png``), which must be byte-for-byte intact afterwards; in this process through
``rlscale.cli.main(argv)`` (the ``cli_main`` fixture), but for the smoke cases in `SUBPROCESS`, which run the real
process.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import base_spec_dict, write_profile
from tests.hostile import assert_one_error_line, params, run

DOWN = "http://127.0.0.1:9"  # discard port: nothing listens
SECRET = "s3cret"
GLOBALS = "{pipeline.__class__.__init__.__globals__}"  # a template field that reaches into Python's objects


def _spec(mutate) -> dict:
    data = base_spec_dict()
    mutate(data)
    return data


def _pooled_stage_named(name: str):
    def mutate(d: dict) -> None:
        d["stages"][0].update(name=name, max_pools=2)

    return mutate


def _template(template: str):
    return lambda d: d.update(kubernetes={"promql": {"arrival_rate": template}})


SPECS = {
    "pooled.yaml": _spec(lambda d: d["stages"][0].update(max_pools=2)),
    "stage-space.yaml": _spec(_pooled_stage_named("first stage")),
    "stage-newline.yaml": _spec(_pooled_stage_named("first\nstage")),
    "stage-upper.yaml": _spec(_pooled_stage_named("First")),
    "template-globals.yaml": _spec(_template('sum(rate(x{{stage="{stage}"}}[{window}])) ' + GLOBALS)),
    "template-attribute.yaml": _spec(_template('sum(rate(x{{stage="{stage.__class__}"}}[{window}]))')),
    "template-index.yaml": _spec(_template('sum(rate(x{{stage="{stage[0]}"}}[{window}]))')),
}  # fmt: skip


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("hostile-kube")
    for name, data in SPECS.items():
        (d / name).write_text(yaml.safe_dump(data, sort_keys=False))
    write_profile(d)
    return d


MANIFESTS = ["manifests", "--spec", "{h}/pooled.yaml"]
SIDECAR = ["sidecar", "--spec", "video", "--once", "--metrics-port", "0"]

CASES = [
    # stage names become object names and labels
    ("manifests-stage-space", ["manifests", "--spec", "{h}/stage-space.yaml"], "not a usable stage name"),
    ("manifests-stage-newline", ["manifests", "--spec", "{h}/stage-newline.yaml"], "not a usable stage name"),
    ("manifests-stage-upper", ["manifests", "--spec", "{h}/stage-upper.yaml"], "not a usable stage name"),
    ("pipelines-stage-newline", ["pipelines", "--spec", "{h}/stage-newline.yaml"], "not a usable stage name"),
    # images
    ("manifests-image-newline", [*MANIFESTS, "--image", "rlscale:1\nx"], "image"),
    ("manifests-image-space", [*MANIFESTS, "--image", "rlscale:1 --privileged"], "not a container image reference"),
    ("manifests-image-control", [*MANIFESTS, "--image", "rlscale:1\x1b[2J"], "not a container image reference"),
    ("manifests-model-image-newline", [*MANIFESTS, "--model-image", "mlserver:1\nx"], "model image"),
    # the Prometheus URL
    ("manifests-prometheus-newline", [*MANIFESTS, "--prometheus", "http://prom:9090\n"], "line breaks"),
    ("manifests-prometheus-space", [*MANIFESTS, "--prometheus", "http://prom:9090 x"], "line breaks"),
    ("sidecar-prometheus-newline", [*SIDECAR, "--prometheus", "http://127.0.0.1:9\nx"], "line breaks"),
    ("manifests-prometheus-ipv6", [*MANIFESTS, "--prometheus", f"http://u:{SECRET}@[::1"], "not a valid URL"),
    ("sidecar-prometheus-ipv6", [*SIDECAR, "--prometheus", f"http://u:{SECRET}@[::1"], "not a valid URL"),
    ("sidecar-prometheus-port", [*SIDECAR, "--prometheus", "http://127.0.0.1:99999"], "not a valid URL"),
    ("manifests-prometheus-query", [*MANIFESTS, "--prometheus", f"http://prom:9090/?token={SECRET}"], "query string"),
    ("sidecar-prometheus-query", [*SIDECAR, "--prometheus", f"{DOWN}/?access_token={SECRET}"], "query string"),
    ("sidecar-v-prometheus-query", ["-v", *SIDECAR, "--prometheus", f"{DOWN}?token={SECRET}"], "query string"),
    # monitor labels
    ("manifests-monitor-label-slashes", [*MANIFESTS, "--pod-monitor", "--monitor-label", "a/b/c=v"], "label key"),
    ("manifests-monitor-label-prefix", [*MANIFESTS, "--pod-monitor", "--monitor-label", "A_B/c=v"], "label key"),
    # PromQL templates: plain {name} fields only
    ("pipelines-template-globals", ["pipelines", "--spec", "{h}/template-globals.yaml"], "unknown field"),
    ("sidecar-template-globals", ["sidecar", "--spec", "{h}/template-globals.yaml", "--prometheus", DOWN], "unknown"),
    ("pipelines-template-attribute", ["pipelines", "--spec", "{h}/template-attribute.yaml"], "unknown field"),
    ("pipelines-template-index", ["pipelines", "--spec", "{h}/template-index.yaml"], "unknown field"),
    # --max-staleness
    ("sidecar-max-staleness-zero", [*SIDECAR, "--prometheus", DOWN, "--max-staleness", "0"], "must be >= 1 and <= 300"),
    (
        "sidecar-max-staleness-nan",
        [*SIDECAR, "--prometheus", DOWN, "--max-staleness", "nan"],
        "must be >= 1 and <= 300",
    ),
    (
        "sidecar-max-staleness-big",
        [*SIDECAR, "--prometheus", DOWN, "--max-staleness", "3600"],
        "must be >= 1 and <= 300",
    ),
    (
        "sidecar-max-staleness-word",
        [*SIDECAR, "--prometheus", DOWN, "--max-staleness", "old"],
        "--max-staleness: expected a number",
    ),
]


SUBPROCESS = {"manifests-image-newline", "sidecar-prometheus-query"}  # smoke cases: the real process


@pytest.mark.parametrize(("argv", "fragment", "in_subprocess"), list(params(CASES, SUBPROCESS)))
def test_bad_kubernetes_input_gets_one_line_and_exit_2(tmp_path, hostile, cli_main, argv, fragment, in_subprocess):
    kept = {tmp_path / "keep" / "results.csv": b"trace,policy\nbursty,ipa\n", tmp_path / "keep.png": b"\x89PNG..."}
    for path, data in kept.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    args = [a.replace("{h}", str(hostile)) for a in argv]
    command = next(a for a in args if not a.startswith("-"))
    result = run(cli_main, args, tmp_path, in_subprocess)
    assert_one_error_line(result, command, fragment)
    assert SECRET not in result.stderr + result.stdout
    for path, data in kept.items():
        assert path.read_bytes() == data, f"{path} was changed"
