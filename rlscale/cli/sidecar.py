"""``rlscale sidecar``: build the live policy behind its guard (the registry) and hand it to the cluster loop
(`rlscale.kube.wiring.run_sidecar`), which does the rest: credentials, namespace, signals, ``/metrics``."""

from __future__ import annotations

import argparse
import logging

from rlscale.cli.args import (
    add_live_flags,
    add_planner_flags,
    add_set,
    add_spec,
    float_in,
    int_in,
    load_spec,
    policy_options,
)
from rlscale.errors import RlscaleError

log = logging.getLogger("rlscale")


def register(sub) -> None:
    p = sub.add_parser(
        "sidecar",
        help="autoscale a pipeline on Kubernetes: Prometheus metrics in, Deployment patches out, every interval",
        description=(
            "Every interval: read the stage Deployments and the pipeline's metrics from Prometheus, let the policy "
            "propose a configuration, project it onto the SLA-feasible set (safety layer), and patch the "
            "Deployments that change. Faults never stop the loop: Prometheus down -> hold and back off; 409 -> "
            "re-read and retry; 5xx/timeouts -> back off; 401/403/404 -> log once and keep running. SIGTERM ends "
            "it after the current step with exit 0. With --once, a failed step exits 1."
        ),
    )
    add_spec(p, "--spec")
    p.add_argument(
        "--prometheus",
        required=True,
        metavar="URL",
        help="Prometheus base URL with its path prefix, e.g. http://prom:9090 (basic auth: user:password in the URL, "
        "or the env vars RLSCALE_PROMETHEUS_USERNAME and RLSCALE_PROMETHEUS_PASSWORD)",
    )
    p.add_argument(
        "--namespace",
        help="namespace of the stage Deployments (default: the spec's, the pod's or kubeconfig's, else default)",
    )
    add_live_flags(p)
    p.add_argument("--kubeconfig", metavar="PATH", help="kubeconfig file (default: in-cluster, else ~/.kube/config)")
    p.add_argument(
        "--once",
        action="store_true",
        help="run one step and exit (non-zero if it could not decide); with --dry-run and no reachable API server, "
        "decide from the spec's starting configuration",
    )
    p.add_argument(
        "--metrics-port",
        type=int_in(0, 65535),
        default=9400,
        metavar="P",
        help="port of the sidecar's /metrics (0: off; 9400)",
    )
    p.add_argument(
        "--metrics-address", default="127.0.0.1", metavar="A", help="address to serve /metrics on (default 127.0.0.1)"
    )
    p.add_argument(
        "--timeout",
        type=float_in(0.1, 300.0),
        default=3.0,
        metavar="S",
        help="Prometheus query timeout, 0.1 to 300 s of wall time (default 3)",
    )
    p.add_argument(
        "--max-staleness",
        type=float_in(1.0, 300.0),
        default=300.0,
        metavar="S",
        help="act only on Prometheus samples at most S s of wall time old, 1 to 300 (default 300: Prometheus' own "
        "staleness); older samples, samples more than 30 s in the future, several series for one query and partial "
        "answers are no data: the sidecar holds",
    )
    p.add_argument(
        "--prometheus-token-file", metavar="PATH", help="file with a bearer token for Prometheus (managed Prometheus)"
    )
    p.add_argument("--prometheus-insecure", action="store_true", help="do not verify an https Prometheus' certificate")
    p.add_argument(
        "--max-backoff",
        type=float_in(1.0, 86400.0),
        metavar="S",
        help="longest wait after repeated faults, 1 to 86400 s (default 6 intervals)",
    )
    p.add_argument(
        "--speedup",
        type=float_in(0.01, 1000.0),
        default=1.0,
        metavar="X",
        help="pipeline seconds per wall second, 0.01 to 1000: 1 for a real cluster (default); N drives a twin running "
        "N times faster (intervals, windows and backoff shrink N-fold)",
    )
    p.add_argument(
        "--timeline",
        metavar="FILE.csv",
        help="append one CSV row per decision: load, each stage's variant/batch/cores/replicas/p99/utilisation, "
        "e2e p99, violations, cost, queued requests, what the guard changed (header written once)",
    )
    add_set(p)
    add_planner_flags(p)
    p.set_defaults(func=cmd_sidecar)


def live_controller(args: argparse.Namespace, spec):
    """The sidecar's policy behind its guard (a `Controller`). An explicit ``--agent`` must fit the spec (else one
    line, exit 2); only the bundled agent, used by default, falls back to ``ipa`` with a warning when it does not."""
    from agents.actor import AgentMismatch
    from agents.inference import bundled_agent
    from rlscale.cli.manifests import AGENT_POLICIES, no_bundled_agent_message
    from rlscale.policies.registry import default_live_policy, make_live_policy

    options = policy_options(args, [args.policy] if args.policy is not None else None)
    if args.policy is None and args.agent is None and default_live_policy(spec) == "ppo":
        try:
            return make_live_policy("ppo", spec, options)
        except AgentMismatch as exc:  # e.g. a spec edited from a bundled one: the bundled agent does not fit it
            log.warning("the bundled agent does not fit this spec (%s); deciding with ipa", exc)
            return make_live_policy("ipa", spec, options)
    policy = args.policy or ("ppo" if args.agent is not None else "ipa")
    if policy in AGENT_POLICIES and args.agent is None and not bundled_agent(spec.name).exists():
        raise RlscaleError(no_bundled_agent_message(policy, spec.name))
    try:
        return make_live_policy(policy, spec, options)
    except AgentMismatch as exc:  # name the flags that give the sidecar (or a cluster's sidecar) an agent
        raise AgentMismatch(
            f"{exc}; then pass --agent RUN/actor.npz (rlscale manifests --agent RUN/actor.npz for a cluster)"
        ) from None


def cmd_sidecar(args: argparse.Namespace) -> int:
    import os

    from rlscale.kube.wiring import SidecarLaunch, check_url, prometheus_auth_from_env, run_sidecar

    spec = load_spec(args.spec, args)
    if args.timeline:  # a path that cannot take the rows fails now, not after connecting
        from pathlib import Path

        from rlscale.timeline import check_appendable

        check_appendable(Path(args.timeline), spec)
    launch = SidecarLaunch(
        prometheus_url=check_url(args.prometheus, "--prometheus"),
        namespace=args.namespace,
        kubeconfig=args.kubeconfig,
        interval_s=args.interval,
        window_s=args.window,
        dry_run=args.dry_run,
        once=args.once,
        allow_system_namespace=args.allow_system_namespace,
        metrics_port=args.metrics_port,
        metrics_address=args.metrics_address,
        timeout_s=args.timeout,
        token_file=args.prometheus_token_file,
        verify_tls=not args.prometheus_insecure,
        max_backoff_s=args.max_backoff,
        speedup=args.speedup,
        basic_auth=prometheus_auth_from_env(os.environ),
        timeline_path=args.timeline,
        max_staleness_s=args.max_staleness,
    )
    if args.once:  # a one-shot run prints its outcome; the log says only what went wrong
        logging.getLogger("rlscale").setLevel(logging.WARNING)
    controller = live_controller(args, spec)  # bad input (an agent that does not fit) before any network call
    return run_sidecar(spec, controller, launch)
