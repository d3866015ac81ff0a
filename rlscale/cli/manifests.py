"""``rlscale manifests``: the Kubernetes YAML that runs the sidecar (`rlscale.kube.manifests`)."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from rlscale.cli.args import add_guard, add_live_flags, add_set, add_spec, guard_flag, spec_file


def register(sub) -> None:
    p = sub.add_parser(
        "manifests",
        help="print the Kubernetes manifests that deploy the sidecar (ServiceAccount, Role, ConfigMap, Deployment)",
        description=(
            "Print, as YAML for `kubectl apply -f -`, what runs the sidecar in a cluster: a ServiceAccount, a Role "
            "with only the verbs the sidecar calls (get/list/patch deployments, patch deployments/scale; only on "
            "the named Deployments, and no list, when the spec names every stage's), its RoleBinding, a ConfigMap "
            "with the spec, and the sidecar's Deployment. The --policy, --interval, --window, --guard and --dry-run "
            "given here become the sidecar's arguments. System namespaces (kube-system...) need "
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
        help="Prometheus URL as seen from the pod (default http://prometheus-server.monitoring.svc:9090)",
    )
    add_live_flags(p)
    add_guard(p)
    add_set(p)
    p.set_defaults(func=cmd_manifests)


def cmd_manifests(args: argparse.Namespace) -> int:
    from rlscale.cli.registry import default_live_policy
    from rlscale.kube.manifests import render_manifests
    from rlscale.kube.wiring import check_url
    from rlscale.spec import load_spec

    with tempfile.TemporaryDirectory(prefix="rlscale-manifests-") as folder:
        # with --set, the ConfigMap carries the overridden spec: render from a file that holds it
        spec = load_spec(spec_file(args.spec, args, Path(folder)))
        text = render_manifests(
            spec,
            namespace=args.namespace,
            image=args.image,
            prometheus_url=check_url(args.prometheus, "--prometheus"),
            policy=args.policy or default_live_policy(spec),
            interval_s=args.interval,
            window_s=args.window,
            dry_run=args.dry_run,
            allow_system_namespace=args.allow_system_namespace,
            guard=guard_flag(args),
        )
    sys.stdout.write(text)
    return 0
