"""Local servers as child processes on 127.0.0.1: a free port, readiness polled (never a fixed sleep), SIGTERM to
stop. Shared by the sim-to-real experiment's stage servers and the tests' servers (stage runtime, Prometheus)."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import urllib.request


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout_s: float, poll_s: float = 0.1) -> bool:
    """Poll ``url`` until it answers 200 (True), or until ``proc`` exits or ``timeout_s`` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(poll_s)


def stop_process(proc: subprocess.Popen, timeout_s: float = 10) -> int:
    """SIGTERM (if still running), wait ``timeout_s``, then kill; the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    return proc.returncode
