"""How a pipeline stage looks on Kubernetes: one Deployment per stage, read and written as plain dicts.

A stage's configuration lives in its Deployment:

| config | where in the Deployment |
|---|---|
| replicas | ``spec.replicas`` (written through the ``scale`` subresource) |
| variant | env var ``MODEL_VARIANT`` (``kubernetes.variant_env``) of the serving container |
| batch | env var ``MAX_BATCH_SIZE`` (``kubernetes.batch_env``) of the serving container |
| cores | ``resources.requests.cpu`` and ``resources.limits.cpu`` of the serving container |
| (the spec's ``batch_timeout_s``) | env var ``BATCH_TIMEOUT_S`` (``kubernetes.batch_timeout_env``), written only |

The serving container is ``kubernetes.container`` or the first one. Changing variant, batch or cores changes the
pod template, so Kubernetes rolls the stage out; with ``maxUnavailable: 0`` (what `stage_deployment` writes) the
rollout is make-before-break, like the simulator's.

A stage with ``max_pools > 1`` (a *pooled* stage, `StageSpec.max_pools`) is not one Deployment but one per
(stage, variant), each fixed to its variant, with one Service each, and an ``HTTPRoute`` (Gateway API) whose
backendRefs split the stage's requests between those Services by weight:

| object | name | labels (beyond the stage's) |
|---|---|---|
| Deployment per variant | `pool_object_name` ``(<base>, <variant>)``: ``<base>-<variant>`` | ``rlscale.io/variant`` |
| Service per variant | the same name, selecting the same pods | ``rlscale.io/variant`` |
| HTTPRoute | ``<base>`` | (the stage's) |

``<base>`` is the stage's Deployment name (``kubernetes.deployments``, else ``<pipeline>-<stage>``). A pooled
stage is never looked up by label: its names are fixed, so its Role rules always carry ``resourceNames``. A pool's
replicas are its Deployment's ``spec.replicas`` (0: the pool is unused), its share its backendRef's integer
``weight`` over the weights of the pools in force (`pool_weights`, `read_weights`).

With the spec's ``in_place_resize`` on, a cores-only change is made without a rollout (DESIGN.md section 8): each
pod of the Deployment is patched through the ``pods/resize`` subresource (`resize_patch`), and the Deployment keeps
its pod template (a template change would be a rollout: a new ReplicaSet replaces every pod). The cores the pods
were resized to are written to the Deployment's annotation ``rlscale.io/cores`` (`ANNOTATION_CORES`; metadata, not
the template, so nothing rolls out), which `read_stage` reads as the stage's cores. Pods the ReplicaSet creates
later (a scale-up, a replaced pod) start from the template's CPU, and the sidecar resizes them too
(`resize_drift`). Any template patch (a rollout) writes the cores into the template and removes the annotation.

CPU quantities are read exactly (``1500m``, ``1.5``, ``2``, ``2k``, ``1e0``...): the cores are the request (the
limit when there is no request). A stage whose request is not one of its ``cores`` choices, or whose request and
limit differ, is *off-spec* (`read_stage`): its configuration reads as the smallest choice at or above the
request (the largest choice above them all), and the next apply writes that value to both request and limit.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from decimal import Decimal
from fractions import Fraction
from typing import Any

from rlscale.errors import RlscaleError
from rlscale.spec import KubeSpec, PipelineSpec, StageSpec
from rlscale.types import ConfigError, PipelineConfig, StageConfig, VariantPool

LABEL_PIPELINE = "rlscale.io/pipeline"
LABEL_STAGE = "rlscale.io/stage"
LABEL_VARIANT = "rlscale.io/variant"
ANNOTATION_CORES = "rlscale.io/cores"
"""Deployment annotation: the cores its pods were resized to in place (absent: the template's CPU request)."""
ANNOTATION_TARGET = "rlscale.io/target"
"""HTTPRoute annotation: the pools a switch of a pooled stage is moving to (JSON, `target_patch`), written when the
new pools are made and removed when the weights shift to them: while it is there, the stage's configuration in
force is that target (the configuration decided, as the simulator's state has it), not the pools still serving."""
GATEWAY_GROUP = "gateway.networking.k8s.io"
GATEWAY_VERSION = "v1"
HTTPROUTES = "httproutes"
WEIGHT_TOTAL = 1000
"""The sum of a pooled stage's backendRef weights (`pool_weights`): shares are written to 1/1000."""
MODEL_PORT = 8080
"""The model server's port a pool's Service forwards to (and its HTTPRoute backendRefs name), by default."""
SYSTEM_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")
"""Namespaces of the cluster itself: the sidecar acts there (and ``manifests`` renders a Role there) only when
explicitly allowed (``--allow-system-namespace``)."""


class DeploymentError(RlscaleError):
    """A stage's Deployment does not describe a configuration the spec allows (a permanent error)."""


_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?)$")
_SUFFIX = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 1000),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    **{s: Fraction(1024**i) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"), start=1)},
}


