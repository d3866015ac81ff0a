"""Kubernetes manifests that run the rlscale sidecar for one pipeline (what ``rlscale manifests`` prints).

Five objects, in apply order: a ServiceAccount, a Role with exactly `rlscale.kube.objects.rbac_rules`, a
RoleBinding, a ConfigMap holding the spec (and any profile CSV the image does not bundle) and the sidecar's
Deployment. The Role and RoleBinding live where the stage Deployments are (the spec's ``kubernetes.namespace``,
else ``namespace``), and the sidecar's ``--namespace`` names that namespace; everything else lives in
``namespace``.

On request, before the Deployment: a ConfigMap with a trained agent (``binaryData``) and one with an ``ipa-tuned``
tuning, both projected into the sidecar's read-only ``/etc/rlscale`` next to the spec; a Secret with the
Prometheus basic-auth credentials of a ``http://user:password@host`` URL (read by the sidecar from env vars, never
written into its args). After it: a Service and ServiceMonitor, or a PodMonitor, for the Prometheus Operator, and
a NetworkPolicy that lets the sidecar reach only the API server, DNS and Prometheus.

A spec with pooled stages (``max_pools > 1``) gets, last, every object of those stages
(`rlscale.kube.objects.pooled_stage_objects`), in the stage namespace: one model-server Deployment per variant
(the cheapest variant with the stage's ``min_replicas``, every other with 0), one Service per variant and the
stage's HTTPRoute, attached to the Gateway ``gateway`` (``[NAMESPACE/]NAME``, default `DEFAULT_GATEWAY` in the
stage namespace). The sidecar never creates or deletes them; it scales them and patches the route's weights. A
spec without pooled stages renders exactly what it did before pools existed.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import yaml

from rlscale.errors import ProfileError, RlscaleError, SpecError
from rlscale.inputs import MAX_PROFILE_BYTES, MAX_SPEC_BYTES, load_yaml, read_text_limited, special_file_kind
from rlscale.kube.objects import (
    MODEL_PORT,
    pooled_stage_objects,
    rbac_rules,
    starting_config,
    system_namespace_problem,
)
from rlscale.kube.prometheus import redact_url
from rlscale.profiles import runs_path
from rlscale.spec import PipelineSpec, data_dir, is_k8s_name
from rlscale.urls import check_http_url

MOUNT_DIR = "/etc/rlscale"
SPEC_KEY = "spec.yaml"
RUN_AS_UID = 10001
"""The sidecar's non-root uid and gid; the Dockerfile creates its user with the same ids."""
GRACE_MARGIN_S = 30
"""Seconds of SIGTERM grace on top of one interval, so the sidecar can finish the step it is in."""
CONFIGMAP_MAX_BYTES = 1024 * 1024
SHIPPED_MAX_BYTES = 900 * 1024
"""The largest agent or tuning file shipped in a ConfigMap: its 1 MiB limit, less room for the base64 growth the
API server's 1.5 MiB request limit must also take."""
AGENT_PATH = f"{MOUNT_DIR}/agent/actor.npz"
TUNING_PATH = f"{MOUNT_DIR}/tuning/tuning.json"
BAKED_DIR = "/opt/rlscale"
"""Where the documented alternative for a file too large for a ConfigMap mounts it (outside the read-only
/etc/rlscale volume: a mount point inside it could not be created)."""
PROMETHEUS_USERNAME_ENV = "RLSCALE_PROMETHEUS_USERNAME"
PROMETHEUS_PASSWORD_ENV = "RLSCALE_PROMETHEUS_PASSWORD"
"""Env vars the sidecar reads the Prometheus basic-auth credentials from (set from the Secret `render_manifests`
writes for a URL with credentials)."""
MONITORING_API = "monitoring.coreos.com/v1"
DEFAULT_GATEWAY = "rlscale-gateway"
"""The Gateway a pooled stage's HTTPRoute attaches to unless ``--gateway`` names another."""
MODEL_IMAGE = "registry.example/model-server:latest"
"""A placeholder for the model server's image of a pooled stage's Deployments (``--model-image``)."""
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
    which the sidecar resolves next to ``spec.yaml``, with its run times (``NAME.runs.csv``,
    `rlscale.profiles.runs_path`) where it keeps them. Without such stages the spec text is copied unchanged.

    Raises:
        RlscaleError: the spec file cannot be read, two different profiles share a basename, or a basename
            cannot be a ConfigMap key.
    """
    text = read_text_limited(spec.source, MAX_SPEC_BYTES, SpecError, "spec")
    raw = load_yaml(text, str(spec.source), SpecError)
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
        files[key] = read_text_limited(path, MAX_PROFILE_BYTES, ProfileError, "profile")
        runs = runs_path(path)  # a calibrated profile's run times: the planner's service-time variability
        if runs.is_file():
            files[runs.name] = read_text_limited(runs, MAX_PROFILE_BYTES, ProfileError, "profile run times")
    size_bytes = sum(len(v.encode("utf-8")) for v in files.values())
    if size_bytes > CONFIGMAP_MAX_BYTES:
        raise RlscaleError(f"spec and profiles take {size_bytes} bytes; a ConfigMap holds at most 1 MiB")
    return files


def read_shipped_file(path: str | Path, flag: str, mount: str) -> bytes:
    """The bytes of a file ``manifests`` ships in a ConfigMap (an agent, a tuning), at most `SHIPPED_MAX_BYTES`.

    Args:
        path: the file.
        flag: the flag that named it, for messages (``--agent``).
        mount: where the sidecar reads it in the pod (for the image-volume alternative the message points at).

    Raises:
        RlscaleError: no such file, a folder, unreadable, or too large for a ConfigMap.
    """
    path = Path(path)
    if path.is_dir():
        raise RlscaleError(f"{flag} {path}: is a folder; pass a file")
    try:
        kind = special_file_kind(path)  # a FIFO would block the read below, a device never end it
        if kind is not None:
            raise RlscaleError(f"{flag} {path}: is {kind}, not a regular file; pass a file")
        size = path.stat().st_size
        if size > SHIPPED_MAX_BYTES:
            raise RlscaleError(
                f"{flag} {path}: {size / 1024:.0f} KiB, more than a ConfigMap ships ({SHIPPED_MAX_BYTES // 1024} KiB); "
                f"bake it into an image, mount that as a read-only volume (an image volume, or an init container "
                f"copying it into an emptyDir) at {BAKED_DIR}/{Path(mount).parent.name} and run the sidecar with "
                f"{flag} {BAKED_DIR}/{Path(mount).parent.name}/{Path(mount).name}"
            )
        with open(path, "rb") as fh:
            data = fh.read(SHIPPED_MAX_BYTES + 1)
    except FileNotFoundError:
        raise RlscaleError(f"{flag} {path}: no such file") from None
    except OSError as exc:
        raise RlscaleError(f"{flag} {path}: cannot read it: {exc.strerror or exc}") from None
    if len(data) > SHIPPED_MAX_BYTES:  # grew since the stat, or a device that reports no size
        raise RlscaleError(f"{flag} {path}: more than {SHIPPED_MAX_BYTES // 1024} KiB; bake it into an image instead")
    return data


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """``url`` without its ``user:password@`` part, and the (decoded) credentials, or None when it has none.

    Raises:
        RlscaleError: the URL has a user but no password (basic auth needs both).
    """
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, sep, password = userinfo.partition(":")
    if not sep or not user:
        raise RlscaleError(
            f"Prometheus URL {redact_url(url)!r}: credentials need a user and a password (http://user:password@host)"
        )
    return urlunsplit(parts._replace(netloc=host)), (unquote(user), unquote(password))


def _prometheus_peer(url: str) -> tuple[int, str | None]:
    """The Prometheus port a NetworkPolicy must allow, and its namespace when the host is a Service name
    (``NAME.NAMESPACE.svc[.cluster.local]``), else None (any destination on that port)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    labels = (parts.hostname or "").split(".")
    namespace = labels[1] if len(labels) >= 3 and labels[2] == "svc" and is_k8s_name(labels[1]) else None
    return port, namespace


