"""Start the sidecar: credentials, namespace, Prometheus reader, signals, ``/metrics`` and the loop.

`run_sidecar` is what ``rlscale sidecar`` calls once its flags are parsed and its `rlscale.control.Controller`
(the policy behind its guard) is built: the CLI composes the policy, this module wires it to a cluster. Nothing
here knows how policies are made (no agents, no policy registry, no CLI).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rlscale.control import Controller
from rlscale.errors import RlscaleError
from rlscale.inputs import MAX_KUBECONFIG_BYTES, load_yaml, read_bytes_limited, read_text_limited
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
        basic_auth: Prometheus basic-auth (user, password) from the environment (`PROMETHEUS_USERNAME_ENV`,
            `PROMETHEUS_PASSWORD_ENV`, set by the manifests' Secret); None: none, or the URL's own.
        timeline_path: a CSV file to append one row per decision to (`rlscale.timeline`); None: none.
        max_staleness_s: the oldest Prometheus sample acted on (wall seconds before the query; 300: Prometheus'
            own staleness).
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
    basic_auth: tuple[str, str] | None = field(default=None, repr=False)
    timeline_path: str | None = None
    max_staleness_s: float = 300.0


def prometheus_auth_from_env(environ: Mapping[str, str]) -> tuple[str, str] | None:
    """The Prometheus basic-auth credentials in ``environ`` (the manifests' Secret), or None when neither is set.

    Raises:
        RlscaleError: only one of the two variables is set.
    """
    from rlscale.kube.manifests import PROMETHEUS_PASSWORD_ENV, PROMETHEUS_USERNAME_ENV

    user, password = environ.get(PROMETHEUS_USERNAME_ENV), environ.get(PROMETHEUS_PASSWORD_ENV)
    if user is None and password is None:
        return None
    if not user or password is None:
        raise RlscaleError(
            f"Prometheus basic auth needs both {PROMETHEUS_USERNAME_ENV} and {PROMETHEUS_PASSWORD_ENV} set (the "
            "Secret `rlscale manifests` writes holds both)"
        )
    return user, password


def check_url(url: str, flag: str) -> str:
    """``url`` without a trailing slash, if it is an http(s) base URL (`rlscale.urls.check_http_url`); else
    `RlscaleError` naming ``flag``."""
    from rlscale.urls import check_http_url

    return check_http_url(url, flag, "; give a bearer token with --prometheus-token-file instead")


def read_token(path: str) -> str:
    """The bearer token in ``path``: one line of printable ASCII (what an HTTP header can carry), at most 64 KiB.

    Raises:
        RlscaleError: the file cannot be read, is larger, or holds anything else (the token is never shown).
    """
    flag = f"--prometheus-token-file {path}"
    try:
        data = read_bytes_limited(path, MAX_TOKEN_BYTES, RlscaleError, "token")
    except RlscaleError as exc:
        raise RlscaleError(f"--prometheus-token-file {exc}") from None
    token = data.strip()
    if not token or not all(33 <= byte <= 126 for byte in token):
        raise RlscaleError(f"{flag}: the token must be one line of printable ASCII text (no spaces)")
    return token.decode("ascii")


def check_kubeconfig(path: str) -> None:
    """Read ``--kubeconfig`` once with rlscale's limits (a regular file, at most `MAX_KUBECONFIG_BYTES`, UTF-8, YAML
    without an alias bomb, a mapping) before the Kubernetes client reads it, which has none.

    Raises:
        RlscaleError: one line naming the file and what is wrong with it.
    """
    if not Path(path).exists():
        raise RlscaleError(f"--kubeconfig {path}: no such file")
    try:
        text = read_text_limited(path, MAX_KUBECONFIG_BYTES, RlscaleError, "kubeconfig")
        document = load_yaml(text, str(path), RlscaleError)
    except RlscaleError as exc:
        raise RlscaleError(f"--kubeconfig {exc}") from None
    if not isinstance(document, dict):
        raise RlscaleError(f"--kubeconfig {path}: not a kubeconfig (a YAML mapping with clusters, users, contexts)")


def connect(kubeconfig: str | None):
    """An AppsV1Api from ``kubeconfig``, else the pod's service account, else ~/.kube/config (``$KUBECONFIG``);
    and where its server and credentials came from, in words, with the setting that changes them (for messages).

    Raises:
        RlscaleError: no usable credentials (or no such ``kubeconfig``).
    """
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException
    from kubernetes.config.kube_config import KUBE_CONFIG_DEFAULT_LOCATION

    path = kubeconfig
    try:
        if kubeconfig:
            check_kubeconfig(kubeconfig)
            config.load_kube_config(config_file=kubeconfig)
            source = None
        else:
            try:
                config.load_incluster_config()
                source = (
                    "in-cluster: the pod's service account and KUBERNETES_SERVICE_HOST; check its token, the "
                    "cluster's network and any NetworkPolicy"
                )
            except ConfigException:
                path = KUBE_CONFIG_DEFAULT_LOCATION
                config.load_kube_config()
                source = None
    except (ConfigException, OSError, ValueError, TypeError) as exc:
        raise RlscaleError(
            f"no usable Kubernetes credentials ({exc}); run in a pod with a service account or pass --kubeconfig"
        ) from None
    if source is None:
        try:
            _contexts, active = config.list_kube_config_contexts(config_file=path)
            context = (active or {}).get("name", "?")
        except (ConfigException, OSError, ValueError, TypeError):
            context = "?"
        source = f"kubeconfig {path}, context {context}; change them with --kubeconfig or kubectl config use-context"
    cfg = client.Configuration.get_default_copy()
    cfg.retries = 0  # no hidden client-side retries: the sidecar's backoff decides, and says so in its log
    return client.AppsV1Api(client.ApiClient(cfg)), source


def kube_api(kubeconfig: str | None):
    """An AppsV1Api from ``kubeconfig``, else the pod's service account, else ~/.kube/config (`connect`)."""
    return connect(kubeconfig)[0]


