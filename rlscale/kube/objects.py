"""How a pipeline stage looks on Kubernetes: one Deployment per stage, read and written as plain dicts.

A stage's configuration lives in its Deployment:

| config | where in the Deployment |
|---|---|
| replicas | ``spec.replicas`` (written through the ``scale`` subresource) |
| variant | env var ``MODEL_VARIANT`` (``kubernetes.variant_env``) of the serving container |
| batch | env var ``MAX_BATCH_SIZE`` (``kubernetes.batch_env``) of the serving container |
| cores | ``resources.requests.cpu`` and ``resources.limits.cpu`` of the serving container |

The serving container is ``kubernetes.container`` or the first one. Changing variant, batch or cores changes the
pod template, so Kubernetes rolls the stage out; with ``maxUnavailable: 0`` (what `stage_deployment` writes) the
rollout is make-before-break, like the simulator's.
"""

from __future__ import annotations

import math
from typing import Any

from rlscale.errors import RlscaleError
from rlscale.spec import KubeSpec, PipelineSpec, StageSpec
from rlscale.types import StageConfig

LABEL_PIPELINE = "rlscale.io/pipeline"
LABEL_STAGE = "rlscale.io/stage"
SYSTEM_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")
"""Namespaces of the cluster itself: the sidecar acts there (and ``manifests`` renders a Role there) only when
explicitly allowed (``--allow-system-namespace``)."""


class DeploymentError(RlscaleError):
    """A stage's Deployment does not describe a configuration the spec allows (a permanent error)."""


def cpu_cores(quantity: str | int | float | None) -> float | None:
    """A Kubernetes CPU quantity (``2``, ``1.5``, ``500m``) in cores; None if absent."""
    if quantity is None:
        return None
    text = str(quantity).strip()
    try:
        return float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:
        raise DeploymentError(f"cannot read CPU quantity {text!r}") from None


def serving_container(deployment: dict[str, Any], kube: KubeSpec) -> tuple[int, dict[str, Any]]:
    """(index, container) of the container that serves the model."""
    name = deployment.get("metadata", {}).get("name", "?")
    containers = deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []
    if not containers:
        raise DeploymentError(f"Deployment {name} has no containers")
    if kube.container is None:
        return 0, containers[0]
    for i, c in enumerate(containers):
        if c.get("name") == kube.container:
            return i, c
    raise DeploymentError(f"Deployment {name} has no container {kube.container!r}")


def _env(container: dict[str, Any], var: str) -> tuple[int | None, str | None]:
    for j, e in enumerate(container.get("env") or []):
        if e.get("name") == var:
            return j, e.get("value")
    return None, None


def read_stage_config(deployment: dict[str, Any], kube: KubeSpec, stage: StageSpec) -> StageConfig:
    """The configuration a stage Deployment asks for (``spec``, not what is running yet).

    Raises:
        DeploymentError: the env vars or CPU request are missing or name something the spec does not allow.
    """
    name = deployment.get("metadata", {}).get("name", "?")
    _, container = serving_container(deployment, kube)
    _, variant = _env(container, kube.variant_env)
    if variant is None:
        raise DeploymentError(f"Deployment {name}: container has no env var {kube.variant_env}")
    if variant not in stage.variant_names:
        raise DeploymentError(
            f"Deployment {name}: {kube.variant_env}={variant!r} is not a variant of stage {stage.name} "
            f"({', '.join(stage.variant_names)})"
        )
    _, batch_text = _env(container, kube.batch_env)
    try:
        batch = int(batch_text) if batch_text is not None else None
    except ValueError:
        batch = None
    if batch is None or batch < 1:
        raise DeploymentError(f"Deployment {name}: env var {kube.batch_env} must be a positive integer")
    resources = container.get("resources") or {}
    cpu = cpu_cores((resources.get("requests") or {}).get("cpu") or (resources.get("limits") or {}).get("cpu"))
    if cpu is None:
        raise DeploymentError(f"Deployment {name}: container has no CPU request")
    replicas = deployment.get("spec", {}).get("replicas")
    return StageConfig(variant, batch, int(replicas if replicas is not None else 1), max(1, int(math.ceil(cpu))))


def ready_replicas(deployment: dict[str, Any]) -> int | None:
    """Replicas Kubernetes reports ready (``status.readyReplicas``); None if the status has none yet."""
    status = deployment.get("status") or {}
    value = status.get("readyReplicas")
    return int(value) if value is not None else None