def network_policy(
    meta: dict[str, Any], labels: dict[str, str], metrics_port: int, prometheus_url: str, api_server_cidr: str | None
) -> dict[str, Any]:
    """A NetworkPolicy for the sidecar's pod: ingress only to its metrics port; egress only to DNS (53, UDP and
    TCP), the API server (443 and 6443, the Service's and the usual endpoint port; ``api_server_cidr`` when given)
    and Prometheus (its URL's port; in its namespace when the URL names a Service)."""
    prom_port, prom_namespace = _prometheus_peer(prometheus_url)
    api_rule: dict[str, Any] = {"ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}]}
    if api_server_cidr:
        api_rule = {"to": [{"ipBlock": {"cidr": api_server_cidr}}], **api_rule}
    prom_rule: dict[str, Any] = {"ports": [{"protocol": "TCP", "port": prom_port}]}
    if prom_namespace:
        selector = {"matchLabels": {"kubernetes.io/metadata.name": prom_namespace}}
        prom_rule = {"to": [{"namespaceSelector": selector}], **prom_rule}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta,
        "spec": {
            "podSelector": {"matchLabels": dict(labels)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"ports": [{"protocol": "TCP", "port": metrics_port}]}],
            "egress": [
                {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
                api_rule,
                prom_rule,
            ],
        },
    }


