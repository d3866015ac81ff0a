"""``rlscale manifests --service-monitor | --pod-monitor | --network-policy`` (issue 14): the objects parse, and
their selectors and ports meet the sidecar's pod."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from rlscale.errors import RlscaleError
from rlscale.kube.manifests import render_manifests
from rlscale.spec import load_spec
from tests.test_cli import _assert_one_clear_line, run

VIDEO = load_spec("video")


def render(**kwargs) -> list[dict[str, Any]]:
    return list(yaml.safe_load_all(render_manifests(VIDEO, **kwargs)))


def one(docs, kind: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


def pod_template(docs) -> dict[str, Any]:
    return one(docs, "Deployment")["spec"]["template"]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a label selector (``matchLabels`` only, as rendered) selects ``labels``."""
    assert set(selector) == {"matchLabels"}, selector
    return selector["matchLabels"].items() <= labels.items()


def metrics_port(docs) -> dict[str, Any]:
    (port,) = pod_template(docs)["spec"]["containers"][0]["ports"]
    return port


def test_annotations_by_default_and_no_monitor():
    docs = render()
    assert not {"Service", "ServiceMonitor", "PodMonitor", "NetworkPolicy"} & {d["kind"] for d in docs}
    assert pod_template(docs)["metadata"]["annotations"]["prometheus.io/scrape"] == "true"


def test_service_monitor_selects_a_service_that_selects_the_pod():
    docs = render(namespace="ml", service_monitor=True, metrics_port=9500, monitor_labels={"release": "kps"})
    service, monitor = one(docs, "Service"), one(docs, "ServiceMonitor")
    pod = pod_template(docs)
    assert service["apiVersion"] == "v1" and monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert selects(monitor["spec"]["selector"], service["metadata"]["labels"])
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["ml"]}
    assert monitor["metadata"]["labels"]["release"] == "kps"  # the operator's serviceMonitorSelector
    (endpoint,) = monitor["spec"]["endpoints"]
    (service_port,) = service["spec"]["ports"]
    assert endpoint == {"port": service_port["name"], "path": "/metrics"}
    container_port = metrics_port(docs)
    assert service_port["targetPort"] == container_port["name"] and container_port["containerPort"] == 9500
    assert service_port["port"] == 9500
    # the operator scrapes it: the annotations would make an annotation-based Prometheus scrape it a second time
    assert not any(k.startswith("prometheus.io/") for k in pod["metadata"]["annotations"])
    assert "rlscale.io/spec-sha256" in pod["metadata"]["annotations"]


def test_pod_monitor_selects_the_pod_and_its_metrics_port():
    docs = render(namespace="ml", pod_monitor=True)
    monitor = one(docs, "PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert selects(monitor["spec"]["selector"], pod_template(docs)["metadata"]["labels"])
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["ml"]}
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == metrics_port(docs)["name"] and endpoint["path"] == "/metrics"
    assert "Service" not in {d["kind"] for d in docs}


def test_network_policy_allows_only_dns_the_api_server_and_prometheus():
    docs = render(
        namespace="ml",
        network_policy_=True,
        metrics_port=9500,
        prometheus_url="http://prometheus-server.monitoring.svc.cluster.local:9091",
        api_server_cidr="10.0.0.1/32",
    )
    policy = one(docs, "NetworkPolicy")
    assert policy["apiVersion"] == "networking.k8s.io/v1" and policy["metadata"]["namespace"] == "ml"
    spec = policy["spec"]
    assert selects(spec["podSelector"], pod_template(docs)["metadata"]["labels"])
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["ingress"] == [{"ports": [{"protocol": "TCP", "port": 9500}]}]  # the metrics port, nothing else
    assert metrics_port(docs)["containerPort"] == 9500
    dns, api, prometheus = spec["egress"]
    assert dns == {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
    assert api["to"] == [{"ipBlock": {"cidr": "10.0.0.1/32"}}]
    assert {p["port"] for p in api["ports"]} == {443, 6443}
    assert prometheus["ports"] == [{"protocol": "TCP", "port": 9091}]
    assert prometheus["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]


@pytest.mark.parametrize(
    ("url", "port", "to"),
    [
        ("http://10.1.2.3:9090", 9090, None),  # not a Service name: any destination on its port
        ("https://prom.example.com", 443, None),
        ("http://prom.example.com", 80, None),
        ("http://prometheus.monitoring.svc:9090", 9090, "monitoring"),
    ],
)
def test_network_policy_reaches_prometheus_on_its_url_port(url, port, to):
    policy = one(render(network_policy_=True, prometheus_url=url), "NetworkPolicy")
    prometheus = policy["spec"]["egress"][2]
    assert prometheus["ports"] == [{"protocol": "TCP", "port": port}]
    if to is None:
        assert "to" not in prometheus
    else:
        assert prometheus["to"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == to
    assert "to" not in policy["spec"]["egress"][1]  # no --api-server-cidr: any address on 443/6443


@pytest.mark.subprocess
def test_the_cli_renders_them_all():
    result = run("manifests", "--spec", "video", "--namespace", "ml", "--service-monitor", "--monitor-label",
                 "release=kps", "--network-policy", "--api-server-cidr", "10.0.0.1")  # fmt: skip
    assert result.returncode == 0, result.stderr
    docs = list(yaml.safe_load_all(result.stdout))
    assert [d["kind"] for d in docs][-3:] == ["Service", "ServiceMonitor", "NetworkPolicy"]
    assert one(docs, "NetworkPolicy")["spec"]["egress"][1]["to"] == [{"ipBlock": {"cidr": "10.0.0.1/32"}}]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--service-monitor", "--pod-monitor"], "not allowed with argument"),
        (["--monitor-label", "release=kps"], "--service-monitor or --pod-monitor"),
        (["--pod-monitor", "--monitor-label", "release"], "KEY=VALUE"),
        (["--pod-monitor", "--monitor-label", "bad key!=x"], "label key"),
        (["--pod-monitor", "--monitor-label", "release=not ok"], "label value"),
        (["--api-server-cidr", "10.0.0.1/32"], "--network-policy"),
        (["--network-policy", "--api-server-cidr", "10.0.0.300/32"], "not an IP network"),
    ],
)
@pytest.mark.subprocess
def test_bad_monitoring_flags_are_one_line_exit_2(args, needle):
    result = run("manifests", "--spec", "video", *args)
    assert result.returncode == 2 and result.stdout == ""
    _assert_one_clear_line(result, needle)


def test_two_monitors_are_refused_by_the_function_too():
    with pytest.raises(RlscaleError, match="not both"):
        render_manifests(VIDEO, service_monitor=True, pod_monitor=True)
