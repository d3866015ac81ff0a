"""What every hostile-input suite shares (tests/test_hostile_inputs*.py): the case parameters, one run of a case
(in this process through the ``cli_main`` fixture, or as the real process), and the contract's check of its answer:
exit 2, one stderr line ``rlscale COMMAND: error: ...`` holding the fragment, no traceback, nothing on stdout."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import pytest


def params(cases: Iterable[tuple[str, list[str], str]], in_subprocess: set[str]) -> Iterator:
    """``pytest.param(argv, fragment, in_subprocess)`` of each ``(id, argv, fragment)`` case; the ids in
    ``in_subprocess`` (smoke cases, or cases that need their own process) are marked ``subprocess``."""
    for case_id, argv, fragment in cases:
        marks = [pytest.mark.subprocess] if case_id in in_subprocess else []
        yield pytest.param(argv, fragment, case_id in in_subprocess, id=case_id, marks=marks)


def run(cli_main, args: list[str], cwd: Path, in_subprocess: bool, env: Mapping[str, str | None] | None = None):
    """The answer to ``rlscale ARGS`` run in ``cwd``: ``returncode``, ``stdout``, ``stderr``. In a subprocess,
    ``env`` is the whole environment (None: this one); in this process, the variables it sets (None: unset)."""
    if in_subprocess:
        return subprocess.run(
            [sys.executable, "-m", "rlscale.cli", *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=cwd,
            env=None if env is None else dict(env),
        )
    return cli_main(args, cwd=cwd) if env is None else cli_main(args, cwd=cwd, env=dict(env))


def assert_one_error_line(result, command: str, fragment: str) -> None:
    """Exit 2, exactly one stderr line ``rlscale COMMAND: error: ...`` that holds ``fragment``, no traceback or
    internal error, nothing on stdout."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, f"exit {result.returncode}: {result.stderr[-2000:]}"
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert lines[0].startswith(f"rlscale {command}: error: "), lines[0]
    assert fragment in lines[0], lines[0]
    assert result.stdout == ""
