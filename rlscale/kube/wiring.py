"""Start the sidecar: credentials, namespace, Prometheus reader, signals, ``/metrics`` and the loop.

`run_sidecar` is what ``rlscale sidecar`` calls once its flags are parsed and its `rlscale.control.Controller`
(the policy behind its guard) is built: the CLI composes the policy, this module wires it to a cluster. Nothing
here knows how policies are made (no agents, no experiments, no CLI).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from rlscale.control import Controller
from rlscale.errors import RlscaleError
from rlscale.spec import PipelineSpec, is_k8s_name

log = logging.getLogger(__name__)

MAX_TOKEN_BYTES = 64 * 1024
IN_POD_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass(frozen=True)
class SidecarLaunch:
    """How to connect and run the sidecar (the ``rlscale sidecar`` flags but the policy's).

    Attributes:
        prometheus_url: Prometheus base URL (http or https; user:password in it is never logged).
        namespace: namespace of the stage Deployments; None: the spec's, else the pod's or kubeconfig's, else
            ``default``.
        kubeconfig: kubeconfig file; None: in-cluster credentials, else ``~/.kube/config``.
        interval_s: pipeline seconds between decisions; None: the spec's.
        window_s: rate/quantile window of the queries; None: the interval, at least 30 s.
        dry_run: send every change as a server-side dry run.
        once: run one step, print its outcome and return (1 when it could not decide).
        allow_system_namespace: allow kube-system, kube-public or kube-node-lease.
        metrics_port: port of the sidecar's ``/metrics`` (0: not served).
        metrics_address: address to serve ``/metrics`` on.
        timeout_s: Prometheus query timeout (wall seconds).
        token_file: file with a bearer token for Prometheus; None: no token.
        verify_tls: verify an https Prometheus' certificate.
        max_backoff_s: longest wait after repeated faults; None: 6 intervals.
        speedup: pipeline seconds per wall second (1 on a real cluster).
        timeline_path: a CSV file to append one row per decision to (`rlscale.timeline`); None: none.
    """

    prometheus_url: str
    namespace: str | None = None
    kubeconfig: str | None = None
    interval_s: float | None = None
    window_s: float | None = None
    dry_run: bool = False
    once: bool = False
    allow_system_namespace: bool = False
    metrics_port: int = 9400
    metrics_address: str = "127.0.0.1"
    timeout_s: float = 3.0
    token_file: str | None = None
    verify_tls: bool = True
    max_backoff_s: float | None = None
    speedup: float = 1.0
    timeline_path: str | None = None


def check_url(url: str, flag: str) -> str:
    """``url`` without a trailing slash, if it is an http(s) URL; else `RlscaleError` naming ``flag``."""
    from urllib.parse import urlparse

    from rlscale.kube.prometheus import redact_url

    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise RlscaleError(f"{flag} {redact_url(url)!r}: need an http(s) URL such as http://prometheus:9090")
    return url.rstrip("/")


def read_token(path: str) -> str:
    """The bearer token in ``path``: one line of printable ASCII (what an HTTP header can carry), at most 64 KiB.

    Raises:
        RlscaleError: the file cannot be read, is larger, or holds anything else (the token is never shown).
    """
    flag = f"--prometheus-token-file {path}"
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_TOKEN_BYTES + 1)
    except OSError as exc:
        raise RlscaleError(f"{flag}: cannot read the token: {exc.strerror or exc}") from None
    if len(data) > MAX_TOKEN_BYTES:
        raise RlscaleError(f"{flag}: larger than {MAX_TOKEN_BYTES // 1024} KiB; is it a token file?")
    token = data.strip()
    if not token or not all(33 <= byte <= 126 for byte in token):
        raise RlscaleError(f"{flag}: the token must be one line of printable ASCII text (no spaces)")
    return token.decode("ascii")


def kube_api(kubeconfig: str | None):
    """An AppsV1Api from ``kubeconfig``, else the pod's service account, else ~/.kube/config."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    try:
        if kubeconfig:
            if not Path(kubeconfig).is_file():
                raise RlscaleError(f"--kubeconfig {kubeconfig}: no such file")
            config.load_kube_config(config_file=kubeconfig)
        else:
            try:
                config.load_incluster_config()
            except ConfigException:
                config.load_kube_config()
    except (ConfigException, OSError, ValueError, TypeError) as exc:
        raise RlscaleError(
            f"no usable Kubernetes credentials ({exc}); run in a pod with a service account or pass --kubeconfig"
        ) from None
    cfg = client.Configuration.get_default_copy()
    cfg.retries = 0  # no hidden client-side retries: the sidecar's backoff decides, and says so in its log
    return client.AppsV1Api(client.ApiClient(cfg))


def discover_namespace(arg: str | None, spec_ns: str | None, kubeconfig: str | None) -> str:
    """``arg``, else the spec's, else the pod's (in a cluster) or the kubeconfig context's, else ``default``."""
    if arg:
        return arg
    if spec_ns:
        return spec_ns
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    if kubeconfig or not IN_POD_NAMESPACE.exists():
        try:
            _contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
            if active and active.get("context", {}).get("namespace"):
                return active["context"]["namespace"]
        except (ConfigException, OSError, ValueError, TypeError):
            pass
    return IN_POD_NAMESPACE.read_text().strip() if IN_POD_NAMESPACE.exists() else "default"


def _namespace(spec: PipelineSpec, launch: SidecarLaunch) -> str:
    """The checked namespace of the stage Deployments (`discover_namespace`; system namespaces refused)."""
    from rlscale.kube.objects import system_namespace_problem

    if launch.namespace is not None and not is_k8s_name(launch.namespace):
        raise RlscaleError(
            f"--namespace {launch.namespace!r}: not a Kubernetes namespace name (lowercase, digits, '-')"
        )
    namespace = discover_namespace(launch.namespace, spec.kubernetes.namespace, launch.kubeconfig)
    if not launch.allow_system_namespace:
        where = (
            "--namespace"
            if launch.namespace
            else "the spec's kubernetes.namespace"
            if spec.kubernetes.namespace
            else "the namespace (of the pod or the kubeconfig context)"
        )
        problem = system_namespace_problem(namespace, where)
        if problem:
            raise RlscaleError(problem)
    return namespace


def run_sidecar(spec: PipelineSpec, controller: Controller, launch: SidecarLaunch) -> int:
    """Connect to Prometheus and the Kubernetes API and run the loop (`rlscale.kube.sidecar.Sidecar`) until
    SIGTERM/SIGINT (exit 0), or one step with ``launch.once`` (exit 1 when it could not decide).

    Raises:
        RlscaleError: bad input (URL, namespace, token file, credentials, metrics address); nothing was changed.
    """
    from rlscale.kube.actuator import DeploymentActuator
    from rlscale.kube.cluster import KubernetesCluster
    from rlscale.kube.prometheus import MetricsUnavailable, PrometheusReader, duration, redact_url
    from rlscale.kube.sidecar import Sidecar, SidecarMetrics, SidecarSettings

    url = check_url(launch.prometheus_url, "--prometheus")
    # the flags' ranges are checked by the CLI; the spec's interval by the spec
    interval_s = launch.interval_s if launch.interval_s is not None else spec.interval_s
    window_s = launch.window_s if launch.window_s is not None else max(interval_s, 30.0)
    namespace = _namespace(spec, launch)
    token = read_token(launch.token_file) if launch.token_file else None
    reader = PrometheusReader(
        url,
        spec.name,
        templates=dict(spec.kubernetes.promql),
        timeout_s=launch.timeout_s,
        bearer_token=token,
        verify_tls=launch.verify_tls,
    )
    if launch.once:  # nothing to hold on to in a one-shot run: an unreachable Prometheus ends it at once
        try:
            reader.arrival_rate_rps(spec.stages[0].name, window=duration(window_s / launch.speedup))
        except MetricsUnavailable as exc:
            print(f"rlscale sidecar: error: {exc}; nothing was changed", file=sys.stderr)
            return 1
    actuator = DeploymentActuator(spec, kube_api(launch.kubeconfig), namespace, dry_run=launch.dry_run)
    cluster = KubernetesCluster(
        spec, reader, actuator, interval_s=interval_s, window_s=window_s, speedup=launch.speedup
    )
    for handler in logging.getLogger().handlers:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    import prometheus_client

    prometheus_client.disable_created_metrics()  # no *_created series per label set: this process only serves ours
    metrics = SidecarMetrics()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    settings = SidecarSettings(interval_s=interval_s, max_backoff_s=launch.max_backoff_s, speedup=launch.speedup)
    policy, safety = controller.policy, controller.guard
    sidecar = Sidecar(cluster, policy, safety, settings, metrics, stop)
    if launch.timeline_path:
        from rlscale.timeline import TimelineWriter

        sidecar.timeline = TimelineWriter(Path(launch.timeline_path), spec)
    server = None
    if launch.metrics_port:
        try:
            server = metrics.serve(launch.metrics_port, launch.metrics_address, health=sidecar.health)
        except OSError as exc:
            raise RlscaleError(
                f"cannot serve metrics on {launch.metrics_address}:{launch.metrics_port}: {exc}"
            ) from None
    log.info(
        "sidecar for %s: policy %s%s, namespace %s, Prometheus %s, every %gs (window %gs)%s",
        spec.name,
        policy.name,
        " + safety" if safety is not None else "",
        namespace,
        redact_url(url),
        interval_s,
        window_s,
        ", DRY RUN (server-side, nothing changes)" if launch.dry_run else "",
    )
    if launch.speedup != 1:
        log.info(
            "the pipeline's clock runs %gx the wall clock: every %gs of wall time",
            launch.speedup,
            interval_s / launch.speedup,
        )
    try:
        if launch.once:
            report = sidecar.run_once()
            if report.outcome in ("held", "failed"):
                print(f"rlscale sidecar: error: {report.message}", file=sys.stderr)
                return 1
            print(report.message)
            return 0
        return sidecar.run()
    finally:
        if server is not None:
            server.shutdown()