def parse_quantity(quantity: str | int | float) -> Fraction:
    """A Kubernetes resource quantity, exactly: ``500m`` -> 1/2, ``1.5`` -> 3/2, ``2k`` -> 2000, ``1Ki`` -> 1024,
    ``15e-1`` -> 3/2.

    Raises:
        DeploymentError: not a quantity.
    """
    text = str(quantity).strip()
    found = _QUANTITY.match(text) if len(text) <= 64 else None
    if found is not None and found.group(2) and abs(int(found.group(2)[1:])) > 30:
        found = None  # no CPU or memory figure needs it; 1e999999999 must not take the sidecar's time
    if found is None:
        raise DeploymentError(f"cannot read the quantity {text!r} (e.g. 2, 1.5, 500m)")
    number, exponent, suffix = found.groups()
    value = Fraction(Decimal(number))
    return value * Fraction(10) ** int(exponent[1:]) if exponent else value * _SUFFIX[suffix or ""]


def cpu_cores(quantity: str | int | float | None) -> Fraction | None:
    """A Kubernetes CPU quantity (``2``, ``1.5``, ``500m``) in cores, exactly; None if absent."""
    return None if quantity is None else parse_quantity(quantity)


def _cores_text(cores: Fraction) -> str:
    return str(int(cores)) if cores.denominator == 1 else f"{float(cores):g}"


def _container_label(deployment: dict[str, Any], kube: KubeSpec) -> str:
    """``container 'proxy' of Deployment ns/name (the first; ...)``: which container was read, and the setting that
    picks another."""
    meta = deployment.get("metadata", {})
    name = f"{meta['namespace']}/{meta.get('name', '?')}" if meta.get("namespace") else meta.get("name", "?")
    _, container = serving_container(deployment, kube)
    which = (
        "named by kubernetes.container"
        if kube.container is not None
        else "the first one; if the model server is another, name it in kubernetes.container"
    )
    return f"container {container.get('name', '?')!r} of Deployment {name} ({which})"


def serving_container(deployment: dict[str, Any], kube: KubeSpec) -> tuple[int, dict[str, Any]]:
    """(index, container) of the container that serves the model, in a Deployment's pod template or a pod."""
    name = deployment.get("metadata", {}).get("name", "?")
    spec = deployment.get("spec") or {}
    what = "Deployment" if "template" in spec else "pod"
    containers = (spec.get("template", {}).get("spec") or {} if what == "Deployment" else spec).get("containers") or []
    if not containers:
        raise DeploymentError(f"{what} {name} has no containers")
    if kube.container is None:
        return 0, containers[0]
    for i, c in enumerate(containers):
        if c.get("name") == kube.container:
            return i, c
    names = ", ".join(repr(c.get("name")) for c in containers)
    raise DeploymentError(
        f"{what} {name} has no container {kube.container!r} (kubernetes.container); its containers: {names}"
    )


def _env(container: dict[str, Any], var: str) -> tuple[int | None, str | None]:
    for j, e in enumerate(container.get("env") or []):
        if e.get("name") == var:
            return j, e.get("value")
    return None, None


