"""stdout guards: what a library writes to fd 1 (C code included) never reaches a --json command's stdout."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120, check=True
    )


def test_stdout_to_stderr_moves_python_and_c_writes_and_keeps_the_real_stdout():
    result = _run(
        """
        import ctypes, os, sys
        from rlscale.stdio import stdout_to_stderr
        libc = ctypes.CDLL(None)
        print("before")
        with stdout_to_stderr() as real:
            print("python noise")
            os.write(1, b"fd noise\\n")
            libc.printf(b"c stdio noise\\n")  # buffered in C: must be flushed before fd 1 is restored
            real.write("DOCUMENT\\n")
        print("after")
        """
    )
    assert result.stdout == "before\nDOCUMENT\nafter\n"
    for noise in ("python noise", "fd noise", "c stdio noise"):
        assert noise in result.stderr


def test_quiet_stdout_discards_fd_writes_and_nests():
    result = _run(
        """
        import os
        from rlscale.stdio import quiet_stdout, stdout_to_stderr
        with stdout_to_stderr() as real:
            with quiet_stdout():
                print("gone"); os.write(1, b"gone too\\n")
            print("to stderr")
            real.write("{}\\n")
        """
    )
    assert result.stdout == "{}\n"
    assert "to stderr" in result.stderr and "gone" not in result.stderr


def test_highs_solver_prints_nothing_on_stdout():
    """HiGHS 1.16 prints a banner on fd 1 when a process builds its first solver; make_solver discards it."""
    result = _run(
        """
        import pulp
        from ilp_baseline.ilp import make_solver
        prob = pulp.LpProblem("p", pulp.LpMaximize)
        x = pulp.LpVariable("x", 0, 3, cat=pulp.LpInteger)
        prob += x
        prob += x <= 2.5, "cap"
        prob.solve(make_solver("highs"))
        assert x.value() == 2, x.value()
        prob.solve(make_solver("cbc"))
        assert x.value() == 2, x.value()
        """
    )
    assert result.stdout == ""
    assert "HiGHS" not in result.stderr
