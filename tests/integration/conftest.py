"""Real servers for integration tests, started and stopped by the tests, bound to 127.0.0.1 only.

Prometheus is Debian's package (``apt-get install --no-install-recommends prometheus``; ``make test`` installs it
when it can). Without the binary these tests skip, except under ``CI=true``, where a missing server fails.
"""

from __future__ import annotations

import os
import shutil

import pytest

from rlscale.serve.local import free_port


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("the prometheus binary is missing (apt-get install --no-install-recommends prometheus)")
        pytest.skip("prometheus is not installed (apt-get install --no-install-recommends prometheus)")
    return path


@pytest.fixture
def prometheus_server(tmp_path):
    """A started `PrometheusServer` (stop/start it to simulate an outage); stopped at the end."""
    from tests.integration.servers import PrometheusServer

    server = PrometheusServer(prometheus_binary(), tmp_path, free_port())
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield server
    server.stop()


@pytest.fixture
def prometheus(prometheus_server):
    """Prometheus on 127.0.0.1 with a 1 s scrape interval; yields ``(url, set_targets)``.

    ``set_targets(["127.0.0.1:PORT", ...])`` writes the file-based targets (Prometheus re-reads them each second).
    """
    yield prometheus_server.url, prometheus_server.set_targets


@pytest.fixture
def kube_api():
    """The kmock Kubernetes API emulator with fault injection (`tests.integration.servers.ApiServer`)."""
    from tests.integration.servers import BackgroundApiServer

    server = BackgroundApiServer()
    yield server
    server.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    """What the closed-loop tests showed (scale-up, outage, faults), so CI logs carry the figures: the lines a test
    adds to `closed_loop.SUMMARY` go to its report (tests/conftest.py prints them; they travel back from
    pytest-xdist's workers with the report)."""
    from tests.integration.closed_loop import SUMMARY

    start = len(SUMMARY)
    yield
    item.user_properties += [("summary: sidecar closed loop", line) for line in SUMMARY[start:]]