def discover_namespace(arg: str | None, spec_ns: str | None, kubeconfig: str | None) -> str:
    """``arg``, else the spec's, else the pod's (in a cluster) or the kubeconfig context's, else ``default``."""
    if arg:
        return arg
    if spec_ns:
        return spec_ns
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    if kubeconfig:
        check_kubeconfig(kubeconfig)
    if kubeconfig or not IN_POD_NAMESPACE.exists():
        try:
            _contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
            if active and active.get("context", {}).get("namespace"):
                return active["context"]["namespace"]
        except (ConfigException, OSError, ValueError, TypeError):
            pass
    return IN_POD_NAMESPACE.read_text().strip() if IN_POD_NAMESPACE.exists() else "default"


def _namespace(spec: PipelineSpec, launch: SidecarLaunch) -> tuple[str, str]:
    """The checked namespace of the stage Deployments (`discover_namespace`: ``--namespace``, else the spec's
    ``kubernetes.namespace``, where ``rlscale manifests`` puts the Role, else the pod's or the kubeconfig
    context's, else ``default``; system namespaces refused), and where it came from."""
    from rlscale.kube.objects import system_namespace_problem

    if launch.namespace is not None and not is_k8s_name(launch.namespace):
        raise RlscaleError(
            f"--namespace {launch.namespace!r}: not a Kubernetes namespace name (lowercase, digits, '-')"
        )
    namespace = discover_namespace(launch.namespace, spec.kubernetes.namespace, launch.kubeconfig)
    where = (
        "--namespace"
        if launch.namespace
        else "the spec's kubernetes.namespace"
        if spec.kubernetes.namespace
        else "the namespace (of the pod or the kubeconfig context)"
    )
    if not launch.allow_system_namespace:
        problem = system_namespace_problem(namespace, where)
        if problem:
            raise RlscaleError(problem)
    return namespace, where


def _actuator(spec: PipelineSpec, namespace: str, launch: SidecarLaunch):
    """The Deployment actuator; for ``--once --dry-run`` without a usable API server (no credentials, or the
    Deployments cannot be read), an `AssumedActuator` on the spec's starting configuration, said on stderr."""
    from rlscale.kube.actuator import AssumedActuator, DeploymentActuator, KubeApiError
    from rlscale.kube.objects import starting_config

    offline = launch.dry_run and launch.once
    try:
        api, credentials = connect(launch.kubeconfig)
    except RlscaleError as exc:
        if not offline:
            raise
        reason = str(exc)
    else:
        actuator = DeploymentActuator(spec, api, namespace, dry_run=launch.dry_run, credentials=credentials)
        if not offline:
            return actuator
        try:
            actuator.read()
            return actuator
        except KubeApiError as exc:
            if exc.kind == "deployment":  # reached, but a Deployment is wrong: that is the news, not a guess
                raise RlscaleError(f"cannot read the Deployments: {exc}") from None
            reason = f"cannot read the Deployments: {exc}"
    assumed = starting_config(spec)
    print(
        f"rlscale sidecar: warning: {reason}; --once --dry-run decides from the spec's starting configuration "
        f"({assumed}) instead, and sends nothing to the API server",
        file=sys.stderr,
    )
    return AssumedActuator(spec, assumed)


def run_sidecar(spec: PipelineSpec, controller: Controller, launch: SidecarLaunch) -> int:
    """Connect to Prometheus and the Kubernetes API and run the loop (`rlscale.kube.sidecar.Sidecar`) until
    SIGTERM/SIGINT (exit 0), or one step with ``launch.once`` (exit 1 when it could not decide).

    Raises:
        RlscaleError: bad input (URL, namespace, token file, credentials, metrics address); nothing was changed.
    """
    from rlscale.kube.cluster import KubernetesCluster
    from rlscale.kube.prometheus import MetricsUnavailable, PrometheusReader, duration, redact_url
    from rlscale.kube.sidecar import Sidecar, SidecarMetrics, SidecarSettings

    url = check_url(launch.prometheus_url, "--prometheus")
    # the flags' ranges are checked by the CLI; the spec's interval by the spec
    interval_s = launch.interval_s if launch.interval_s is not None else spec.interval_s
    window_s = launch.window_s if launch.window_s is not None else max(interval_s, 30.0)
    namespace, namespace_from = _namespace(spec, launch)
    token = read_token(launch.token_file) if launch.token_file else None
    if launch.basic_auth is not None and redact_url(url) != url:
        raise RlscaleError(
            "Prometheus credentials both in the --prometheus URL and in the environment (the manifests' Secret); "
            "keep one"
        )
    reader = PrometheusReader(
        url,
        spec.name,
        templates=dict(spec.kubernetes.promql),
        timeout_s=launch.timeout_s,
        bearer_token=token,
        verify_tls=launch.verify_tls,
        basic_auth=launch.basic_auth,
        max_staleness_s=launch.max_staleness_s,
    )
    if launch.once:  # nothing to hold on to in a one-shot run: an unreachable Prometheus ends it at once
        try:
            reader.arrival_rate_rps(spec.stages[0].name, window=duration(window_s / launch.speedup))
        except MetricsUnavailable as exc:
            print(f"rlscale sidecar: error: {exc}; nothing was changed", file=sys.stderr)
            return 1
    actuator = _actuator(spec, namespace, launch)
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
        "sidecar for %s: policy %s%s, namespace %s (%s), Prometheus %s, every %gs (window %gs)%s",
        spec.name,
        policy.name,
        " + safety" if safety is not None else "",
        namespace,
        namespace_from,
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
