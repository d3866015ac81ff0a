"""Real servers for integration tests, started and stopped by the tests, bound to 127.0.0.1 only.

Prometheus is Debian's package (``apt-get install --no-install-recommends prometheus``; ``make test`` installs it
when it can). Without the binary these tests skip, except under ``CI=true``, where a missing server fails.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.request

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("the prometheus binary is missing (apt-get install --no-install-recommends prometheus)")
        pytest.skip("prometheus is not installed (apt-get install --no-install-recommends prometheus)")
    return path


@pytest.fixture
def prometheus(tmp_path):
    """Start Prometheus on 127.0.0.1 with a 1 s scrape interval; yields ``(url, set_targets)``.

    ``set_targets(["127.0.0.1:PORT", ...])`` writes the scrape config and reloads Prometheus.
    """
    binary = prometheus_binary()
    port = free_port()
    config = tmp_path / "prometheus.yml"
    targets_file = tmp_path / "targets.json"
    targets_file.write_text("[]")
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: pipeline\n    file_sd_configs:\n"
        f"      - files: ['{targets_file}']\n        refresh_interval: 1s\n"
    )
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            "--storage.tsdb.retention.time=1h",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:  # poll until ready; never a fixed sleep
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("Prometheus did not become ready within 30 s")
        time.sleep(0.2)

    def set_targets(targets: list[str]) -> None:
        import json

        targets_file.write_text(json.dumps([{"targets": targets}]))

    yield url, set_targets
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