def read_stage(deployment: dict[str, Any], kube: KubeSpec, stage: StageSpec) -> tuple[StageConfig, str | None]:
    """The configuration a stage Deployment asks for (``spec``, not what is running yet), and why the Deployment
    is off-spec (None when it is not): its CPU request is not one of the stage's ``cores`` choices, or its request
    and limit differ. An off-spec stage reads as the smallest choice at or above its request (the largest choice
    when the request is above them all): the value the next apply writes.

    Raises:
        DeploymentError: the env vars or CPU request are missing or name something the spec does not allow.
    """
    name = deployment.get("metadata", {}).get("name", "?")
    _, container = serving_container(deployment, kube)
    _, variant = _env(container, kube.variant_env)
    if variant is None:
        raise DeploymentError(
            f"{_container_label(deployment, kube)} has no env var {kube.variant_env} (kubernetes.variant_env: the "
            "env var that names the model variant)"
        )
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
        raise DeploymentError(
            f"{_container_label(deployment, kube)}: env var {kube.batch_env} (kubernetes.batch_env) must be a "
            f"positive integer, got {batch_text!r}"
        )
    resources = container.get("resources") or {}
    try:
        request = cpu_cores((resources.get("requests") or {}).get("cpu"))
        limit = cpu_cores((resources.get("limits") or {}).get("cpu"))
    except DeploymentError as exc:
        raise DeploymentError(f"Deployment {name}: CPU: {exc}") from None
    cores = request if request is not None else limit
    if cores is None:
        raise DeploymentError(f"{_container_label(deployment, kube)} has no CPU request (resources.requests.cpu)")
    choices = sorted(stage.cores)
    problems = []
    if cores not in choices:
        allowed = ", ".join(map(str, choices))
        problems.append(f"CPU request {_cores_text(cores)} is not one of stage {stage.name}'s cores ({allowed})")
    if request is not None and limit is not None and request != limit:
        problems.append(f"CPU request {_cores_text(request)} differs from its limit {_cores_text(limit)}")
    chosen = next((c for c in choices if c >= cores), choices[-1])
    annotated = (deployment.get("metadata", {}).get("annotations") or {}).get(ANNOTATION_CORES)
    if annotated is not None:
        try:
            resized = cpu_cores(annotated)
        except DeploymentError:
            resized = None
        if resized in choices:
            chosen = resized
        else:
            problems.append(
                f"annotation {ANNOTATION_CORES}={annotated!r} (cores resized in place) is not one of stage "
                f"{stage.name}'s cores"
            )
    replicas = deployment.get("spec", {}).get("replicas")
    config = StageConfig.one(variant, batch, int(replicas if replicas is not None else 1), int(chosen))
    reason = None
    if problems:
        reason = (
            f"Deployment {name} is off-spec: {'; '.join(problems)}; read as {chosen} cores, which the next apply "
            "writes to both (a rollout)"
        )
    return config, reason


def read_stage_config(deployment: dict[str, Any], kube: KubeSpec, stage: StageSpec) -> StageConfig:
    """The configuration a stage Deployment asks for (`read_stage`, without the off-spec reason).

    Raises:
        DeploymentError: the env vars or CPU request are missing or name something the spec does not allow.
    """
    return read_stage(deployment, kube, stage)[0]


def starting_config(spec: PipelineSpec) -> PipelineConfig:
    """The spec's starting configuration: every stage at its least accurate (cheapest) variant, smallest batch,
    fewest cores and fewest replicas (what ``sidecar --once --dry-run`` assumes when no API server answers)."""
    return PipelineConfig(
        tuple(
            StageConfig.one(
                st.cheapest_variant,
                min(st.batch_sizes),
                st.min_replicas,
                min(st.cores),
            )
            for st in spec.stages
        )
    )


def ready_replicas(deployment: dict[str, Any]) -> int | None:
    """Replicas Kubernetes reports ready (``status.readyReplicas``); None if the status has none yet."""
    status = deployment.get("status") or {}
    value = status.get("readyReplicas")
    return int(value) if value is not None else None


