"""Hostile input to ``rlscale serve`` and ``rlscale profile`` (the second round of tests/test_hostile_inputs.py): one
line on stderr, exit 2, no traceback, nothing on disk lost, never a hang (each run has a timeout).

Each case runs the real ``rlscale`` process in a folder that already holds earlier work (``keep/results.csv``,
``keep.png``, and for ``profile`` an earlier ``p.csv``); after the run that work must be intact. A case may write
Python modules into that folder first (hostile model factories), which the command imports from there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVE = ["serve", "--model", "m:build", "--variant", "v", "--pipeline", "p", "--stage", "s"]

# (id, argv, env vars, modules {name: source} written beside it, a fragment the one error line must contain,
#  a text the whole of stderr must not contain)
CASES = [
    (
        "serve-max-request-bytes-tiny",
        [*SERVE, "--max-request-bytes", "10"],
        {},
        {},
        "--max-request-bytes '10': expected a whole number of bytes from 1024",
        None,
    ),
    (
        "serve-max-request-bytes-env-words",
        SERVE,
        {"RLSCALE_MAX_REQUEST_BYTES": "lots"},
        {},
        "RLSCALE_MAX_REQUEST_BYTES='lots': expected a whole number of bytes",
        None,
    ),
]


@pytest.mark.parametrize(
    ("argv", "env", "modules", "fragment", "secret"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_bad_input_gets_one_line_and_exit_2(tmp_path, argv, env, modules, fragment, secret):
    (tmp_path / "keep").mkdir()
    kept = {
        tmp_path / "keep" / "results.csv": b"trace,policy\nbursty,ipa\n",
        tmp_path / "keep.png": b"\x89PNG...",
        tmp_path / "p.csv": b"variant,batch,cores,latency_s\nv,1,1,0.01\n",
    }
    for path, data in kept.items():
        path.write_bytes(data)
    for name, source in modules.items():
        (tmp_path / f"{name}.py").write_text(source)
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("RLSCALE_", "MODEL_VARIANT", "MAX_BATCH"))}
    environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    result = subprocess.run(
        [sys.executable, "-m", "rlscale.cli", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**environ, **env},
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, f"exit {result.returncode}: {result.stderr[-2000:]}"
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert lines[0].startswith(f"rlscale {argv[0]}: error: "), lines[0]
    assert fragment in lines[0], lines[0]
    if secret is not None:
        assert secret not in result.stderr + result.stdout
    assert result.stdout == ""
    for path, data in kept.items():
        assert path.read_bytes() == data, f"{path} was changed"
