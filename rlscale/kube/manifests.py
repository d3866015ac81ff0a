"""Kubernetes manifests that run the rlscale sidecar for one pipeline (what ``rlscale manifests`` prints).

Five objects, in apply order: a ServiceAccount, a Role with exactly `rlscale.kube.objects.rbac_rules`, a
RoleBinding, a ConfigMap holding the spec (and any profile CSV the image does not bundle) and the sidecar's
Deployment. The Role and RoleBinding live where the stage Deployments are (the spec's ``kubernetes.namespace``,
else ``namespace``), and the sidecar's ``--namespace`` names that namespace; everything else lives in
``namespace``.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path
from typing import Any

import yaml

from rlscale.errors import RlscaleError
from rlscale.kube.objects import rbac_rules, system_namespace_problem
from rlscale.kube.prometheus import redact_url
from rlscale.spec import PipelineSpec, data_dir, is_k8s_name

MOUNT_DIR = "/etc/rlscale"
SPEC_KEY = "spec.yaml"
RUN_AS_UID = 10001
"""The sidecar's non-root uid and gid; the Dockerfile creates its user with the same ids."""
GRACE_MARGIN_S = 30
"""Seconds of SIGTERM grace on top of one interval, so the sidecar can finish the step it is in."""
CONFIGMAP_MAX_BYTES = 1024 * 1024
INTERVAL_RANGE_S = (1.0, 86400.0)
"""The sidecar's ``--interval`` and ``--window``: 1 s to 1 day."""

_CONFIGMAP_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