def template_patch(
    deployment: dict[str, Any], kube: KubeSpec, new: StageConfig | VariantPool, batch_timeout_s: float | None = None
) -> list[dict[str, Any]]:
    """A JSON patch (RFC 6902) that sets variant, batch and cores of the serving container, and the replicas; and
    the batch timeout env var (``kubernetes.batch_timeout_env``) to ``batch_timeout_s`` when given.

    JSON patch addresses the container and env entries by index, so it means the same to every API server
    (strategic merge is Kubernetes-only; JSON merge would replace the whole container list). Writing back the
    ``resourceVersion`` that was read makes the API server refuse the patch with 409 Conflict if the Deployment
    changed since (optimistic locking), so stale indexes never overwrite someone else's change. The cores go into
    the template, so an in-place resize's annotation (`ANNOTATION_CORES`) is removed: the template says it again.
    """
    i, container = serving_container(deployment, kube)
    base = f"/spec/template/spec/containers/{i}"
    ops: list[dict[str, Any]] = []
    meta = deployment.get("metadata", {})
    version = meta.get("resourceVersion")
    if version is not None:
        ops.append({"op": "replace", "path": "/metadata/resourceVersion", "value": version})
    if ANNOTATION_CORES in (meta.get("annotations") or {}):
        ops.append({"op": "remove", "path": f"/metadata/annotations/{_pointer(ANNOTATION_CORES)}"})
    has_env = bool(container.get("env"))
    env = [(kube.variant_env, new.variant), (kube.batch_env, str(new.batch))]
    if batch_timeout_s is not None:
        env.append((kube.batch_timeout_env, f"{batch_timeout_s:g}"))
    for var, value in env:
        j, _ = _env(container, var)
        if j is None:
            if not has_env:  # create the list once; later entries append to it
                ops.append({"op": "add", "path": f"{base}/env", "value": []})
                has_env = True
            ops.append({"op": "add", "path": f"{base}/env/-", "value": {"name": var, "value": value}})
        else:
            # "add" on an existing member replaces it ("replace" would fail where the member is missing)
            ops.append({"op": "add", "path": f"{base}/env/{j}/value", "value": value})
    ops += _cpu_ops(base, container, new.cores)
    ops.append({"op": "add", "path": "/spec/replicas", "value": new.replicas})
    return ops


def _pointer(key: str) -> str:
    """A JSON pointer segment (RFC 6901): ``rlscale.io/cores`` -> ``rlscale.io~1cores``."""
    return key.replace("~", "~0").replace("/", "~1")


def _cpu_ops(base: str, container: dict[str, Any], cores: int) -> list[dict[str, Any]]:
    """JSON patch operations setting the CPU request and limit of the container at ``base`` to ``cores``."""
    cpu = str(cores)
    if not container.get("resources"):
        return [{"op": "add", "path": f"{base}/resources", "value": {"requests": {"cpu": cpu}, "limits": {"cpu": cpu}}}]
    ops = []
    for kind in ("requests", "limits"):
        if (container["resources"].get(kind)) is None:
            ops.append({"op": "add", "path": f"{base}/resources/{kind}", "value": {"cpu": cpu}})
        else:
            ops.append({"op": "add", "path": f"{base}/resources/{kind}/cpu", "value": cpu})
    return ops


# ------------------------------------------------------------------------------------------- in-place resize


def template_cores(deployment: dict[str, Any], kube: KubeSpec) -> Fraction | None:
    """The CPU request (else limit) of the serving container in a Deployment's pod template or in a pod (its
    desired resources, ``spec``); None when it has neither or cannot be read."""
    try:
        _, container = serving_container(deployment, kube)
        resources = container.get("resources") or {}
        request = cpu_cores((resources.get("requests") or {}).get("cpu"))
        return request if request is not None else cpu_cores((resources.get("limits") or {}).get("cpu"))
    except DeploymentError:
        return None


def resized_cores(deployment: dict[str, Any]) -> Fraction | None:
    """The cores a Deployment's pods were resized to in place (`ANNOTATION_CORES`), None when not annotated or
    unreadable."""
    value = (deployment.get("metadata", {}).get("annotations") or {}).get(ANNOTATION_CORES)
    try:
        return None if value is None else cpu_cores(value)
    except DeploymentError:
        return None


