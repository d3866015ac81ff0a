"""The Role with in-place resize (``in_place_resize``): pods ``list`` and ``pods/resize`` ``patch`` only then."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from rlscale.cli import main
from rlscale.kube.manifests import render_manifests
from rlscale.kube.objects import rbac_rules
from rlscale.spec import bundled_pipelines, load_spec

POD_RULES = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["pods/resize"], "verbs": ["patch"]},
]


def test_only_sponge_enables_in_place_resize_by_default():
    assert [n for n in bundled_pipelines() if load_spec(n).in_place_resize] == ["sponge"]


def role(spec) -> dict[str, Any]:
    (doc,) = [d for d in yaml.safe_load_all(render_manifests(spec)) if d and d["kind"] == "Role"]
    return doc


@pytest.mark.parametrize("name", bundled_pipelines())
def test_without_in_place_resize_the_role_has_nothing_on_pods(name):
    spec = load_spec(name, ["in_place_resize=false"])  # sponge's spec enables it; every other one leaves it off
    assert not spec.in_place_resize
    rules = role(spec)["rules"]
    assert rules == rbac_rules(spec)
    assert not [r for r in rules if r["apiGroups"] == [""] or any(res.startswith("pods") for res in r["resources"])]


@pytest.mark.parametrize("name", bundled_pipelines())
def test_in_place_resize_adds_exactly_pods_list_and_the_resize_subresource(name):
    plain = load_spec(name, ["in_place_resize=false"])
    spec = load_spec(name, ["in_place_resize=true"])
    rules = role(spec)["rules"]
    assert rules == rbac_rules(spec) == [*rbac_rules(plain), *POD_RULES]
    pods = [r for r in rules if r["apiGroups"] == [""]]
    verbs = {(res, v) for r in pods for res in r["resources"] for v in r["verbs"]}
    assert verbs == {("pods", "list"), ("pods/resize", "patch")}  # no get, update, delete or create on pods
    assert all("resourceNames" not in r for r in pods)  # pod names are made at run time


def test_named_deployments_keep_their_names_and_pods_come_on_top(tmp_path):
    spec = load_spec(
        "video",
        ["in_place_resize=true", "kubernetes.deployments.crop=crop", "kubernetes.deployments.classification=cls"],
    )
    rules = rbac_rules(spec)
    assert rules[0] == {
        "apiGroups": ["apps"],
        "resources": ["deployments"],
        "resourceNames": ["crop", "cls"],
        "verbs": ["get", "patch"],  # the annotation after a resize is a patch of the same Deployment
    }
    assert rules[2:] == POD_RULES


def test_the_manifests_command_renders_the_pod_rules_with_set(capfd):
    assert main(["manifests", "--spec", "video", "--set", "in_place_resize=true"]) == 0
    out = capfd.readouterr().out
    docs = [d for d in yaml.safe_load_all(out) if d]
    (rendered,) = [d for d in docs if d["kind"] == "Role"]
    assert rendered["rules"][-2:] == POD_RULES
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert yaml.safe_load(config_map["data"]["spec.yaml"])["in_place_resize"] is True  # the sidecar gets it too
