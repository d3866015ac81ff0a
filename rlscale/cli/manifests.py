"""``rlscale manifests``: the Kubernetes YAML that runs the sidecar (`rlscale.kube.manifests`)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import tempfile
from pathlib import Path

from rlscale.cli.args import add_guard, add_live_flags, add_set, add_spec, guard_flag, spec_file
from rlscale.errors import RlscaleError
from rlscale.inputs import loads_json

log = logging.getLogger("rlscale")

AGENT_POLICIES = ("ppo", "ppo-raw")


def register(sub) -> None:
    p = sub.add_parser(
        "manifests",
        help="print the Kubernetes manifests that deploy the sidecar (ServiceAccount, Role, ConfigMap, Deployment)",
        description=(
            "Print, as YAML for `kubectl apply -f -`, what runs the sidecar in a cluster: a ServiceAccount, a Role "
            "with only the verbs the sidecar calls (get/list/patch deployments, patch deployments/scale; only on "
            "the named Deployments, and no list, when the spec names every stage's), its RoleBinding, a ConfigMap "
            "with the spec, and the sidecar's Deployment; for a spec with variant pools (max_pools > 1) also one "
            "Deployment and Service per (stage, variant) and the stage's HTTPRoute, whose weights the sidecar sets "
            "(get/patch httproutes). The --policy, --interval, --window, --guard and --dry-run "
            "given here become the sidecar's arguments. --agent and --tuning ship a trained agent or an ipa-tuned "
            "tuning in a ConfigMap; credentials in the --prometheus URL go into a Secret. A policy that cannot run "
            "with what is rendered (ppo without an agent) is refused. System namespaces (kube-system...) need "
            "--allow-system-namespace."
        ),
    )
    add_spec(p, "--spec")
    p.add_argument(
        "--namespace",
        default="default",
        help="namespace of the sidecar and of the stage Deployments, unless the spec's kubernetes.namespace names "
        "another (default: default)",
    )
    p.add_argument("--image", default="rlscale:latest", help="the sidecar's image (default rlscale:latest)")
    p.add_argument(
        "--prometheus",
        default="http://prometheus-server.monitoring.svc:9090",
        metavar="URL",
        help="Prometheus URL as seen from the pod (default http://prometheus-server.monitoring.svc:9090); "
        "user:password in it goes into a Secret, not into the sidecar's args",
    )
    add_live_flags(p)
    p.add_argument(
        "--agent",
        metavar="PATH",
        help="a trained agent (a run's actor.npz, at most 900 KiB) to ship in a ConfigMap; the sidecar runs it "
        "(selects --policy ppo unless given; checked to fit the spec)",
    )
    p.add_argument(
        "--tuning",
        metavar="FILE.json",
        help="a tuning (rlscale tune --out FILE) to ship in a ConfigMap, for ipa-tuned or hpa-tuned (selects --policy "
        "ipa-tuned unless given)",
    )
    monitor = p.add_mutually_exclusive_group()
    monitor.add_argument(
        "--service-monitor",
        action="store_true",
        help="add a Service and a ServiceMonitor (Prometheus Operator) for the sidecar's metrics, instead of the "
        "prometheus.io scrape annotations",
    )
    monitor.add_argument(
        "--pod-monitor",
        action="store_true",
        help="add a PodMonitor (Prometheus Operator) for the sidecar's metrics, instead of the scrape annotations",
    )
    p.add_argument(
        "--monitor-label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="label the ServiceMonitor/PodMonitor so the operator selects it, e.g. release=kube-prometheus-stack "
        "(repeatable)",
    )
    p.add_argument(
        "--network-policy",
        action="store_true",
        help="add a NetworkPolicy: the sidecar may reach only DNS, the API server and Prometheus, and be reached "
        "only on its metrics port",
    )
    p.add_argument(
        "--api-server-cidr",
        metavar="CIDR",
        help="the API server's addresses for --network-policy, e.g. 10.0.0.1/32 (default: any address on ports "
        "443 and 6443)",
    )
    pools = p.add_argument_group(
        "pooled stages",
        "for a spec with a stage of max_pools > 1, also rendered: one model-server Deployment and Service per "
        "variant and the stage's HTTPRoute (Gateway API), whose backendRef weights the sidecar sets",
    )
    pools.add_argument(
        "--gateway",
        metavar="[NAMESPACE/]NAME",
        help="the Gateway the HTTPRoutes attach to (default rlscale-gateway, in the stage namespace)",
    )
    pools.add_argument("--model-image", metavar="IMAGE", help="the model server's image in the per-variant Deployments")
    pools.add_argument(
        "--model-port", type=int, metavar="PORT", help="the model server's port (Services, routes; default 8080)"
    )
    add_guard(p)
    add_set(p)
    p.set_defaults(func=cmd_manifests)


def no_bundled_agent_message(policy: str, pipeline: str) -> str:
    """Why ``policy`` cannot run without ``--agent``, and how to give it one (training, then the flag)."""
    from agents.inference import ACTOR_FILE, bundled_agent

    return (
        f"policy {policy} needs an agent and pipeline {pipeline} has none bundled ({bundled_agent(pipeline)}); "
        f"train one with: rlscale train --pipeline {pipeline}, then pass --agent RUN/{ACTOR_FILE} "
        f"(rlscale manifests --agent RUN/{ACTOR_FILE} ships it to a cluster)"
    )


def _choose_policy(args: argparse.Namespace, spec) -> tuple[str, bool]:
    """The sidecar's policy, and whether it is the default (not asked for by --policy, --agent or --tuning)."""
    from rlscale.policies.registry import default_live_policy

    policy = args.policy
    if policy is None:
        if args.agent is not None and args.tuning is not None:
            raise RlscaleError("--agent (ppo) and --tuning (ipa-tuned) are for different policies; give --policy")
        if args.agent is not None:
            return "ppo", False
        if args.tuning is not None:
            return "ipa-tuned", False
        return default_live_policy(spec), True
    if args.agent is not None and policy not in AGENT_POLICIES:
        raise RlscaleError(f"--agent is for the ppo and ppo-raw policies; {policy} would ignore it")
    if args.tuning is not None and policy not in TUNED_POLICIES:
        raise RlscaleError(f"--tuning is for the ipa-tuned, ipa-hold and hpa-tuned policies; {policy} would ignore it")
    return policy, False


