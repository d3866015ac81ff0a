"""Reading and changing a pipeline's stage Deployments through the official Kubernetes client.

Errors are values, not exceptions through the loop: every API failure is classified (`classify`) as

| kind | HTTP | what the sidecar does |
|---|---|---|
| ``conflict`` | 409 | re-read the Deployment and retry at once (up to ``conflict_retries``) |
| ``server`` | 5xx, 429 | temporary: keep the config, back off, retry |
| ``timeout`` | no answer | temporary: keep the config, back off, retry |
| ``unauthorized`` / ``forbidden`` / ``not_found`` | 401 / 403 / 404 | permanent: one clear log line, keep running |
| ``invalid`` | other 4xx | permanent: the request itself is wrong |

The API calls made are exactly those `rlscale.kube.objects.rbac_rules` grants: ``get`` on deployments, ``list``
only to find a stage the spec does not name (by label), JSON ``patch`` on deployments (pod template) and
``patch`` on deployments/scale (replicas only). With every stage named, each call names its Deployment, which
lets the Role restrict them all with ``resourceNames``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from rlscale.errors import RlscaleError
from rlscale.kube.objects import LABEL_PIPELINE, LABEL_STAGE, read_stage_config, ready_replicas, template_patch
from rlscale.spec import PipelineSpec
from rlscale.types import PipelineConfig, StageConfig

log = logging.getLogger(__name__)

TEMPORARY_KINDS = ("server", "timeout")
PERMANENT_KINDS = ("unauthorized", "forbidden", "not_found", "invalid", "deployment")
ERROR_KINDS = ("conflict", *TEMPORARY_KINDS, *PERMANENT_KINDS)


class KubeApiError(RlscaleError):
    """A Kubernetes API call failed; ``kind`` is one of `ERROR_KINDS`."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind

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
        if status == 429 or status >= 500:
            return "server"
        if status == 0:
            return "timeout"
        return "invalid"
    return "timeout"  # urllib3 timeouts, refused connections, resets: the API server did not answer


def _describe(kind: str, exc: BaseException) -> str:
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        reason = exc.reason or ""
        try:
            reason = json.loads(exc.body or "{}").get("message") or reason
        except (ValueError, AttributeError):
            pass
        hint = " (the sidecar's Role must grant this; see `rlscale manifests`)" if kind == "forbidden" else ""
        return f"HTTP {exc.status} {reason}".strip() + hint
    return type(exc).__name__


@dataclass(frozen=True)
class StageOutcome:
    """What happened to one stage: ``unchanged``, ``scaled`` (replicas only), ``rolled`` (pod template) or
    ``failed`` (with the error ``kind`` and a message)."""

    stage: str
    action: str
    kind: str | None = None
    message: str = ""
    attempts: int = 1


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
    """

    spec: PipelineSpec
    api: Any
    namespace: str = "default"
    dry_run: bool = False
    timeout_s: float = 5.0
    conflict_retries: int = 3
    _names: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    # each stage's Deployment as `read` last saw it: `apply` patches from it once instead of reading it again
    # (a stale copy costs a 409 and a re-read, thanks to the resourceVersion the patch carries)
    _seen: dict[str, dict[str, Any]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self._names = dict(self.spec.kubernetes.deployments)

    def _call(self, fn, *args, **kwargs) -> Any:
        try:
            response = fn(*args, _request_timeout=self.timeout_s, _preload_content=False, **kwargs)
            return json.loads(response.data or b"{}")
        except Exception as exc:  # noqa: BLE001 - every client failure becomes a classified KubeApiError
            kind = classify(exc)
            raise KubeApiError(kind, _describe(kind, exc)) from None

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
            raise KubeApiError(exc.kind, f"Deployment {self.namespace}/{name}: {exc}") from None

    def read(self) -> tuple[PipelineConfig, list[int | None]]:
        """The configuration the Deployments ask for, and the replicas Kubernetes reports ready per stage.

        Raises:
            KubeApiError: a Deployment could not be read, or (kind ``deployment``) does not describe a
                configuration this pipeline allows.
        """
        stages, ready = [], []
        for st in self.spec.stages:
            dep = self.read_deployment(st.name)
            self._seen[st.name] = dep
            try:
                stages.append(read_stage_config(dep, self.spec.kubernetes, st))
            except RlscaleError as exc:
                raise KubeApiError("deployment", str(exc)) from None
            ready.append(ready_replicas(dep))
        return PipelineConfig(tuple(stages)), ready

    def apply(self, config: PipelineConfig) -> ApplyOutcome:
        """Move every stage to ``config``: the scale subresource when only replicas change, else one JSON patch
        of the pod template and replicas. Never raises for API errors; see the returned outcome."""
        outcomes = []
        for st, target in zip(self.spec.stages, config.stages, strict=True):
            outcomes.append(self._apply_stage(st.name, st, target))
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
                    current = read_stage_config(dep, self.spec.kubernetes, stage)
                except RlscaleError as exc:
                    return StageOutcome(name, "failed", "deployment", str(exc), attempt)
                if current == target:
                    return StageOutcome(name, "unchanged", attempts=attempt)
                dep_name = dep["metadata"]["name"]
                if (current.variant, current.batch, current.cores) == (target.variant, target.batch, target.cores):
                    body = {"spec": {"replicas": target.replicas}}
                    self._call(self.api.patch_namespaced_deployment_scale, dep_name, self.namespace, body, **dry)
                    return StageOutcome(name, "scaled", message=f"{current} -> {target}", attempts=attempt)
                body = template_patch(dep, self.spec.kubernetes, target)
                self._call(self.api.patch_namespaced_deployment, dep_name, self.namespace, body, **dry)
                return StageOutcome(name, "rolled", message=f"{current} -> {target}", attempts=attempt)
            except KubeApiError as exc:
                if exc.kind == "conflict" and attempt <= self.conflict_retries:
                    log.info("stage %s: conflict (%s); re-reading and retrying", name, exc)
                    continue
                return StageOutcome(name, "failed", exc.kind, str(exc), attempt)
