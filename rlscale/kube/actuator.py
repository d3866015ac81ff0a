"""Reading and changing a pipeline's stage Deployments through the official Kubernetes client.

Errors are values, not exceptions through the loop: every API failure is classified (`classify`) as

| kind | HTTP | what the sidecar does |
|---|---|---|
| ``conflict`` | 409 | re-read the Deployment and retry at once (up to ``conflict_retries``) |
| ``throttled`` | 429 | temporary: no further call this step; back off, at least its ``Retry-After`` |
| ``server`` | 5xx | temporary: keep the config, back off, retry |
| ``timeout`` | no answer | temporary: keep the config, back off, retry |
| ``unauthorized`` / ``forbidden`` / ``not_found`` | 401 / 403 / 404 | permanent: one clear log line, keep running |
| ``invalid`` | other 4xx | permanent: the request itself is wrong |

The API calls made are exactly those `rlscale.kube.objects.rbac_rules` grants: ``get`` on deployments, ``list``
only to find a stage the spec does not name (by label), JSON ``patch`` on deployments (pod template) and
``patch`` on deployments/scale (replicas only). With every stage named, each call names its Deployment, which
lets the Role restrict them all with ``resourceNames``.

A pooled stage (``max_pools > 1``; `rlscale.kube.objects` has its objects) is one Deployment per variant, read
with ``get`` and scaled through ``deployments/scale``, and an HTTPRoute (``get``, JSON ``patch`` of its
backendRef weights through ``CustomObjectsApi``); `DeploymentActuator` says in which order they change.

With the spec's ``in_place_resize`` on, a cores-only change of a stage (same variant, batch and replicas; for a
pooled stage, of a pool that has pods) is made in place (DESIGN.md section 8, `rlscale.kube.objects`): ``list`` of
the Deployment's pods by its selector, a JSON ``patch`` of each pod's ``resize`` subresource (CPU request = limit),
then a ``patch`` of the Deployment's metadata (annotation ``rlscale.io/cores``; the pod template is left alone,
so nothing rolls out). Support is detected: the server's version is read once (``GET /version``, allowed to every
client by Kubernetes' default ``system:public-info-viewer`` role); below 1.33, or when a resize is answered 404,
405 or 422 (the subresource is missing or disabled), the actuator says so once in the log and rolls the stage out
instead, as without ``in_place_resize``, for the rest of its life.

A 429's ``Retry-After`` (seconds or an HTTP date) travels with the error (`KubeApiError.retry_after_s`,
`ApplyOutcome.retry_after_s`) for the sidecar to wait out.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from rlscale.errors import PermanentError, RlscaleError, RuntimeFault, TemporaryError
from rlscale.kube.objects import (
    ANNOTATION_CORES,
    GATEWAY_GROUP,
    GATEWAY_VERSION,
    HTTPROUTES,
    LABEL_PIPELINE,
    LABEL_STAGE,
    DeploymentError,
    pod_selector,
    pool_names,
    pool_weights,
    read_stage,
    read_target,
    read_weights,
    ready_replicas,
    resize_drift,
    resize_patch,
    resized_cores,
    resized_patch,
    selected_pods,
    stage_base_name,
    target_patch,
    template_cores,
    template_patch,
    weights_patch,
)
from rlscale.spec import PipelineSpec, StageSpec
from rlscale.types import PipelineConfig, StageConfig, VariantPool

log = logging.getLogger(__name__)

TEMPORARY_KINDS = ("throttled", "server", "timeout")
PERMANENT_KINDS = ("unauthorized", "forbidden", "not_found", "invalid", "deployment", "not_kept")
ERROR_KINDS = ("conflict", *TEMPORARY_KINDS, *PERMANENT_KINDS)
MIN_RESIZE_VERSION = (1, 33)
"""The first Kubernetes release whose pods have the ``resize`` subresource on by default (beta; GA in 1.35)."""
UNSUPPORTED_RESIZE = (404, 405, 422)
"""HTTP statuses of a ``pods/resize`` patch that mean the server has no (enabled) resize subresource."""


class KubeApiError(RuntimeFault):
    """A Kubernetes API call failed; ``kind`` is one of `ERROR_KINDS`. A runtime fault, never the user's input:
    made as a `TemporaryError` (``conflict`` and `TEMPORARY_KINDS`; ``delay_s`` is a 429's ``Retry-After``) or a
    `PermanentError` (`PERMANENT_KINDS`), by its kind.

    ``retry_after_s``: the seconds (wall clock) the API server asked to wait with a 429's ``Retry-After``, or None.
    """

    def __new__(cls, kind: str, *args: Any, **kwargs: Any) -> KubeApiError:
        if cls is KubeApiError:
            cls = _TemporaryKubeApiError if kind in TEMPORARY_KINDS or kind == "conflict" else _PermanentKubeApiError
        return super().__new__(cls)

    def __init__(self, kind: str, message: str, retry_after_s: float | None = None, status: int | None = None) -> None:
        Exception.__init__(self, message)
        self.kind = kind
        self.retry_after_s = self.delay_s = retry_after_s
        self.status = status  # the HTTP status, when the server answered

    def __reduce__(self):  # pickled by kind, as it was made
        return (KubeApiError, (self.kind, str(self), self.retry_after_s, self.status))


class _TemporaryKubeApiError(KubeApiError, TemporaryError):
    """A `KubeApiError` that waiting may fix."""


class _PermanentKubeApiError(KubeApiError, PermanentError):
    """A `KubeApiError` that waiting will not fix."""


def parse_version(info: Mapping[str, Any]) -> tuple[int, int] | None:
    """(major, minor) of a ``GET /version`` answer: ``{"major": "1", "minor": "33+"}`` (managed clusters add a
    ``+``), else from ``gitVersion`` (``v1.33.2-eks-...``); None when neither reads."""
    try:
        major = re.match(r"\d+", str(info.get("major", "")))
        minor = re.match(r"\d+", str(info.get("minor", "")))
        if major and minor:
            return int(major.group()), int(minor.group())
        found = re.match(r"v?(\d+)\.(\d+)", str(info.get("gitVersion", "")))
    except AttributeError:
        return None
    return (int(found.group(1)), int(found.group(2))) if found else None


def classify(exc: BaseException) -> str:
    """The error kind of an exception raised by the Kubernetes client."""
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        if status == 409:
            return "conflict"
        if status == 401:
            return "unauthorized"
        if status == 403:
            return "forbidden"
        if status == 404:
            return "not_found"
        if status == 429:
            return "throttled"
        if status >= 500:
            return "server"
        if status == 0:
            return "timeout"
        return "invalid"
    return "timeout"  # urllib3 timeouts, refused connections, resets: the API server did not answer


def parse_retry_after(value: str | None, now_s: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds (``"3"``) or an HTTP date (RFC 9110); None when
    absent or unreadable. A date in the past is 0.

    Args:
        value: the header's value.
        now_s: the current Unix time (default: ``time.time()``), for dates.
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when is None or when.tzinfo is None:  # RFC 9110 dates are GMT; a date without a zone is not one
            return None
        seconds = when.timestamp() - (time.time() if now_s is None else now_s)
    return max(0.0, seconds) if math.isfinite(seconds) else None


def retry_after_s(exc: BaseException) -> float | None:
    """The ``Retry-After`` of a 429 raised by the Kubernetes client, in seconds; None if it has none."""
    headers = getattr(exc, "headers", None)
    if getattr(exc, "status", None) != 429 or not isinstance(headers, Mapping):
        return None
    # the client hands urllib3's case-insensitive HTTPHeaderDict; a plain dict from elsewhere may not be
    value = headers.get("Retry-After")
    if value is None:
        value = next((v for k, v in headers.items() if str(k).lower() == "retry-after"), None)
    return parse_retry_after(value if isinstance(value, str) else None)


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception it wraps (urllib3 keeps the cause in ``reason``), outermost first."""
    seen: list[BaseException] = []
    stack: list[Any] = [exc]
    while stack:
        e = stack.pop(0)
        if not isinstance(e, BaseException) or any(e is s for s in seen):
            continue
        seen.append(e)
        stack += [getattr(e, "reason", None), e.__cause__, e.__context__, *e.args]
    return seen


def unreachable_cause(exc: BaseException, host: str, timeout_s: float | None = None) -> str:
    """Why the API server at ``host`` did not answer, in words: ``connection refused``, ``DNS: ...``,
    ``TLS: ...``, ``no answer within 5s``; else the exception's kind and first line."""
    import socket
    import ssl
    from urllib.parse import urlsplit

    from urllib3.exceptions import NameResolutionError, NewConnectionError, SSLError
    from urllib3.exceptions import TimeoutError as Urllib3Timeout

    chain = _chain(exc)
    hostname = urlsplit(host).hostname or host
    port = urlsplit(host).port
    # the most specific cause first: urllib3's NewConnectionError is also a (connect) timeout error
    for e in chain:
        if isinstance(e, NameResolutionError | socket.gaierror):
            return f"DNS: cannot resolve {hostname}"
    for e in chain:
        if isinstance(e, ssl.SSLCertVerificationError):
            return f"TLS: the server's certificate is not trusted ({getattr(e, 'verify_message', '') or e})"
        if isinstance(e, SSLError | ssl.SSLError):
            return f"TLS: {' '.join(str(e).split())[:200]}"
    for e in chain:
        if isinstance(e, ConnectionRefusedError):
            return f"connection refused (nothing listens on {hostname}:{port or 443})"
    for e in chain:
        if isinstance(e, Urllib3Timeout | TimeoutError | socket.timeout) and not isinstance(e, NewConnectionError):
            return f"no answer within {timeout_s:g}s" if timeout_s else "no answer (timed out)"
    for e in chain:
        if isinstance(e, NewConnectionError):
            return f"cannot connect ({' '.join(str(e).split())[:200]})"
    first = (str(exc).splitlines() or [""])[0][:200]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _describe(kind: str, exc: BaseException, host: str = "", credentials: str = "", timeout_s: float = 0) -> str:
    """One line for a failed API call: the HTTP status and the server's reason, or why the server could not be
    reached; and the setting that fixes it (``credentials``: where the sidecar's credentials and server came from)."""
    from kubernetes.client.exceptions import ApiException

    where = f" ({credentials})" if credentials else ""
    if isinstance(exc, ApiException) and exc.status:
        reason = exc.reason or ""
        try:
            reason = json.loads(exc.body or "{}").get("message") or reason
        except (ValueError, AttributeError):
            pass
        hint = ""
        if kind == "forbidden":
            hint = " (the sidecar's Role must grant this; see `rlscale manifests`)"
        elif kind == "unauthorized":
            hint = f"; the API server at {host} refused the credentials{where}: renew them, or pick others"
        wait = retry_after_s(exc)
        if wait is not None:
            hint += f" (Retry-After {wait:g}s)"
        return f"HTTP {exc.status} {reason}".strip() + hint
    cause = unreachable_cause(exc, host, timeout_s)
    return f"cannot reach the Kubernetes API server at {host}: {cause}; check the server and credentials{where}"


class StageAction(StrEnum):
    """What an apply did to one stage (a string enum: it compares equal to its value)."""

    UNCHANGED = "unchanged"
    SCALED = "scaled"
    RESIZED = "resized"
    ROLLED = "rolled"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class StageOutcome:
    """What happened to one stage: ``unchanged``, ``scaled`` (replicas only), ``resized`` (cores changed in place,
    no rollout), ``rolled`` (pod template), ``failed`` (with the error ``kind`` and a message) or ``skipped`` (not
    tried: the API server throttled an earlier stage's call). ``retry_after_s``: a 429's ``Retry-After``, seconds."""

    stage: str
    action: StageAction
    kind: str | None = None
    message: str = ""
    attempts: int = 1
    retry_after_s: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "action", StageAction(self.action))  # the enum, or its string