def _check_agent(path: str, spec) -> None:
    """An actor file that fits ``spec`` (`agents.actor.load_actor`: a model.zip, pickled, is refused)."""
    from agents.actor import load_actor

    load_actor(Path(path)).codec(spec, path)  # AgentMismatch: trained for another pipeline


def _check_tuning(path: str, data: bytes) -> None:
    table = loads_json(data, f"--tuning {path}", RlscaleError, "a tuning")
    if not isinstance(table, dict):
        raise RlscaleError(f"--tuning {path}: a tuning is a JSON object, got {type(table).__name__}")


TUNED_POLICIES = ("ipa-tuned", "ipa-hold", "hpa-tuned")
"""The policies that read a tuning file (``--tuning``)."""


def _check_runs(policy: str, is_default: bool, args: argparse.Namespace, spec) -> str:
    """Build the policy the sidecar will build, from what is rendered; returns the policy to render (the default
    ``ppo`` falls back to ``ipa`` with a warning when the bundled agent does not fit the spec, as the sidecar's
    default does).

    Raises:
        RlscaleError: the policy cannot run with what is rendered (one line, naming the flag that fixes it).
    """
    from agents.actor import AgentMismatch
    from agents.inference import bundled_agent
    from rlscale.policies.registry import PolicyOptions, make_live_policy

    if policy in AGENT_POLICIES and args.agent is None and not bundled_agent(spec.name).exists():
        raise RlscaleError(no_bundled_agent_message(policy, spec.name))
    options = PolicyOptions(agent=args.agent, guard=guard_flag(args))
    if args.tuning is not None:
        options = dataclasses.replace(options, tuning=args.tuning)
    try:
        make_live_policy(policy, spec, options)
    except AgentMismatch as exc:
        if is_default:
            log.warning("the bundled agent does not fit this spec (%s); the sidecar will decide with ipa", exc)
            make_live_policy("ipa", spec, dataclasses.replace(options, agent=None))
            return "ipa"
        raise AgentMismatch(f"{exc}; then pass rlscale manifests --agent RUN/actor.npz") from None
    except RlscaleError as exc:
        if policy in TUNED_POLICIES and args.tuning is None:
            raise RlscaleError(f"{exc}; or ship a tuning with rlscale manifests --tuning FILE.json") from None
        raise
    return policy


def cmd_manifests(args: argparse.Namespace) -> int:
    from rlscale.kube.manifests import AGENT_PATH, TUNING_PATH, read_shipped_file, render_manifests
    from rlscale.kube.wiring import check_url
    from rlscale.spec import load_spec

    labels = {}
    for item in args.monitor_label:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RlscaleError(f"--monitor-label {item!r}: need KEY=VALUE, e.g. release=kube-prometheus-stack")
        labels[key] = value
    if labels and not (args.service_monitor or args.pod_monitor):
        raise RlscaleError("--monitor-label labels a monitor: add --service-monitor or --pod-monitor")
    if args.api_server_cidr is not None and not args.network_policy:
        raise RlscaleError("--api-server-cidr is for --network-policy; add it")
    with tempfile.TemporaryDirectory(prefix="rlscale-manifests-") as folder:
        # with --set, the ConfigMap carries the overridden spec: render from a file that holds it
        spec = load_spec(spec_file(args.spec, args, Path(folder)))
        policy, is_default = _choose_policy(args, spec)
        agent = read_shipped_file(args.agent, "--agent", AGENT_PATH) if args.agent is not None else None
        tuning = read_shipped_file(args.tuning, "--tuning", TUNING_PATH) if args.tuning is not None else None
        if args.agent is not None:
            _check_agent(args.agent, spec)
        if tuning is not None:
            _check_tuning(args.tuning, tuning)
        policy = _check_runs(policy, is_default, args, spec)
        text = render_manifests(
            spec,
            namespace=args.namespace,
            image=args.image,
            prometheus_url=check_url(args.prometheus, "--prometheus"),
            policy=policy,
            interval_s=args.interval,
            window_s=args.window,
            dry_run=args.dry_run,
            allow_system_namespace=args.allow_system_namespace,
            guard=guard_flag(args),
            agent=agent,
            tuning=tuning,
            service_monitor=args.service_monitor,
            pod_monitor=args.pod_monitor,
            monitor_labels=labels,
            network_policy_=args.network_policy,
            api_server_cidr=args.api_server_cidr,
            gateway=args.gateway,
            model_image=args.model_image,
            model_port=args.model_port,
        )
    sys.stdout.write(text)
    return 0
