"""Run the ``rlscale`` command in this process through `rlscale.cli.main` (a pytest plugin: tests/conftest.py loads it).

A subprocess costs a Python start and the imports (a second or more); most CLI tests only need what ``main(argv)``
returns and prints. The ``cli_main`` fixture runs it as ``python -m rlscale.cli`` would: in a given folder, with
a given environment, stdout and stderr captured at the file descriptors (``--json`` writes its document to a
duplicate of fd 1), ``SystemExit`` turned into its exit code, and the root logger as a fresh process has it (no
handlers, so the CLI's ``logging.basicConfig`` installs its own on stderr and its log lines count as stderr lines).
Afterwards it puts back what a command may change for the rest of its process: the working folder, the
environment, logging, signal handlers, ``sys.stdout``/``sys.stderr``, ``sys.path``, CPU affinity and torch's
thread count. Cases that need a process of their own (a hang killed by a timeout, a memory bound, a device or FIFO
read, ``os._exit``) stay subprocesses.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass(frozen=True)
class CliResult:
    """What one ``rlscale`` run left: its exit code and what it wrote to stdout and stderr."""

    returncode: int
    stdout: str
    stderr: str


def _run_main(argv: Sequence[str]) -> int:
    from rlscale.cli import main

    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's usage errors and --help
        code = exc.code
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


@pytest.fixture
def cli_main(capfd: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """``cli_main(argv, cwd=None, env=None) -> CliResult``: ``rlscale ARGV`` run in this process.

    ``env`` sets (a string) or removes (None) environment variables for the run.
    """

    def run(argv: Sequence[str], cwd: Path | None = None, env: Mapping[str, str | None] | None = None) -> CliResult:
        root = logging.getLogger()
        logging.getLogger("urllib3")  # main() sets its level: make sure it is put back, not left behind
        saved_handlers, saved_level = root.handlers[:], root.level
        loggers = root.manager.loggerDict.items()
        saved_levels = {name: lg.level for name, lg in loggers if isinstance(lg, logging.Logger)}
        saved_signals = {s: signal.getsignal(s) for s in _SIGNALS}
        saved_streams = (sys.stdout, sys.stderr)
        saved_env, saved_cwd, saved_path = dict(os.environ), os.getcwd(), sys.path[:]
        saved_affinity = os.sched_getaffinity(0)
        torch = sys.modules.get("torch")
        saved_threads = torch.get_num_threads() if torch is not None else None
        capfd.readouterr()  # what the test printed before is not the command's
        for name, value in (env or {}).items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if cwd is not None:
            os.chdir(cwd)
        root.handlers[:] = []  # as in a fresh process: the CLI's basicConfig logs to (the captured) stderr
        try:
            code = _run_main(argv)
        finally:
            for handler in root.handlers:
                if handler not in saved_handlers:
                    handler.close()
            root.handlers[:] = saved_handlers
            root.setLevel(saved_level)
            for name, level in saved_levels.items():  # loggers made during the run keep what their library set
                logging.getLogger(name).setLevel(level)
            for s, h in saved_signals.items():
                if h is not None:
                    signal.signal(s, h)
            sys.stdout, sys.stderr = saved_streams
            os.chdir(saved_cwd)
            os.environ.clear()
            os.environ.update(saved_env)
            sys.path[:] = saved_path
            os.sched_setaffinity(0, saved_affinity)
            torch = sys.modules.get("torch")
            if torch is not None and saved_threads is not None:
                torch.set_num_threads(saved_threads)
        out, err = capfd.readouterr()
        return CliResult(code, out, err)

    return run