def _check_cidr(value: str) -> str:
    import ipaddress

    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise RlscaleError(f"API server CIDR {value!r} is not an IP network such as 10.0.0.1/32") from None


_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def _check_monitor_labels(labels: dict[str, str]) -> None:
    """Each key a Kubernetes label key (``[prefix/]name``: a DNS subdomain of at most 253 characters, one '/', a
    name of at most 63), each value a label value (empty, or at most 63 characters like a name)."""
    for key, value in labels.items():
        prefix, slash, name = key.rpartition("/")
        if not _LABEL_NAME.fullmatch(name) or (slash and not (_DNS_SUBDOMAIN.fullmatch(prefix) and len(prefix) <= 253)):
            raise RlscaleError(
                f"monitor label {key!r} is not a Kubernetes label key ([prefix/]name: an optional DNS subdomain and "
                "'/', then 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)"
            )
        if value and not _LABEL_NAME.fullmatch(value):
            raise RlscaleError(f"monitor label {key}={value!r}: the value is not a Kubernetes label value")


# a container image reference as the distribution/reference grammar writes it: [host[:port]/]path[:tag][@digest]
_IMAGE = re.compile(
    r"(?:(?:[A-Za-z0-9](?:[-A-Za-z0-9]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[-A-Za-z0-9]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])"
    r"(?::[0-9]+)?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?"
)
MAX_IMAGE_CHARS = 512