class _Dumper(yaml.SafeDumper):
    """Safe YAML with no anchors/aliases and multi-line text (the spec, CSVs) as readable ``|`` blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def _check_label(value: str, what: str) -> None:
    if not is_k8s_name(value):
        raise RlscaleError(
            f"{what} {value!r} is not a Kubernetes DNS label (lowercase letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters)"
        )


def spec_files(spec: PipelineSpec) -> dict[str, str]:
    """The ConfigMap data for a spec: ``spec.yaml`` plus each profile CSV the image does not bundle.

    A stage without a ``profile`` key uses the bundled profile of its task, which the image has. A stage whose
    ``profile`` is the bundled profile of its task loses the key (same meaning, and the image's data folder is
    elsewhere). Any other profile is embedded under its basename and the stage's ``profile`` rewritten to it,
    which the sidecar resolves next to ``spec.yaml``. Without such stages the spec text is copied unchanged.

    Raises:
        RlscaleError: the spec file cannot be read, two different profiles share a basename, or a basename
            cannot be a ConfigMap key.
    """
    try:
        text = spec.source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RlscaleError(f"{spec.source}: cannot read spec: {exc}") from None
    raw = yaml.safe_load(text)
    raw_stages = raw.get("stages") if isinstance(raw, dict) else None
    if not isinstance(raw_stages, list) or len(raw_stages) != len(spec.stages):
        raise RlscaleError(f"{spec.source}: the file no longer matches the loaded spec; load it again")

    bundled = data_dir() / "profiles"
    profiles: dict[str, Path] = {}
    rewritten = False
    for raw_stage, stage in zip(raw_stages, spec.stages, strict=True):
        if not isinstance(raw_stage, dict) or raw_stage.get("profile") is None:
            continue
        path = stage.profile_path
        if path.resolve() == (bundled / f"{stage.task}.csv").resolve():
            del raw_stage["profile"]
            rewritten = True
            continue
        key = path.name
        if key == SPEC_KEY or not _CONFIGMAP_KEY.match(key):
            raise RlscaleError(f"stage {stage.name}: profile file name {key!r} cannot be a ConfigMap key; rename it")
        if key in profiles and profiles[key].resolve() != path.resolve():
            raise RlscaleError(
                f"stage {stage.name}: profiles {profiles[key]} and {path} share the file name {key!r}; "
                "rename one (the ConfigMap holds them side by side)"
            )
        profiles[key] = path
        raw_stage["profile"] = key
        rewritten = True

    files = {SPEC_KEY: yaml.safe_dump(raw, sort_keys=False) if rewritten else text}
    for key, path in profiles.items():
        try:
            files[key] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RlscaleError(f"{path}: cannot read profile: {exc}") from None
    size_bytes = sum(len(v.encode("utf-8")) for v in files.values())
    if size_bytes > CONFIGMAP_MAX_BYTES:
        raise RlscaleError(f"spec and profiles take {size_bytes} bytes; a ConfigMap holds at most 1 MiB")
    return files


def render_manifests(
    spec: PipelineSpec,
    *,
    namespace: str = "default",
    image: str = "rlscale:latest",
    prometheus_url: str = "http://prometheus-server.monitoring.svc:9090",
    policy: str = "ipa",
    interval_s: float | None = None,
    window_s: float | None = None,
    dry_run: bool = False,
    metrics_port: int = 9400,
    allow_system_namespace: bool = False,
    guard: bool | None = None,
) -> str:
    """The sidecar's manifests as multi-document YAML, ready for ``kubectl apply -f -``.

    Args:
        spec: the pipeline; its source file (and custom profiles) go into the ConfigMap.
        namespace: namespace of the sidecar (and of the stage Deployments unless the spec names one).
        image: the rlscale container image.
        prometheus_url: base URL of the Prometheus the sidecar reads the pipeline's metrics from.
        policy: the policy the sidecar runs (``rlscale sidecar --policy``).
        interval_s: seconds between decisions (None: the spec's ``interval_s``).
        window_s: the sidecar's query window, two scrapes or more (None: the sidecar's default).
        dry_run: run the sidecar log-only (every change a server-side dry run).
        metrics_port: port of the sidecar's own ``/metrics`` endpoint.
        guard: the sidecar's ``--guard`` (None: the policy's default, `rlscale.control.guard_default`).
        allow_system_namespace: allow a Kubernetes system namespace (``kube-system``...) for the sidecar or the
            stage Deployments; the sidecar is then run with ``--allow-system-namespace`` too.

    Raises:
        RlscaleError: an argument or the pipeline name cannot be used in a manifest, or a namespace is a system
            namespace that is not allowed.
    """
    _check_label(namespace, "namespace")
    _check_label(f"rlscale-{spec.name}", "sidecar name (from the pipeline name)")
    if not allow_system_namespace:
        for where, value in (("namespace", namespace), ("the spec's kubernetes.namespace", spec.kubernetes.namespace)):
            problem = system_namespace_problem(value, where) if value else None
            if problem:
                raise RlscaleError(problem)
    if isinstance(metrics_port, bool) or not isinstance(metrics_port, int) or not 1 <= metrics_port <= 65535:
        raise RlscaleError(f"metrics port must be an integer in 1..65535, got {metrics_port!r}")
    low, high = INTERVAL_RANGE_S
    for what, value in (("interval", interval_s), ("window", window_s)):
        if value is not None and not (math.isfinite(value) and low <= value <= high):
            raise RlscaleError(
                f"{what} must be a positive number of seconds from {low:g} to {high:g} (1 day), got {value!r}"
            )
    if not image.strip():
        raise RlscaleError("image must not be empty")
    if not policy.strip():
        raise RlscaleError("policy must not be empty")
    if not prometheus_url.startswith(("http://", "https://")):
        raise RlscaleError(f"Prometheus URL must start with http:// or https://, got {redact_url(prometheus_url)!r}")

    name = f"rlscale-{spec.name}"
    config_name = f"{name}-spec"
    stage_namespace = spec.kubernetes.namespace or namespace
    labels = {
        "app.kubernetes.io/name": "rlscale",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": "autoscaler",
    }
    files = spec_files(spec)
    # a changed spec changes the pod template, so `kubectl apply` restarts the sidecar with it
    spec_sha256 = hashlib.sha256("\0".join(f"{k}\0{v}" for k, v in sorted(files.items())).encode()).hexdigest()
    step_s = interval_s if interval_s is not None else spec.interval_s

    args = [
        "sidecar",
        "--spec",
        f"{MOUNT_DIR}/{SPEC_KEY}",
        "--prometheus",
        prometheus_url,
        "--namespace",
        stage_namespace,  # where the Role grants access, whatever the CLI's precedence between flag and spec
        "--policy",
        policy,
    ]
    if interval_s is not None:
        args += ["--interval", f"{interval_s:g}"]
    if window_s is not None:
        args += ["--window", f"{window_s:g}"]
    if dry_run:
        args.append("--dry-run")
    if guard is not None:
        args += ["--guard", "on" if guard else "off"]
    if system_namespace_problem(stage_namespace, "namespace"):  # allowed here, so allowed to the sidecar
        args.append("--allow-system-namespace")
    args += ["--metrics-address", "0.0.0.0", "--metrics-port", str(metrics_port)]

    def meta(obj_name: str, obj_namespace: str) -> dict[str, Any]:
        return {"name": obj_name, "namespace": obj_namespace, "labels": dict(labels)}

    def probe(path: str, initial_delay_s: int, failure_threshold: int) -> dict[str, Any]:
        return {
            "httpGet": {"path": path, "port": "metrics"},
            "initialDelaySeconds": initial_delay_s,
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": failure_threshold,
        }

    documents: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(name, namespace)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta(name, stage_namespace),
            "rules": rbac_rules(spec),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta(name, stage_namespace),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(config_name, namespace), "data": files},
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta(name, namespace),
            "spec": {
                "replicas": 1,
                # never two sidecars deciding for the same pipeline at once
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": dict(labels)},
                "template": {
                    "metadata": {
                        "labels": dict(labels),
                        "annotations": {
                            "prometheus.io/scrape": "true",
                            "prometheus.io/port": str(metrics_port),
                            "prometheus.io/path": "/metrics",
                            "rlscale.io/spec-sha256": spec_sha256,
                        },
                    },
                    "spec": {
                        "serviceAccountName": name,
                        "terminationGracePeriodSeconds": int(math.ceil(step_s)) + GRACE_MARGIN_S,
                        "containers": [
                            {
                                "name": "rlscale",
                                "image": image,
                                "command": ["rlscale"],
                                "args": args,
                                "env": [
                                    # the root filesystem is read-only: caches go to the /tmp emptyDir
                                    {"name": "HOME", "value": "/tmp"},
                                    {"name": "MPLCONFIGDIR", "value": "/tmp/matplotlib"},
                                    {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
                                    {"name": "PYTHONUNBUFFERED", "value": "1"},
                                ],
                                "ports": [{"name": "metrics", "containerPort": metrics_port, "protocol": "TCP"}],
                                "readinessProbe": probe("/metrics", 5, 3),
                                # a slow first import (torch) must not get the pod killed
                                "livenessProbe": probe("/healthz", 30, 6),  # 503 when the loop is stuck
                                "resources": {
                                    "requests": {"cpu": "250m", "memory": "512Mi"},
                                    "limits": {"memory": "1Gi"},
                                },
                                "securityContext": {
                                    "runAsNonRoot": True,
                                    "runAsUser": RUN_AS_UID,
                                    "runAsGroup": RUN_AS_UID,
                                    "readOnlyRootFilesystem": True,
                                    "allowPrivilegeEscalation": False,
                                    "capabilities": {"drop": ["ALL"]},
                                    "seccompProfile": {"type": "RuntimeDefault"},
                                },
                                "volumeMounts": [
                                    {"name": "spec", "mountPath": MOUNT_DIR, "readOnly": True},
                                    {"name": "tmp", "mountPath": "/tmp"},
                                ],
                            }
                        ],
                        "volumes": [
                            {"name": "spec", "configMap": {"name": config_name}},
                            {"name": "tmp", "emptyDir": {}},
                        ],
                    },
                },
            },
        },
    ]
    return yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False)