@dataclass(frozen=True)
class ApplyOutcome:
    """The result of applying one configuration, stage by stage."""

    stages: tuple[StageOutcome, ...] = field(default_factory=tuple)
    dry_run: bool = False

    @property
    def changed(self) -> list[str]:
        return [o.stage for o in self.stages if o.action in ("scaled", "resized", "rolled")]

    @property
    def failed(self) -> list[StageOutcome]:
        return [o for o in self.stages if o.action == "failed"]

    @property
    def temporary_failure(self) -> bool:
        return any(o.kind in TEMPORARY_KINDS or o.kind == "conflict" for o in self.failed)

    @property
    def retry_after_s(self) -> float | None:
        """The longest ``Retry-After`` the API server sent with a 429 during this apply, or None."""
        waits = [o.retry_after_s for o in self.failed if o.retry_after_s is not None]
        return max(waits) if waits else None


@dataclass
class DeploymentActuator:
    """Reads each stage's configuration from its Deployment and applies new ones, one patch per changed stage.

    A pooled stage (``max_pools > 1``) is read from its pools' Deployments and its HTTPRoute: a pool is in force
    when its Deployment has replicas and its backendRef a weight; its share is its weight over theirs. A pool
    with replicas but weight 0 (warm, or left behind), or with weight but no replicas, makes the stage
    *off-spec* (`off_spec`), so that the sidecar applies again even when its policy keeps the configuration.
    A pooled stage changes make-before-break, as InfAdapter does (new Deployment, ready, shift the weights, delete
    the old), in one apply or over several, each apply doing what the cluster's state allows:

    1. **make**: every pool of the target gets its batch and cores (a pod-template patch, a rollout) and at least
       its target replicas; a pool still carrying traffic keeps its current replicas if they are more;
    2. **shift**: when every pool of the target reports at least its target replicas ready (and updated, where
       the status says so; a pool patched in this very apply is not ready yet), the route's weights are patched
       to the target's (`rlscale.kube.objects.pool_weights`). Until then the weights stay as they are, and the
       next interval's apply (the new pool counts as off-spec meanwhile) checks again;
    3. **break**: once the weights are the target's (shifted in step 2, or already), every pool is scaled to its
       target replicas, 0 for a pool not in the target (its Deployment stays, with 0 replicas).

    The route's propagation to the Gateway's data plane is not awaited before step 3: pods being scaled away get
    their termination grace period to finish what was sent to them. The route itself is read back after step 2,
    and nothing is broken unless it says what was written (kind ``not_kept`` otherwise: a webhook or a GitOps
    controller reverting it).

    While step 2 waits, the route records the target (`rlscale.kube.objects.ANNOTATION_TARGET`) and `read` gives
    the target as the stage's configuration (off-spec until the weights move), as the simulator's state does: a
    policy that holds then completes its switch. A stage with no pool in force reads as the pools that can serve
    (off-spec), so the next apply repairs its route. After a failed step that leaves the pipeline's allocated cores
    over the core budget, the pools without traffic go back to 0 replicas (`_failed_within_budget`), and the
    outcome says so.

    Attributes:
        spec: the pipeline (its ``kubernetes`` section names the Deployments, container and env vars).
        api: a ``kubernetes.client.AppsV1Api``.
        namespace: the Deployments' namespace.
        dry_run: send every change with server-side ``dryRun=All``: validated by the API server, stored nowhere.
        timeout_s: per-request timeout; a slower answer is a ``timeout`` error.
        conflict_retries: re-reads after a 409 before a stage is reported failed.
        credentials: where the API server and credentials come from, for messages (the kubeconfig file and
            context, or the pod's service account): the setting a user changes when the server cannot be reached.
    """

    spec: PipelineSpec
    api: Any
    namespace: str = "default"
    dry_run: bool = False
    timeout_s: float = 5.0
    conflict_retries: int = 3
    credentials: str = "--kubeconfig, else the pod's service account, else ~/.kube/config"
    _names: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    # each stage's Deployment as `read` last saw it: `apply` patches from it once instead of reading it again
    # (a stale copy costs a 409 and a re-read, thanks to the resourceVersion the patch carries)
    _seen: dict[str, dict[str, Any]] = field(default_factory=dict, init=False, repr=False)
    # stage -> why its Deployment is off-spec (`rlscale.kube.objects.read_stage`), as `read` last saw it
    off_spec: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    # pooled stage -> cores allocated over every one of its Deployments (max of replicas and ready, times cores),
    # as `read` last saw it: warm and draining pools cost too
    allocated_cores: dict[str, float] = field(default_factory=dict, init=False, repr=False)
    # every stage -> cores allocated (max of replicas and ready, times cores; over every pool of a pooled stage), as
    # `read` last saw it: what a failed step checks against the core budget
    allocated: dict[str, float] = field(default_factory=dict, init=False, repr=False)
    routes: Any = None
    """A ``kubernetes.client.CustomObjectsApi`` for HTTPRoutes (None: one on ``api``'s client when needed)."""
    core: Any = None
    """A ``kubernetes.client.CoreV1Api`` for pods (None: one on ``api``'s client when needed)."""
    _seen_pools: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    # whether in-place resize is used: None until the server's version is read, False once found unsupported
    _in_place: bool | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._names = dict(self.spec.kubernetes.deployments)

    def _call(self, fn, *args, **kwargs) -> Any:
        try:
            response = fn(*args, _request_timeout=self.timeout_s, _preload_content=False, **kwargs)
            return json.loads(response.data or b"{}")
        except Exception as exc:  # noqa: BLE001 - every client failure becomes a classified KubeApiError
            kind = classify(exc)
            message = _describe(kind, exc, self.host, self.credentials, self.timeout_s)
            status = getattr(exc, "status", None)
            raise KubeApiError(kind, message, retry_after_s(exc), status if isinstance(status, int) else None) from None

    @property
    def host(self) -> str:
        """The API server's URL, as the client is configured."""
        try:
            return str(self.api.api_client.configuration.host)
        except AttributeError:
            return "?"

    def deployment_name(self, stage: str) -> str:
        """The stage's Deployment: named in the spec, else the one labelled for this pipeline and stage."""
        if stage in self._names:
            return self._names[stage]
        selector = f"{LABEL_PIPELINE}={self.spec.name},{LABEL_STAGE}={stage}"
        items = self._call(self.api.list_namespaced_deployment, self.namespace, label_selector=selector)["items"]
        # check the labels again: not every API server (or emulator) implements every selector
        want = {LABEL_PIPELINE: self.spec.name, LABEL_STAGE: stage}
        items = [d for d in items if want.items() <= (d.get("metadata", {}).get("labels") or {}).items()]
        if len(items) != 1:
            raise KubeApiError(
                "not_found",
                f"{len(items)} Deployments in namespace {self.namespace} match {selector} (need exactly one)",
            )
        self._names[stage] = items[0]["metadata"]["name"]
        log.info("stage %s is Deployment %s/%s (found by its labels)", stage, self.namespace, self._names[stage])
        return self._names[stage]

    def read_deployment(self, stage: str) -> dict[str, Any]:
        name = self.deployment_name(stage)
        try:
            return self._call(self.api.read_namespaced_deployment, name, self.namespace)
        except KubeApiError as exc:
            if exc.kind == "not_found" and stage not in self.spec.kubernetes.deployments:
                self._names.pop(stage, None)  # found by label once; look again next time
            raise KubeApiError(exc.kind, f"Deployment {self.namespace}/{name}: {exc}", exc.retry_after_s) from None

    def read(self) -> tuple[PipelineConfig, list[int | None]]:
        """The configuration the Deployments ask for, and the replicas Kubernetes reports ready per stage (for a
        pooled stage, over its pools in force).

        Raises:
            KubeApiError: a Deployment could not be read, or (kind ``deployment``) does not describe a
                configuration this pipeline allows.
        """
        stages, ready = [], []
        off_spec: dict[str, str] = {}
        for st in self.spec.stages:
            if st.max_pools > 1:
                pooled = self._read_pooled(st)
                stages.append(pooled.config)
                ready.append(pooled.ready)
                self.allocated_cores[st.name] = self.allocated[st.name] = pooled.allocated_cores
                if pooled.off_spec is not None:
                    off_spec[st.name] = pooled.off_spec
                    if self.off_spec.get(st.name) != pooled.off_spec:
                        log.warning("stage %s: %s", st.name, pooled.off_spec)
                continue
            dep = self.read_deployment(st.name)
            self._seen[st.name] = dep
            try:
                config, reason = read_stage(dep, self.spec.kubernetes, st)
            except RlscaleError as exc:
                raise KubeApiError("deployment", str(exc)) from None
            stages.append(config)
            ready.append(ready_replicas(dep))
            self.allocated[st.name] = float(max(config.replicas, ready_replicas(dep) or 0) * config.cores)
            if reason is None:
                reason = self._drift(dep)
            if reason is not None:
                off_spec[st.name] = reason
                if self.off_spec.get(st.name) != reason:  # said once per new reason
                    log.warning("stage %s: %s", st.name, reason)
        self.off_spec = off_spec
        return PipelineConfig(tuple(stages)), ready

    def apply(self, config: PipelineConfig) -> ApplyOutcome:
        """Move every stage to ``config``: the scale subresource when only replicas change, else one JSON patch
        of the pod template and replicas. Never raises for API errors; see the returned outcome.

        After a 429 (``throttled``) the remaining stages are ``skipped``: the API server asked for no more calls
        until its ``Retry-After`` has passed, and the sidecar's next step tries them again."""
        outcomes: list[StageOutcome] = []
        throttled = False
        for st, target in zip(self.spec.stages, config.stages, strict=True):
            if throttled:
                outcomes.append(StageOutcome(st.name, "skipped", message="not tried: the API server throttled"))
                continue
            if st.max_pools > 1:
                outcomes.append(self._apply_pooled(st, target))
            else:
                outcomes.append(self._apply_stage(st.name, st, target))
            throttled = outcomes[-1].kind == "throttled"
        return ApplyOutcome(tuple(outcomes), dry_run=self.dry_run)

    def _apply_stage(self, name: str, stage, target: StageConfig) -> StageOutcome:
        dry = {"dry_run": "All"} if self.dry_run else {}
        attempt = 0
        while True:
            attempt += 1
            try:
                dep = self._seen.pop(name, None) if attempt == 1 else None
                if dep is None:
                    dep = self.read_deployment(name)
                try:
                    current, off_spec = read_stage(dep, self.spec.kubernetes, stage)
                except RlscaleError as exc:
                    return StageOutcome(name, "failed", "deployment", str(exc), attempt)
                dep_name = dep["metadata"]["name"]
                if current == target and off_spec is None:
                    done = self._resize_drifted(dep, target.cores, dry)
                    if done:
                        return StageOutcome(name, "resized", message=done, attempts=attempt)
                    return StageOutcome(name, "unchanged", attempts=attempt)
                same = (current.variant, current.batch, current.cores) == (target.variant, target.batch, target.cores)
                if same and off_spec is None:
                    body = {"spec": {"replicas": target.replicas}}
                    self._call(self.api.patch_namespaced_deployment_scale, dep_name, self.namespace, body, **dry)
                    return StageOutcome(name, "scaled", message=f"{current} -> {target}", attempts=attempt)
                if off_spec is None and current.with_(cores=target.cores) == target and current.replicas > 0:
                    done = self._resize_in_place(dep, target.cores, dry)
                    if done is not None:
                        done = done or "nothing left to resize"
                        return StageOutcome(name, "resized", message=f"{current} -> {target}: {done}", attempts=attempt)
                body = template_patch(dep, self.spec.kubernetes, target, self.spec.batch_timeout_s)
                self._call(self.api.patch_namespaced_deployment, dep_name, self.namespace, body, **dry)
                fixed = f" (was off-spec: {off_spec})" if off_spec is not None else ""
                return StageOutcome(name, "rolled", message=f"{current} -> {target}{fixed}", attempts=attempt)
            except KubeApiError as exc:
                if exc.kind == "conflict" and attempt <= self.conflict_retries:
                    log.info("stage %s: conflict (%s); re-reading and retrying", name, exc)
                    continue
                return StageOutcome(name, "failed", exc.kind, str(exc), attempt, exc.retry_after_s)

    # ------------------------------------------------------------------ in-place resize

    def _core_api(self) -> Any:
        if self.core is None:
            from kubernetes import client

            self.core = client.CoreV1Api(self.api.api_client)
        return self.core

    def server_version(self) -> tuple[int, int] | None:
        """The API server's Kubernetes (major, minor) from ``GET /version``; None when it cannot be read."""
        from kubernetes import client

        try:
            info = self._call(client.VersionApi(self.api.api_client).get_code)
        except KubeApiError as exc:
            log.debug("cannot read the API server's version: %s", exc)
            return None
        return parse_version(info)

    def in_place_supported(self) -> bool:
        """Whether a cores-only change is resized in place: the spec enables it, and the server is not known to lack
        the ``pods/resize`` subresource (its version, read once, is at least 1.33, and no resize was refused as
        unsupported). When the version cannot be read the resize itself finds out."""
        if not self.spec.in_place_resize or self._in_place is False:
            return False
        if self._in_place is None:
            version = self.server_version()
            if version is None:
                return True  # unknown: try, and let a 404/405/422 decide; read the version again next time
            if version < MIN_RESIZE_VERSION:
                self._no_in_place(
                    f"the API server is Kubernetes {version[0]}.{version[1]}, and in-place pod resize (the "
                    f"pods/resize subresource) needs {MIN_RESIZE_VERSION[0]}.{MIN_RESIZE_VERSION[1]} or later"
                )
                return False
            self._in_place = True
        return True

    def _no_in_place(self, why: str) -> None:
        """In-place resize is off for good (said once, in the log)."""
        self._in_place = False
        log.warning(
            "in_place_resize is on in the spec, but %s: cores-only changes roll the stage out instead (a new "
            "ReplicaSet, as with in_place_resize off), from now on",
            why,
        )

    def _pods(self, dep: dict[str, Any]) -> list[dict[str, Any]]:
        """The Deployment's pods (by its selector), not being deleted."""
        selector = ",".join(f"{k}={v}" for k, v in pod_selector(dep).items())
        items = self._call(self._core_api().list_namespaced_pod, self.namespace, label_selector=selector)["items"]
        return selected_pods(dep, items)

    def _drift(self, dep: dict[str, Any]) -> str | None:
        """Why a Deployment's pods are off-spec with in-place resize on: pods that run other cores than the
        Deployment records (its `ANNOTATION_CORES`, else its template), read from the pods themselves: pods the
        ReplicaSet made from the template after a resize, or pods resized whose record on the Deployment failed.
        None when every pod runs what is recorded, during a rollout (the old ReplicaSet's pods differ by design),
        or with in-place resize off."""
        if not self.in_place_supported() or _rolling(dep):
            return None
        kube = self.spec.kubernetes
        recorded = resized_cores(dep)
        intended = recorded if recorded is not None else template_cores(dep, kube)
        pods = self._pods(dep)
        drifted = [p for p in pods if template_cores(p, kube) != intended]
        if not drifted:
            return None
        name = dep["metadata"]["name"]
        names = [p["metadata"]["name"] for p in drifted]
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        running = sorted({str(template_cores(p, kube)) for p in drifted})
        if recorded is not None and recorded != template_cores(dep, kube) and resize_drift(dep, kube, pods) == names:
            return (
                f"{len(drifted)} pod(s) of Deployment {name} ({shown}) "
                f"run the template's CPU, not the {recorded} cores its pods were resized to in place; the "
                "next apply resizes them"
            )
        return (
            f"{len(drifted)} pod(s) of Deployment {name} ({shown}) run {'/'.join(running)} cores, not the {intended} "
            "the Deployment records (a resize in place whose record failed, or pods changed by hand); the next "
            "apply resizes them to the configuration decided"
        )

    def _resize_drifted(self, dep: dict[str, Any], cores: int, dry: dict[str, str]) -> str:
        """Resize in place the pods of a Deployment that run other cores than ``cores`` (pods made from the template
        after a resize, or a resize whose record failed), and record ``cores`` on it; what was done ("" for
        nothing). Nothing during a rollout or with in-place resize off."""
        if not self.in_place_supported() or _rolling(dep):
            return ""
        return self._resize_in_place(dep, cores, dry) or ""

    def _resize_in_place(self, dep: dict[str, Any], cores: int, dry: dict[str, str]) -> str | None:
        """Resize every pod of ``dep`` to ``cores`` through ``pods/resize``, then record it on the Deployment
        (`resized_patch`). Returns what was done ("" for nothing), or None when in-place resize is not available
        (then nothing was recorded, and the caller rolls out).

        Raises:
            KubeApiError: a call failed for another reason (a resize refused as forbidden, say).
        """
        if not self.in_place_supported():
            return None
        kube = self.spec.kubernetes
        resized = []
        for pod in self._pods(dep):
            name = pod["metadata"]["name"]
            if template_cores(pod, kube) == cores:
                continue
            try:
                self._call(
                    self._core_api().patch_namespaced_pod_resize,
                    name,
                    self.namespace,
                    resize_patch(pod, kube, cores),
                    **dry,
                )
            except KubeApiError as exc:
                if exc.status == 404 and name not in {p["metadata"]["name"] for p in self._pods(dep)}:
                    continue  # the pod went between the list and the patch (a scale-down, an eviction)
                if exc.status in UNSUPPORTED_RESIZE:
                    self._no_in_place(f"the API server answered pods/{name}/resize with {exc}")
                    return None
                raise KubeApiError(exc.kind, f"pod {self.namespace}/{name} resize: {exc}", exc.retry_after_s) from None
            resized.append(name)
        ops = resized_patch(dep, kube, cores)
        if ops:
            self._call(self.api.patch_namespaced_deployment, dep["metadata"]["name"], self.namespace, ops, **dry)
        done = [f"{len(resized)} pod(s) resized in place to {cores} cores"] if resized else []
        done += [f"{ANNOTATION_CORES}={cores}"] if ops else []
        return ", ".join(done)

    # ------------------------------------------------------------------ pooled stages

    def _route_api(self) -> Any:
        if self.routes is None:
            from kubernetes import client

            self.routes = client.CustomObjectsApi(self.api.api_client)
        return self.routes

    def _read_named(self, name: str, what: str = "Deployment") -> dict[str, Any]:
        try:
            if what == "Deployment":
                return self._call(self.api.read_namespaced_deployment, name, self.namespace)
            return self._call(
                self._route_api().get_namespaced_custom_object,
                GATEWAY_GROUP,
                GATEWAY_VERSION,
                self.namespace,
                HTTPROUTES,
                name,
            )
        except KubeApiError as exc:
            raise KubeApiError(exc.kind, f"{what} {self.namespace}/{name}: {exc}", exc.retry_after_s) from None

    def _pool_state(self, st: StageSpec) -> _PoolState:
        """Every pool Deployment of a pooled stage and its HTTPRoute, read now.

        Raises:
            KubeApiError: a read failed, or (kind ``deployment``) an object does not describe a pool this stage
                allows.
        """
        names = pool_names(self.spec, st)
        route = self._read_named(stage_base_name(self.spec, st), "HTTPRoute")
        deps = {v: self._read_named(n) for v, n in names.items()}
        configs: dict[str, VariantPool] = {}
        problems: list[str] = []
        off: set[str] = set()
        try:
            weights = read_weights(route, names)
            for v, dep in deps.items():
                config, reason = read_stage(dep, self.spec.kubernetes, st)
                if config.variant != v:
                    raise DeploymentError(
                        f"Deployment {names[v]} is the pool of {v} but runs {self.spec.kubernetes.variant_env}="
                        f"{config.variant!r}"
                    )
                configs[v] = config.only
                if reason is not None:
                    problems.append(reason)
                    off.add(v)
        except DeploymentError as exc:
            raise KubeApiError("deployment", str(exc)) from None
        for v, dep in deps.items():  # pods made from the template since the pool was resized in place
            drift = self._drift(dep) if v not in off and configs[v].replicas > 0 else None
            if drift is not None:
                problems.append(drift)
        return _PoolState(names, route, deps, configs, weights, problems, off)

    def _read_pooled(self, st: StageSpec) -> _PooledRead:
        state = self._pool_state(st)
        in_force = [v for v in state.configs if state.configs[v].replicas > 0 and state.weights[v] > 0]
        problems = list(state.problems)
        warm = [v for v, c in state.configs.items() if c.replicas > 0 and state.weights[v] == 0]
        starved = [v for v, c in state.configs.items() if c.replicas == 0 and state.weights[v] > 0]
        switching = self._switching(st, state)
        if switching is not None:  # a switch under way: the target is in force (the simulator's state is)
            config = switching
            waiting = [p.variant for p in config.pools if not _ready(state.deps[p.variant], p.replicas)]
            problems.append(
                f"switching to {config}: the route's weights move once "
                + (f"{', '.join(waiting)} {'is' if len(waiting) == 1 else 'are'} ready" if waiting else "applied")
            )
            warm = starved = []
        elif in_force:
            total = sum(state.weights[v] for v in in_force)
            config = StageConfig.of_pools([state.configs[v].with_(share=state.weights[v] / total) for v in in_force])
        else:  # traffic goes nowhere, or only to pools without replicas: read what can serve, and repair the route
            config = self._stranded(st, state)
            problems.append(
                f"no pool is in force (every pool has 0 replicas or weight 0 in HTTPRoute "
                f"{self.namespace}/{stage_base_name(self.spec, st)}): the route is repaired to {config}"
            )
            warm = starved = []
        variants = [p.variant for p in config.pools]
        counts = [ready_replicas(state.deps[v]) for v in variants]
        ready = None if all(n is None for n in counts) else sum(n or 0 for n in counts)
        allocated = float(
            sum(max(c.replicas, ready_replicas(state.deps[v]) or 0) * c.cores for v, c in state.configs.items())
        )
        if warm:
            problems.append(f"pools {', '.join(warm)} have replicas but weight 0 (warming up, or left behind)")
        if starved:
            problems.append(f"pools {', '.join(starved)} have weight but 0 replicas")
        self._seen_pools[st.name] = state
        return _PooledRead(config, ready, allocated, "; ".join(problems) or None)

    def _switching(self, st: StageSpec, state: _PoolState) -> StageConfig | None:
        """The target of a switch under way (`rlscale.kube.objects.ANNOTATION_TARGET` on the route), when the
        route's weights are not the target's yet and every target pool's Deployment was made for it (its batch and
        cores, replicas); else None (no switch, a switch done, or a record that no longer matches the pools)."""
        target = read_target(state.route, st)
        if target is None:
            return None
        if pool_weights(target) == {v: w for v, w in state.weights.items() if w > 0}:
            return None  # shifted already; the record goes with the next route patch
        for p in target.pools:
            cur = state.configs[p.variant]
            if p.variant in state.off or (cur.batch, cur.cores) != (p.batch, p.cores) or cur.replicas < 1:
                return None
        return target

    def _stranded(self, st: StageSpec, state: _PoolState) -> StageConfig:
        """What a stage with no pool in force reads as, for its repair: the pools that have replicas (shares by
        replicas); else the pools the route weights, at their fewest replicas (shares by weight); else the least
        accurate variant's pool at its fewest replicas."""
        warm = [v for v, c in state.configs.items() if c.replicas > 0]
        if warm:
            total = sum(state.configs[v].replicas for v in warm)
            pools = [state.configs[v].with_(share=state.configs[v].replicas / total) for v in warm]
        else:
            weighted = [v for v, w in state.weights.items() if w > 0] or [st.cheapest_variant]
            total = sum(state.weights[v] for v in weighted) or len(weighted)
            pools = [
                state.configs[v].with_(replicas=st.min_replicas, share=(state.weights[v] or 1) / total)
                for v in weighted
            ]
        shares = [p.share for p in pools]
        pools[-1] = pools[-1].with_(share=1.0 - math.fsum(shares[:-1])) if len(pools) > 1 else pools[0].with_(share=1.0)
        return StageConfig.of_pools(pools)

    def _apply_pooled(self, st: StageSpec, target: StageConfig) -> StageOutcome:
        """Move a pooled stage towards ``target``: make, shift, break (the class docstring)."""
        unknown = [p.variant for p in target.pools if p.variant not in st.variant_names]
        if unknown:
            return StageOutcome(st.name, "failed", "invalid", f"no pool for variant(s) {', '.join(unknown)}")
        want = {p.variant: p for p in target.pools}
        want_weights = pool_weights(target)
        dry = {"dry_run": "All"} if self.dry_run else {}
        attempt = 0
        while True:
            attempt += 1
            steps: list[str] = []
            rolled = resized = changed = False
            state = None
            try:
                state = self._seen_pools.pop(st.name, None) if attempt == 1 else None
                if state is None:
                    state = self._pool_state(st)
                touched: set[str] = set()
                # 1. make: the target's pools get their batch and cores, and at least their replicas
                for v, p in want.items():
                    cur = state.configs[v]
                    keep = cur.replicas if state.weights[v] > 0 else 0
                    replicas = max(p.replicas, keep)
                    # in place: a pool with pods whose cores alone change (a pool with none rolls out for free)
                    in_place = v not in state.off and cur.replicas > 0 and cur.batch == p.batch
                    done = None
                    if in_place and cur.cores != p.cores:
                        done = self._resize_in_place(state.deps[v], p.cores, dry)
                    elif in_place:
                        done = self._resize_drifted(state.deps[v], p.cores, dry) or None
                    if done is not None:
                        steps.append(f"{v} {cur.cores} -> {p.cores} cores ({done})")
                        resized = changed = True
                        if cur.replicas < replicas:
                            self._scale(state.names[v], replicas, dry)
                            steps.append(f"{v} x{cur.replicas} -> x{replicas}")
                            touched.add(v)
                    elif (cur.batch, cur.cores) != (p.batch, p.cores) or v in state.off:
                        new = p.with_(replicas=replicas, share=1.0)
                        body = template_patch(state.deps[v], self.spec.kubernetes, new, self.spec.batch_timeout_s)
                        self._call(self.api.patch_namespaced_deployment, state.names[v], self.namespace, body, **dry)
                        steps.append(f"{cur} -> {new}")
                        touched.add(v)
                        rolled = changed = True
                    elif cur.replicas < replicas:
                        self._scale(state.names[v], replicas, dry)
                        steps.append(f"{v} x{cur.replicas} -> x{replicas}")
                        touched.add(v)
                        changed = True
                # 2. shift: once every pool of the target is ready
                current_weights = {v: state.weights[v] for v in state.names}
                target_weights = {v: want_weights.get(v, 0) for v in state.names}
                waiting = [v for v, p in want.items() if v in touched or not _ready(state.deps[v], p.replicas)]
                shifted = current_weights == target_weights
                route_name = stage_base_name(self.spec, st)
                if not shifted and not waiting:
                    # the record of the switch goes with the shift that completes it (one patch)
                    body = weights_patch(state.route, state.names, target_weights)
                    body += [op for op in target_patch(state.route, None) if op["path"] != "/metadata/resourceVersion"]
                    self._patch_route(route_name, body, dry)
                    was = current_weights
                    moved = [f"{v} {was[v]}->{w}" for v, w in target_weights.items() if w != was[v]]
                    steps.append(f"weights {', '.join(moved)}")
                    changed = True
                    # the API server's 200 is not the route: read it back before anything is broken
                    kept = target_weights if self.dry_run else self._route_weights(st, state)
                    if kept != target_weights:
                        return self._failed_within_budget(
                            st,
                            state,
                            KubeApiError(
                                "not_kept",
                                f"HTTPRoute {self.namespace}/{route_name} accepted the weights {_w(target_weights)} "
                                f"but now says {_w(kept)} (an admission webhook or a GitOps controller reverts it?); "
                                "every pool keeps its replicas",
                            ),
                            steps,
                            attempt,
                        )
                    shifted = True
                elif not shifted:  # the target's pools are not ready: record the target, the configuration in force
                    body = target_patch(state.route, target)
                    if body:
                        self._patch_route(route_name, body, dry)
                elif shifted and read_target(state.route, st) is not None:  # a switch done: drop its record
                    body = target_patch(state.route, None)
                    if body:
                        self._patch_route(route_name, body, dry)
                # 3. break: every pool to its target replicas (0 for pools not in the target)
                if shifted:
                    for v, cur in state.configs.items():
                        goal = want[v].replicas if v in want else 0
                        if v not in touched and cur.replicas != goal:
                            self._scale(state.names[v], goal, dry)
                            steps.append(f"{v} x{cur.replicas} -> x{goal}")
                            changed = True
                elif waiting:
                    steps.append(f"weights kept until {', '.join(waiting)} ready")
                if not changed:
                    return StageOutcome(st.name, "unchanged", message="; ".join(steps), attempts=attempt)
                action = "rolled" if rolled else "resized" if resized else "scaled"
                return StageOutcome(st.name, action, message="; ".join(steps), attempts=attempt)
            except KubeApiError as exc:
                if exc.kind == "conflict" and attempt <= self.conflict_retries:
                    log.info("stage %s: conflict (%s); re-reading and retrying", st.name, exc)
                    continue
                return self._failed_within_budget(st, state, exc, steps, attempt)

    def _patch_route(self, name: str, body: list[dict[str, Any]], dry: dict[str, str]) -> None:
        self._call(
            self._route_api().patch_namespaced_custom_object,
            GATEWAY_GROUP,
            GATEWAY_VERSION,
            self.namespace,
            HTTPROUTES,
            name,
            body,
            **dry,
        )

    def _route_weights(self, st: StageSpec, state: _PoolState) -> dict[str, int]:
        """The route's weights per pool, read again now."""
        route = self._read_named(stage_base_name(self.spec, st), "HTTPRoute")
        try:
            return read_weights(route, state.names)
        except DeploymentError as exc:
            raise KubeApiError("deployment", str(exc)) from None

    def _failed_within_budget(
        self, st: StageSpec, state: _PoolState | None, exc: KubeApiError, steps: list[str], attempt: int
    ) -> StageOutcome:
        """The failed outcome of a pooled apply. When the pipeline's allocated cores are over the core budget after
        the failure, the stage's pools that carry no traffic (made for a switch that did not complete, or left
        behind) go back to 0 replicas, and the message says so: a failed step never leaves the budget exceeded
        silently, and leaves it exceeded only when the API server refuses that too."""
        done = f" (done before: {'; '.join(steps)})" if steps else ""
        message = f"{exc}{done}"
        if state is None or self.dry_run:
            return StageOutcome(st.name, "failed", exc.kind, message, attempt, exc.retry_after_s)
        try:
            now = self._pool_state(st)
        except KubeApiError as again:
            message += f"; cannot read the pools again to check the core budget: {again}"
            return StageOutcome(st.name, "failed", exc.kind, message, attempt, exc.retry_after_s)

        def cost(replicas: dict[str, int]) -> float:
            return float(
                sum(max(replicas[v], ready_replicas(now.deps[v]) or 0) * c.cores for v, c in now.configs.items())
            )

        replicas = {v: c.replicas for v, c in now.configs.items()}
        others = sum(c for s, c in self.allocated.items() if s != st.name)
        allocated, budget = cost(replicas) + others, self.spec.core_budget
        if allocated > budget:
            undone = []
            for v, c in now.configs.items():
                if now.weights[v] == 0 and c.replicas > 0:
                    try:
                        self._scale(now.names[v], 0, {})
                    except KubeApiError as again:
                        message += f"; cannot scale {v} to 0: {again}"
                        continue
                    undone.append(f"{v} x{c.replicas} -> x0")
                    replicas[v] = 0
            self.allocated[st.name] = float(sum(replicas[v] * c.cores for v, c in now.configs.items()))
            left = (
                f"; scaled the pools without traffic to 0: {', '.join(undone)}"
                if undone
                else "; no pool without traffic is left to scale to 0"
            )
            message += f"; OVER THE CORE BUDGET after the failure: {allocated:g} cores allocated > {budget}{left}"
            log.error(
                "stage %s: %g cores allocated > core budget %s after a failed step%s", st.name, allocated, budget, left
            )
        return StageOutcome(st.name, "failed", exc.kind, message, attempt, exc.retry_after_s)

    def _scale(self, name: str, replicas: int, dry: dict[str, str]) -> None:
        body = {"spec": {"replicas": replicas}}
        self._call(self.api.patch_namespaced_deployment_scale, name, self.namespace, body, **dry)