def _check_image(image: str, what: str) -> None:
    """A container image reference (``registry.example:5000/team/rlscale:1.0``, ``rlscale@sha256:...``): no spaces,
    line breaks or control characters, lowercase repository path."""
    if not image.strip():
        raise RlscaleError(f"{what} must not be empty")
    if len(image) > MAX_IMAGE_CHARS or not _IMAGE.fullmatch(image):
        raise RlscaleError(
            f"{what} {image[:200]!r} is not a container image reference ([registry[:port]/]path[:tag][@digest], "
            "e.g. registry.example/team/rlscale:1.0; lowercase path, no spaces or control characters)"
        )


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
    agent: bytes | None = None,
    tuning: bytes | None = None,
    service_monitor: bool = False,
    pod_monitor: bool = False,
    monitor_labels: dict[str, str] | None = None,
    network_policy_: bool = False,
    api_server_cidr: str | None = None,
    gateway: str | None = None,
    model_image: str | None = None,
    model_port: int | None = None,
) -> str:
    """The sidecar's manifests as multi-document YAML, ready for ``kubectl apply -f -``.

    Args:
        spec: the pipeline; its source file (and custom profiles) go into the ConfigMap.
        namespace: namespace of the sidecar (and of the stage Deployments unless the spec names one).
        image: the rlscale container image.
        prometheus_url: base URL of the Prometheus the sidecar reads the pipeline's metrics from; credentials in
            it (``http://user:password@host``) go into a Secret, never into the sidecar's args.
        policy: the policy the sidecar runs (``rlscale sidecar --policy``).
        interval_s: seconds between decisions (None: the spec's ``interval_s``).
        window_s: the sidecar's query window, two scrapes or more (None: the sidecar's default).
        dry_run: run the sidecar log-only (every change a server-side dry run).
        metrics_port: port of the sidecar's own ``/metrics`` endpoint.
        guard: the sidecar's ``--guard`` (None: the policy's default, `rlscale.control.guard_default`).
        allow_system_namespace: allow a Kubernetes system namespace (``kube-system``...) for the sidecar or the
            stage Deployments; the sidecar is then run with ``--allow-system-namespace`` too.
        agent: an actor file's bytes (checked by the caller), shipped in a ConfigMap; the sidecar runs with
            ``--agent`` `AGENT_PATH`.
        tuning: an ``ipa-tuned`` tuning file's bytes (JSON), shipped in a ConfigMap; the sidecar runs with
            ``--tuning`` `TUNING_PATH`.
        service_monitor: add a Service for the metrics port and a ServiceMonitor (Prometheus Operator) for it;
            the pod then loses its ``prometheus.io`` scrape annotations (one scrape, not two).
        pod_monitor: add a PodMonitor (Prometheus Operator); the same about annotations.
        monitor_labels: extra labels on the ServiceMonitor/PodMonitor, for the operator's monitor selector
            (kube-prometheus-stack selects ``release: <its release name>``).
        network_policy_: add a NetworkPolicy (`network_policy`).
        api_server_cidr: the API server's address range for the NetworkPolicy (None: any address, ports 443 and
            6443).
        gateway: ``[NAMESPACE/]NAME`` of the Gateway pooled stages' HTTPRoutes attach to (None:
            `DEFAULT_GATEWAY`, in the stage namespace).
        model_image: the model server's image in pooled stages' Deployments (None: `MODEL_IMAGE`).
        model_port: the model server's port, for pooled stages' Services and routes (None: 8080).

    Raises:
        RlscaleError: an argument or the pipeline name cannot be used in a manifest, a namespace is a system
            namespace that is not allowed, or a shipped file is too large.
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
    _check_image(image, "image")
    if not policy.strip():
        raise RlscaleError("policy must not be empty")
    prometheus_url = check_http_url(
        prometheus_url,
        "Prometheus URL",
        "; a token belongs in a Secret: mount it into the sidecar and pass --prometheus-token-file",
    )
    for what, blob in (("agent", agent), ("tuning", tuning)):
        if blob is not None and len(blob) > SHIPPED_MAX_BYTES:
            raise RlscaleError(
                f"the {what} takes {len(blob)} bytes; a ConfigMap ships at most {SHIPPED_MAX_BYTES // 1024} KiB: "
                "bake it into an image and mount it as a volume"
            )
    if service_monitor and pod_monitor:
        raise RlscaleError("choose a ServiceMonitor or a PodMonitor, not both (Prometheus would scrape twice)")
    monitor_labels = dict(monitor_labels or {})
    _check_monitor_labels(monitor_labels)
    if api_server_cidr is not None:
        api_server_cidr = _check_cidr(api_server_cidr)
    given = [f for f, v in (("gateway", gateway), ("model image", model_image), ("model port", model_port)) if v]
    if given and not spec.pooled:
        raise RlscaleError(
            f"the {', '.join(given)} are for pooled stages (max_pools > 1); pipeline {spec.name} has none"
        )
    gateway_namespace, _, gateway_name = (gateway or DEFAULT_GATEWAY).rpartition("/")
    _check_label(gateway_name, "gateway name")
    if gateway_namespace:
        _check_label(gateway_namespace, "gateway namespace")
    port = MODEL_PORT if model_port is None else model_port
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise RlscaleError(f"model port must be an integer in 1..65535, got {port!r}")
    if model_image is not None:
        _check_image(model_image, "model image")
    prometheus_url, credentials = split_credentials(prometheus_url)

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
    if agent is not None:
        args += ["--agent", AGENT_PATH]
    if tuning is not None:
        args += ["--tuning", TUNING_PATH]
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

    def meta(obj_name: str, obj_namespace: str, extra: dict[str, str] | None = None) -> dict[str, Any]:
        return {"name": obj_name, "namespace": obj_namespace, "labels": {**labels, **(extra or {})}}

    def probe(path: str, initial_delay_s: int, failure_threshold: int) -> dict[str, Any]:
        return {
            "httpGet": {"path": path, "port": "metrics"},
            "initialDelaySeconds": initial_delay_s,
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": failure_threshold,
        }

    env: list[dict[str, Any]] = [
        # the root filesystem is read-only: caches go to the /tmp emptyDir
        {"name": "HOME", "value": "/tmp"},
        {"name": "MPLCONFIGDIR", "value": "/tmp/matplotlib"},
        {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    annotations = {"rlscale.io/spec-sha256": spec_sha256}
    if not (service_monitor or pod_monitor):  # with a monitor, the operator scrapes; annotations would scrape twice
        annotations = {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(metrics_port),
            "prometheus.io/path": "/metrics",
            **annotations,
        }
    extra_docs: list[dict[str, Any]] = []
    sources: list[dict[str, Any]] = [{"configMap": {"name": config_name}}]
    if agent is not None:
        extra_docs.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": meta(f"{name}-agent", namespace),
                "binaryData": {"actor.npz": base64.b64encode(agent).decode("ascii")},
            }
        )
        sources.append(
            {"configMap": {"name": f"{name}-agent", "items": [{"key": "actor.npz", "path": "agent/actor.npz"}]}}
        )
        annotations["rlscale.io/agent-sha256"] = hashlib.sha256(agent).hexdigest()
    if tuning is not None:
        try:
            tuning_text = tuning.decode("utf-8")
        except UnicodeDecodeError:
            raise RlscaleError("the tuning file is not UTF-8 text (a JSON file)") from None
        extra_docs.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": meta(f"{name}-tuning", namespace),
                "data": {"tuning.json": tuning_text},
            }
        )
        sources.append(
            {"configMap": {"name": f"{name}-tuning", "items": [{"key": "tuning.json", "path": "tuning/tuning.json"}]}}
        )
        annotations["rlscale.io/tuning-sha256"] = hashlib.sha256(tuning).hexdigest()
    if credentials is not None:
        secret_name = f"{name}-prometheus"
        extra_docs.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": meta(secret_name, namespace),
                "type": "kubernetes.io/basic-auth",
                "stringData": {"username": credentials[0], "password": credentials[1]},
            }
        )
        for var, key in ((PROMETHEUS_USERNAME_ENV, "username"), (PROMETHEUS_PASSWORD_ENV, "password")):
            env.append({"name": var, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": key}}})
    # one volume at /etc/rlscale: the spec's ConfigMap alone, or projected with the agent's and the tuning's (a
    # mount inside another read-only ConfigMap mount would need a mount point the kubelet cannot create)
    config_volume: dict[str, Any] = (
        {"name": "spec", "configMap": {"name": config_name}}
        if len(sources) == 1
        else {"name": "spec", "projected": {"sources": sources}}
    )

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
        *extra_docs,
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
                    "metadata": {"labels": dict(labels), "annotations": annotations},
                    "spec": {
                        "serviceAccountName": name,
                        "terminationGracePeriodSeconds": int(math.ceil(step_s)) + GRACE_MARGIN_S,
                        "containers": [
                            {
                                "name": "rlscale",
                                "image": image,
                                "command": ["rlscale"],
                                "args": args,
                                "env": env,
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
                        "volumes": [config_volume, {"name": "tmp", "emptyDir": {}}],
                    },
                },
            },
        },
    ]
    endpoint = {"port": "metrics", "path": "/metrics"}
    if service_monitor:
        service_labels = dict(labels)
        documents.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": f"{name}-metrics", "namespace": namespace, "labels": service_labels},
                "spec": {
                    "selector": dict(labels),
                    "ports": [{"name": "metrics", "port": metrics_port, "targetPort": "metrics", "protocol": "TCP"}],
                },
            }
        )
        documents.append(
            {
                "apiVersion": MONITORING_API,
                "kind": "ServiceMonitor",
                "metadata": meta(name, namespace, monitor_labels),
                "spec": {
                    "selector": {"matchLabels": dict(service_labels)},
                    "namespaceSelector": {"matchNames": [namespace]},
                    "endpoints": [endpoint],
                },
            }
        )
    if pod_monitor:
        documents.append(
            {
                "apiVersion": MONITORING_API,
                "kind": "PodMonitor",
                "metadata": meta(name, namespace, monitor_labels),
                "spec": {
                    "selector": {"matchLabels": dict(labels)},
                    "namespaceSelector": {"matchNames": [namespace]},
                    "podMetricsEndpoints": [endpoint],
                },
            }
        )
    if network_policy_:
        documents.append(network_policy(meta(name, namespace), labels, metrics_port, prometheus_url, api_server_cidr))
    if spec.pooled:
        initial = starting_config(spec)
        for st, sc in zip(spec.stages, initial.stages, strict=True):
            if st.max_pools > 1:
                documents += pooled_stage_objects(
                    spec,
                    st,
                    sc,
                    namespace=stage_namespace,
                    image=model_image or MODEL_IMAGE,
                    port=port,
                    gateway=gateway_name,
                    gateway_namespace=gateway_namespace or None,
                )
    return yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False)