def pod_selector(deployment: dict[str, Any]) -> dict[str, str]:
    """The labels a Deployment selects its pods by (``spec.selector.matchLabels``)."""
    return dict(((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {})


def selected_pods(deployment: dict[str, Any], pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Of ``pods``, those the Deployment selects (every ``matchLabels`` label, checked here again since not every
    API server or emulator implements every selector) that are not being deleted, by name."""
    want = pod_selector(deployment).items()
    mine = [
        p
        for p in pods
        if want <= ((p.get("metadata") or {}).get("labels") or {}).items()
        and not (p.get("metadata") or {}).get("deletionTimestamp")
    ]
    return sorted(mine, key=lambda p: p.get("metadata", {}).get("name", ""))


def resize_patch(pod: dict[str, Any], kube: KubeSpec, cores: int) -> list[dict[str, Any]]:
    """A JSON patch for a pod's ``resize`` subresource: the serving container's CPU request and limit to ``cores``
    (the only fields the subresource lets change, with memory; memory is left alone)."""
    i, container = serving_container(pod, kube)
    return _cpu_ops(f"/spec/containers/{i}", container, cores)


def resized_patch(deployment: dict[str, Any], kube: KubeSpec, cores: int) -> list[dict[str, Any]]:
    """A JSON patch recording on the Deployment that its pods run ``cores`` after an in-place resize
    (`ANNOTATION_CORES`), with the ``resourceVersion`` read; when ``cores`` is what the template says, the
    annotation is removed instead. Empty when there is nothing to change. Metadata only: no rollout."""
    meta = deployment.get("metadata", {})
    annotations = meta.get("annotations") or {}
    ops: list[dict[str, Any]] = []
    if template_cores(deployment, kube) == cores:
        if ANNOTATION_CORES in annotations:
            ops.append({"op": "remove", "path": f"/metadata/annotations/{_pointer(ANNOTATION_CORES)}"})
    elif annotations.get(ANNOTATION_CORES) != str(cores):
        if not meta.get("annotations"):
            ops.append({"op": "add", "path": "/metadata/annotations", "value": {}})
        ops.append({"op": "add", "path": f"/metadata/annotations/{_pointer(ANNOTATION_CORES)}", "value": str(cores)})
    if ops and meta.get("resourceVersion") is not None:
        ops.insert(0, {"op": "replace", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]})
    return ops


def resize_drift(deployment: dict[str, Any], kube: KubeSpec, pods: list[dict[str, Any]]) -> list[str]:
    """Names of the Deployment's pods (of ``pods``) whose CPU request is not the cores it was resized to in place
    (pods the ReplicaSet made from the template since); empty when the Deployment is not resized in place."""
    resized = resized_cores(deployment)
    if resized is None or resized == template_cores(deployment, kube):
        return []
    return [p["metadata"]["name"] for p in selected_pods(deployment, pods) if template_cores(p, kube) != resized]


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
                                {"name": kube.batch_timeout_env, "value": f"{spec.batch_timeout_s:g}"},
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
    ``deployments/scale`` ``patch`` changes only its replicas. When every stage's Deployments have known names
    (named in the spec's ``kubernetes.deployments``, or a pooled stage's, `pool_names`), the actuator never lists,
    and both rules carry ``resourceNames`` with exactly those names. Otherwise ``list`` finds the unnamed stages by
    label, and since Kubernetes cannot restrict ``list`` (or the names of Deployments found at run time) by
    ``resourceNames``, the rules name none. With pooled stages (``max_pools > 1``) a third rule grants ``get`` and
    ``patch`` on exactly their HTTPRoutes (`stage_base_name`), whose backendRef weights hold the shares. With the
    spec's ``in_place_resize`` on, ``list`` on pods (a Deployment's pods, by its selector) and ``patch`` on
    ``pods/resize``, without ``resourceNames`` (pod names are made at run time); never ``get``, ``update`` or
    ``delete`` on pods, which the sidecar does not use. Off, nothing on pods.
    """
    named = spec.kubernetes.deployments
    pooled = [st for st in spec.stages if st.max_pools > 1]
    if all(st.name in named or st.max_pools > 1 for st in spec.stages):
        names: list[str] = []
        for st in spec.stages:
            names += list(pool_names(spec, st).values()) if st.max_pools > 1 else [named[st.name]]
        names = list(dict.fromkeys(names))
        rules = [
            {"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": names, "verbs": ["get", "patch"]},
            {
                "apiGroups": ["apps"],
                "resources": ["deployments/scale"],
                "resourceNames": list(names),
                "verbs": ["patch"],
            },
        ]
    else:
        rules = [
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "patch"]},
            {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["patch"]},
        ]
    if pooled:
        routes = list(dict.fromkeys(stage_base_name(spec, st) for st in pooled))
        route_rule = {"apiGroups": [GATEWAY_GROUP], "resources": [HTTPROUTES], "resourceNames": routes}
        rules.append({**route_rule, "verbs": ["get", "patch"]})
    if spec.in_place_resize:
        rules.append({"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]})
        rules.append({"apiGroups": [""], "resources": ["pods/resize"], "verbs": ["patch"]})
    return rules


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


# ------------------------------------------------------------------------------------------- variant pools

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


def stage_base_name(spec: PipelineSpec, stage: StageSpec) -> str:
    """The name a stage's objects start from: its Deployment named in ``kubernetes.deployments``, else
    ``<pipeline>-<stage>`` (what `stage_deployment` names it). A pooled stage's HTTPRoute has this name."""
    return spec.kubernetes.deployments.get(stage.name) or f"{spec.name}-{stage.name}"


def pool_object_name(base: str, variant: str) -> str:
    """The Deployment and Service of one pool: ``<base>-<variant>`` when that is a DNS label (a Service name:
    lowercase letters, digits and '-', starting with a letter, at most 63 characters); else the variant made
    lowercase with runs of other characters as '-', the whole cut to 54 characters, and 8 hex digits of the
    variant's SHA-256 added, so that two variants never share a name (``BERT_base`` and ``bert-base`` do not)."""
    name = f"{base}-{variant}"
    if _DNS1035.match(name) and len(name) <= 63:
        return name
    slug = re.sub(r"[^a-z0-9]+", "-", variant.lower()).strip("-")
    digest = hashlib.sha256(variant.encode()).hexdigest()[:8]
    return f"{f'{base}-{slug}'[:54].rstrip('-')}-{digest}"


def variant_label(variant: str) -> str:
    """The ``rlscale.io/variant`` label value of a pool: the variant itself when it is a label value, else its
    object-name suffix (`pool_object_name` with an empty base)."""
    return variant if _LABEL_VALUE.match(variant) else pool_object_name("v", variant)[2:]


def pool_names(spec: PipelineSpec, stage: StageSpec) -> dict[str, str]:
    """Variant -> the name of its pool's Deployment and Service, for every variant of a pooled stage."""
    base = stage_base_name(spec, stage)
    return {v: pool_object_name(base, v) for v in stage.variant_names}


def pool_weights(config: StageConfig, total: int = WEIGHT_TOTAL) -> dict[str, int]:
    """Variant -> integer backendRef weight of each pool of ``config``, summing to exactly ``total``.

    Largest remainder (Hamilton's method): each pool gets ``floor(share * total)``, and the units left go one each
    to the pools with the largest fractional parts (the earlier pool on a tie). A pool in the configuration has
    share > 0 and so must stay in force: one rounded to 0 gets 1, taken from the largest weight.
    """
    pools = config.pools
    exact = [p.share * total for p in pools]
    weights = [math.floor(x) for x in exact]
    order = sorted(range(len(pools)), key=lambda i: (-(exact[i] - weights[i]), i))
    for i in order[: total - sum(weights)]:
        weights[i] += 1
    for i, w in enumerate(weights):
        if w == 0:
            weights[i] = 1
            weights[max(range(len(weights)), key=lambda j: weights[j])] -= 1
    return {p.variant: w for p, w in zip(pools, weights, strict=True)}


def route_rule_refs(route: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(JSON pointer, backendRef) of every backendRef of an HTTPRoute, in order."""
    refs = []
    for r, rule in enumerate((route.get("spec") or {}).get("rules") or []):
        for b, ref in enumerate(rule.get("backendRefs") or []):
            refs.append((f"/spec/rules/{r}/backendRefs/{b}", ref))
    return refs


def read_weights(route: dict[str, Any], names: dict[str, str]) -> dict[str, int]:
    """Variant -> the weight the HTTPRoute gives its pool's Service (``names``: variant -> Service), summed over
    the route's rules; 0 for a Service it does not name. A backendRef without a weight has weight 1 (the Gateway
    API's default).

    Raises:
        DeploymentError: a weight is not a non-negative integer.
    """
    by_service = {n: v for v, n in names.items()}
    weights = dict.fromkeys(names, 0)
    route_name = route.get("metadata", {}).get("name", "?")
    for _, ref in route_rule_refs(route):
        variant = by_service.get(ref.get("name"))
        if variant is None or ref.get("kind", "Service") != "Service":
            continue
        weight = ref.get("weight", 1)
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
            raise DeploymentError(f"HTTPRoute {route_name}: backendRef {ref.get('name')} has weight {weight!r}")
        weights[variant] += weight
    return weights


def weights_patch(route: dict[str, Any], names: dict[str, str], weights: dict[str, int]) -> list[dict[str, Any]]:
    """A JSON patch setting the weight of every backendRef that names a pool's Service (0 for a variant not in
    ``weights``), with the ``resourceVersion`` read (a 409 if the route changed since, as `template_patch`)."""
    by_service = {n: v for v, n in names.items()}
    ops: list[dict[str, Any]] = []
    version = route.get("metadata", {}).get("resourceVersion")
    if version is not None:
        ops.append({"op": "replace", "path": "/metadata/resourceVersion", "value": version})
    for path, ref in route_rule_refs(route):
        variant = by_service.get(ref.get("name"))
        if variant is not None:
            ops.append({"op": "add", "path": f"{path}/weight", "value": weights.get(variant, 0)})
    return ops


def target_patch(route: dict[str, Any], target: StageConfig | None) -> list[dict[str, Any]]:
    """A JSON patch recording on an HTTPRoute the pools a switch moves to (`ANNOTATION_TARGET`: variant, batch,
    cores, replicas and exact share of each, in order), or removing the record (``target`` None); empty when there
    is nothing to change. With the ``resourceVersion`` read, as `weights_patch`."""
    meta = route.get("metadata", {})
    annotations = meta.get("annotations") or {}
    ops: list[dict[str, Any]] = []
    if target is None:
        if ANNOTATION_TARGET in annotations:
            ops.append({"op": "remove", "path": f"/metadata/annotations/{_pointer(ANNOTATION_TARGET)}"})
    else:
        value = json.dumps([[p.variant, p.batch, p.cores, p.replicas, p.share] for p in target.pools])
        if annotations.get(ANNOTATION_TARGET) != value:
            if not meta.get("annotations"):
                ops.append({"op": "add", "path": "/metadata/annotations", "value": {}})
            ops.append({"op": "add", "path": f"/metadata/annotations/{_pointer(ANNOTATION_TARGET)}", "value": value})
    if ops and meta.get("resourceVersion") is not None:
        ops.insert(0, {"op": "replace", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]})
    return ops


def read_target(route: dict[str, Any], stage: StageSpec) -> StageConfig | None:
    """The pools a switch moves to, as `target_patch` recorded them on the route; None when there is no record or
    it does not describe pools this stage allows (a record edited by hand is ignored, never acted on)."""
    value = (route.get("metadata", {}).get("annotations") or {}).get(ANNOTATION_TARGET)
    if not isinstance(value, str) or len(value) > 10_000:
        return None
    try:
        rows = json.loads(value)
        pools = []
        for variant, batch, cores, replicas, share in rows:
            if (
                variant not in stage.variant_names
                or batch not in stage.batch_sizes
                or cores not in stage.cores
                or any(isinstance(x, bool) or not isinstance(x, int) for x in (batch, cores, replicas))
                or not stage.min_replicas <= replicas <= stage.max_replicas
                or isinstance(share, bool)
                or not isinstance(share, int | float)
            ):
                return None
            pools.append(VariantPool(variant, batch, replicas, cores, share=float(share)))
        if not pools or len({p.variant for p in pools}) != len(pools):
            return None
        return StageConfig.of_pools(pools)
    except (ValueError, TypeError, RecursionError, ConfigError):
        return None


def pool_deployment(
    spec: PipelineSpec,
    stage: StageSpec,
    config: VariantPool,
    *,
    namespace: str = "default",
    image: str = "registry.example/model-server:latest",
    port: int = MODEL_PORT,
) -> dict[str, Any]:
    """The Deployment of one pool (``config.variant``, its batch, cores and replicas) of a pooled stage: the stage's
    Deployment (`stage_deployment`) named by `pool_object_name`, labelled and selected by its variant too (two
    pools' Deployments must never select each other's pods), serving on ``port``."""
    name = pool_names(spec, stage)[config.variant]
    dep = stage_deployment(
        spec, stage, StageConfig((config.with_(share=1.0),)), name=name, namespace=namespace, image=image
    )
    labels = {**dep["metadata"]["labels"], LABEL_VARIANT: variant_label(config.variant)}
    dep["metadata"]["labels"] = dict(labels)
    dep["spec"]["selector"] = {"matchLabels": dict(labels)}
    dep["spec"]["template"]["metadata"]["labels"] = dict(labels)
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    container["ports"] = [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    return dep


def pool_service(
    spec: PipelineSpec, stage: StageSpec, variant: str, *, namespace: str = "default", port: int = MODEL_PORT
) -> dict[str, Any]:
    """The Service in front of one pool's pods (the HTTPRoute's backendRef for it)."""
    labels = {LABEL_PIPELINE: spec.name, LABEL_STAGE: stage.name, LABEL_VARIANT: variant_label(variant)}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": pool_names(spec, stage)[variant], "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "selector": dict(labels),
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def stage_route(
    spec: PipelineSpec,
    stage: StageSpec,
    config: StageConfig,
    *,
    namespace: str = "default",
    gateway: str = "rlscale-gateway",
    gateway_namespace: str | None = None,
    port: int = MODEL_PORT,
) -> dict[str, Any]:
    """A pooled stage's ``HTTPRoute`` (``gateway.networking.k8s.io/v1``): attached to the Gateway ``gateway`` (in
    ``gateway_namespace``, else the route's), one rule whose backendRefs are every variant's Service, weighted by
    ``config``'s shares (`pool_weights`; 0 for a variant not in it)."""
    weights = pool_weights(config)
    parent: dict[str, Any] = {"group": GATEWAY_GROUP, "kind": "Gateway", "name": gateway}
    if gateway_namespace and gateway_namespace != namespace:
        parent["namespace"] = gateway_namespace
    return {
        "apiVersion": f"{GATEWAY_GROUP}/{GATEWAY_VERSION}",
        "kind": "HTTPRoute",
        "metadata": {
            "name": stage_base_name(spec, stage),
            "namespace": namespace,
            "labels": {LABEL_PIPELINE: spec.name, LABEL_STAGE: stage.name},
        },
        "spec": {
            "parentRefs": [parent],
            "rules": [
                {
                    "backendRefs": [
                        {"kind": "Service", "name": name, "port": port, "weight": weights.get(v, 0)}
                        for v, name in pool_names(spec, stage).items()
                    ]
                }
            ],
        },
    }


def pooled_stage_objects(
    spec: PipelineSpec,
    stage: StageSpec,
    config: StageConfig,
    *,
    namespace: str = "default",
    image: str = "registry.example/model-server:latest",
    port: int = MODEL_PORT,
    gateway: str = "rlscale-gateway",
    gateway_namespace: str | None = None,
) -> list[dict[str, Any]]:
    """Every object of a pooled stage in ``config``: one Deployment per variant of the stage (a variant not in
    ``config`` with 0 replicas, its smallest batch and fewest cores), one Service per variant, then the
    HTTPRoute. Nothing is created later: the sidecar only scales and patches these."""
    pools = {p.variant: p for p in config.pools}
    idle = VariantPool(stage.variant_names[0], min(stage.batch_sizes), 0, min(stage.cores))
    deployments = [
        pool_deployment(spec, stage, pools.get(v) or idle.with_(variant=v), namespace=namespace, image=image, port=port)
        for v in stage.variant_names
    ]
    services = [pool_service(spec, stage, v, namespace=namespace, port=port) for v in stage.variant_names]
    route = stage_route(
        spec, stage, config, namespace=namespace, gateway=gateway, gateway_namespace=gateway_namespace, port=port
    )
    return [*deployments, *services, route]