def _w(weights: dict[str, int]) -> str:
    """Weights for a message: ``resnet18=300, resnet50=700`` (pools with weight only)."""
    return ", ".join(f"{v}={w}" for v, w in weights.items() if w) or "all 0"


def _rolling(deployment: dict[str, Any]) -> bool:
    """Whether a Deployment is rolling out, by its status: a spec its controller has not observed yet, or fewer
    pods of the current template than pods in all (the old ReplicaSet's pods still there)."""
    status = deployment.get("status") or {}
    generation = deployment.get("metadata", {}).get("generation")
    observed = status.get("observedGeneration")
    if generation is not None and observed is not None and observed < generation:
        return True
    updated, total = status.get("updatedReplicas"), status.get("replicas")
    return updated is not None and total is not None and updated < total


def _ready(deployment: dict[str, Any], replicas: int) -> bool:
    """Whether a pool's Deployment reports ``replicas`` pods ready, of its current template where its status
    says (``updatedReplicas``, ``observedGeneration``)."""
    status = deployment.get("status") or {}
    generation = deployment.get("metadata", {}).get("generation")
    observed = status.get("observedGeneration")
    if generation is not None and observed is not None and observed < generation:
        return False
    updated = status.get("updatedReplicas")
    if updated is not None and updated < replicas:
        return False
    return (ready_replicas(deployment) or 0) >= replicas


