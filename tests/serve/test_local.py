"""rlscale.serve.local: a free port, readiness polling, SIGTERM-then-kill."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

from rlscale.serve.local import free_port, stop_process, wait_ready


def test_free_port_can_be_bound():
    with socket.socket() as s:
        s.bind(("127.0.0.1", free_port()))


def test_wait_ready_is_false_when_the_process_exits_before_answering():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    assert wait_ready(f"http://127.0.0.1:{free_port()}/ready", proc, timeout_s=30) is False
    assert proc.wait(timeout=5) == 0


def test_wait_ready_is_true_once_the_server_answers_200():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"])
    try:
        assert wait_ready(f"http://127.0.0.1:{port}/", proc, timeout_s=30) is True
    finally:
        assert stop_process(proc) == -signal.SIGTERM  # http.server dies of the signal


def test_stop_process_kills_what_ignores_sigterm():
    code = (
        "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    proc.stdout.readline()  # the handler is installed
    assert stop_process(proc, timeout_s=0.5) == -signal.SIGKILL
    proc.stdout.close()
