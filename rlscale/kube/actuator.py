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

A 429's ``Retry-After`` (seconds or an HTTP date) travels with the error (`KubeApiError.retry_after_s`,
`ApplyOutcome.retry_after_s`) for the sidecar to wait out.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rlscale.errors import RlscaleError
from rlscale.kube.objects import LABEL_PIPELINE, LABEL_STAGE, read_stage, ready_replicas, template_patch
from rlscale.spec import PipelineSpec
from rlscale.types import PipelineConfig, StageConfig

log = logging.getLogger(__name__)

TEMPORARY_KINDS = ("throttled", "server", "timeout")
PERMANENT_KINDS = ("unauthorized", "forbidden", "not_found", "invalid", "deployment")
ERROR_KINDS = ("conflict", *TEMPORARY_KINDS, *PERMANENT_KINDS)


class KubeApiError(RlscaleError):
    """A Kubernetes API call failed; ``kind`` is one of `ERROR_KINDS`.

    ``retry_after_s``: the seconds (wall clock) the API server asked to wait with a 429's ``Retry-After``, or None.
    """

    def __init__(self, kind: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after_s = retry_after_s

    @property
    def temporary(self) -> bool:
        return self.kind in TEMPORARY_KINDS or self.kind == "conflict"


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


@dataclass(frozen=True)
class StageOutcome:
    """What happened to one stage: ``unchanged``, ``scaled`` (replicas only), ``rolled`` (pod template),
    ``failed`` (with the error ``kind`` and a message) or ``skipped`` (not tried: the API server throttled an
    earlier stage's call). ``retry_after_s``: a 429's ``Retry-After``, seconds."""

    stage: str
    action: str
    kind: str | None = None
    message: str = ""
    attempts: int = 1
    retry_after_s: float | None = None


@dataclass(frozen=True)
class ApplyOutcome:
    """The result of applying one configuration, stage by stage."""

    stages: tuple[StageOutcome, ...] = field(default_factory=tuple)
    dry_run: bool = False

    @property
    def changed(self) -> list[str]:
        return [o.stage for o in self.stages if o.action in ("scaled", "rolled")]

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

    def __post_init__(self) -> None:
        self._names = dict(self.spec.kubernetes.deployments)

    def _call(self, fn, *args, **kwargs) -> Any:
        try:
            response = fn(*args, _request_timeout=self.timeout_s, _preload_content=False, **kwargs)
            return json.loads(response.data or b"{}")
        except Exception as exc:  # noqa: BLE001 - every client failure becomes a classified KubeApiError
            kind = classify(exc)
            message = _describe(kind, exc, self.host, self.credentials, self.timeout_s)
            raise KubeApiError(kind, message, retry_after_s(exc)) from None

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
        """The configuration the Deployments ask for, and the replicas Kubernetes reports ready per stage.

        Raises:
            KubeApiError: a Deployment could not be read, or (kind ``deployment``) does not describe a
                configuration this pipeline allows.
        """
        stages, ready = [], []
        off_spec: dict[str, str] = {}
        for st in self.spec.stages:
            dep = self.read_deployment(st.name)
            self._seen[st.name] = dep
            try:
                config, reason = read_stage(dep, self.spec.kubernetes, st)
            except RlscaleError as exc:
                raise KubeApiError("deployment", str(exc)) from None
            stages.append(config)
            ready.append(ready_replicas(dep))
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
                if current == target and off_spec is None:
                    return StageOutcome(name, "unchanged", attempts=attempt)
                dep_name = dep["metadata"]["name"]
                same = (current.variant, current.batch, current.cores) == (target.variant, target.batch, target.cores)
                if same and off_spec is None:
                    body = {"spec": {"replicas": target.replicas}}
                    self._call(self.api.patch_namespaced_deployment_scale, dep_name, self.namespace, body, **dry)
                    return StageOutcome(name, "scaled", message=f"{current} -> {target}", attempts=attempt)
                body = template_patch(dep, self.spec.kubernetes, target, self.spec.batch_timeout_s)
                self._call(self.api.patch_namespaced_deployment, dep_name, self.namespace, body, **dry)
                fixed = f" (was off-spec: {off_spec})" if off_spec is not None else ""
                return StageOutcome(name, "rolled", message=f"{current} -> {target}{fixed}", attempts=attempt)
            except KubeApiError as exc:
                if exc.kind == "conflict" and attempt <= self.conflict_retries:
                    log.info("stage %s: conflict (%s); re-reading and retrying", name, exc)
                    continue
                return StageOutcome(name, "failed", exc.kind, str(exc), attempt, exc.retry_after_s)


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
            if old == new:
                action = "unchanged"
            elif (old.variant, old.batch, old.cores) == (new.variant, new.batch, new.cores):
                action = "scaled"
            else:
                action = "rolled"
            outcomes.append(StageOutcome(st.name, action, message=f"{old} -> {new} (assumed, no API server)"))
        return ApplyOutcome(tuple(outcomes), dry_run=True)