@dataclass
class _PoolState:
    """A pooled stage's objects as read: variant -> Deployment name, the route, variant -> Deployment, variant ->
    its pool's configuration (``replicas``: the Deployment's), variant -> weight, off-spec reasons and the variants
    whose Deployment is off-spec."""

    names: dict[str, str]
    route: dict[str, Any]
    deps: dict[str, dict[str, Any]]
    configs: dict[str, VariantPool]
    weights: dict[str, int]
    problems: list[str]
    off: set[str]


@dataclass(frozen=True)
class _PooledRead:
    config: StageConfig
    ready: int | None
    allocated_cores: float
    off_spec: str | None


@dataclass
class AssumedActuator:
    """Stands in for the Deployments when ``sidecar --once --dry-run`` cannot reach the API server: reads
    ``config`` (replicas reported ready: unknown), and "applies" nothing, reporting what a dry run would have
    patched against it."""

    spec: PipelineSpec
    config: PipelineConfig
    dry_run: bool = True
    off_spec: dict[str, str] = field(default_factory=dict)

    def read(self) -> tuple[PipelineConfig, list[int | None]]:
        return self.config, [None] * len(self.spec.stages)

    def apply(self, config: PipelineConfig) -> ApplyOutcome:
        outcomes = []
        for st, old, new in zip(self.spec.stages, self.config.stages, config.stages, strict=True):
            action = _assumed_action(old, new, self.spec.in_place_resize)
            outcomes.append(StageOutcome(st.name, action, message=f"{old} -> {new} (assumed, no API server)"))
        return ApplyOutcome(tuple(outcomes), dry_run=True)


def _assumed_action(old: StageConfig, new: StageConfig, in_place: bool) -> str:
    """What moving a stage from ``old`` to ``new`` would do, said without an API server: ``unchanged``;
    ``scaled`` (the same pools' variant, batch and cores: replicas or shares change); ``resized`` (with
    ``in_place``, the spec's ``in_place_resize``: only the pools' cores change); else ``rolled``."""
    if old == new:
        return "unchanged"

    def pools(sc: StageConfig, cores: bool = True) -> list[tuple]:
        return sorted((p.variant, p.batch, p.cores if cores else 0) for p in sc.pools)

    if pools(old) == pools(new):
        return "scaled"
    if in_place and [p.with_(cores=0) for p in old.pools] == [p.with_(cores=0) for p in new.pools]:
        return "resized"
    return "rolled"