def template_patch(deployment: dict[str, Any], kube: KubeSpec, new: StageConfig) -> list[dict[str, Any]]:
    """A JSON patch (RFC 6902) that sets variant, batch and cores of the serving container, and the replicas.

    JSON patch addresses the container and env entries by index, so it means the same to every API server
    (strategic merge is Kubernetes-only; JSON merge would replace the whole container list). Writing back the
    ``resourceVersion`` that was read makes the API server refuse the patch with 409 Conflict if the Deployment
    changed since (optimistic locking), so stale indexes never overwrite someone else's change.
    """
    i, container = serving_container(deployment, kube)
    base = f"/spec/template/spec/containers/{i}"
    ops: list[dict[str, Any]] = []
    version = deployment.get("metadata", {}).get("resourceVersion")
    if version is not None:
        ops.append({"op": "replace", "path": "/metadata/resourceVersion", "value": version})
    has_env = bool(container.get("env"))
    for var, value in ((kube.variant_env, new.variant), (kube.batch_env, str(new.batch))):
        j, _ = _env(container, var)
        if j is None:
            if not has_env:  # create the list once; later entries append to it
                ops.append({"op": "add", "path": f"{base}/env", "value": []})
                has_env = True
            ops.append({"op": "add", "path": f"{base}/env/-", "value": {"name": var, "value": value}})
        else:
            # "add" on an existing member replaces it ("replace" would fail where the member is missing)
            ops.append({"op": "add", "path": f"{base}/env/{j}/value", "value": value})
    cpu = str(new.cores)
    if not container.get("resources"):
        ops.append(
            {"op": "add", "path": f"{base}/resources", "value": {"requests": {"cpu": cpu}, "limits": {"cpu": cpu}}}
        )
    else:
        for kind in ("requests", "limits"):
            if (container["resources"].get(kind)) is None:
                ops.append({"op": "add", "path": f"{base}/resources/{kind}", "value": {"cpu": cpu}})
            else:
                ops.append({"op": "add", "path": f"{base}/resources/{kind}/cpu", "value": cpu})
    ops.append({"op": "add", "path": "/spec/replicas", "value": new.replicas})
    return ops


def stage_deployment(
    spec: PipelineSpec,
    stage: StageSpec,
    config: StageConfig,
    *,
    name: str | None = None,
    namespace: str = "default",
    image: str = "registry.example/model-server:latest",
) -> dict[str, Any]:
    """A Deployment for one stage in ``config``, labelled so the sidecar finds it (for examples and the twin)."""
    kube = spec.kubernetes
    labels = {LABEL_PIPELINE: spec.name, LABEL_STAGE: stage.name}
    cpu = str(config.cores)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name or kube.deployments.get(stage.name) or f"{spec.name}-{stage.name}",
            "namespace": namespace,
            "labels": dict(labels),
        },
        "spec": {
            "replicas": config.replicas,
            "selector": {"matchLabels": dict(labels)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "100%", "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "containers": [
                        {
                            "name": kube.container or "server",
                            "image": image,
                            "env": [
                                {"name": kube.variant_env, "value": config.variant},
                                {"name": kube.batch_env, "value": str(config.batch)},
                            ],
                            "resources": {"requests": {"cpu": cpu}, "limits": {"cpu": cpu}},
                        }
                    ]
                },
            },
        },
    }


def rbac_rules(spec: PipelineSpec) -> list[dict[str, Any]]:
    """The Role rules the sidecar needs for this pipeline: exactly the API calls `rlscale.kube.actuator` makes.

    ``get`` reads a stage's Deployment, ``patch`` changes its pod template (JSON patch) and
    ``deployments/scale`` ``patch`` changes only its replicas. When the spec's ``kubernetes.deployments`` names
    every stage's Deployment, the actuator never lists, and both rules carry ``resourceNames`` with exactly those
    names. Otherwise ``list`` finds the unnamed stages by label, and since Kubernetes cannot restrict ``list`` (or
    the names of Deployments found at run time) by ``resourceNames``, the rules name none.
    """
    named = spec.kubernetes.deployments
    if all(st.name in named for st in spec.stages):
        names = list(dict.fromkeys(named[st.name] for st in spec.stages))
        return [
            {"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": names, "verbs": ["get", "patch"]},
            {
                "apiGroups": ["apps"],
                "resources": ["deployments/scale"],
                "resourceNames": list(names),
                "verbs": ["patch"],
            },
        ]
    return [
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "patch"]},
        {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["patch"]},
    ]


def system_namespace_problem(namespace: str, where: str) -> str | None:
    """Why the sidecar must not act in ``namespace`` (a Kubernetes system namespace), or None if it may.

    Args:
        namespace: the namespace.
        where: where it came from, for the message (``--namespace``, ``the spec's kubernetes.namespace``).
    """
    if namespace not in SYSTEM_NAMESPACES:
        return None
    return (
        f"{where} {namespace} is a Kubernetes system namespace: rlscale will not patch Deployments there unless "
        "given --allow-system-namespace"
    )
