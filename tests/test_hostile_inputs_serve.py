"""Hostile input to ``rlscale serve`` and ``rlscale profile`` (the second round of tests/test_hostile_inputs.py): one
line on stderr, exit 2, no traceback, nothing on disk lost, never a hang (each run has a timeout).

Each case runs ``rlscale`` in a folder that already holds earlier work (``keep/results.csv``, ``keep.png``, and for
``profile`` an earlier ``p.csv``); after the run that work must be intact. A case may write Python modules into that
folder first (hostile model factories), which the command imports from there: those cases (they exit, hang or end
their process) run the real process (marked ``subprocess``); the others run in this process through
``rlscale.cli.main(argv)`` (the ``cli_main`` fixture).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hostile import assert_one_error_line

ROOT = Path(__file__).resolve().parents[1]
SERVE = ["serve", "--model", "m:build", "--variant", "v", "--pipeline", "p", "--stage", "s"]
PROFILE = ["profile", "--cores", "1", "--out", "p.csv", "--warmup", "1", "--repeats", "2"]
HANG = "import time\ntime.sleep(120)\n"  # longer than any timeout here, short enough to end on its own
BUILD = """
import numpy as np

VARIANTS = ("v",)


def build(variant):
    return (lambda batch: batch.sum()), make_batch


def make_batch(b):
    return {make_batch}
"""

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
    # profile: the factory's module is imported in a worker; whatever it does there is one line
    (
        "profile-import-system-exit",
        [*PROFILE, "--batch", "1", "--model", "exits:build"],
        {},
        {"exits": "raise SystemExit(5)\n"},
        "importing exits exited (SystemExit: 5)",
        None,
    ),
    (
        "profile-import-os-exit",
        [*PROFILE, "--batch", "1", "--model", "vanishes:build"],
        {},
        {"vanishes": "import os\nos._exit(0)\n"},
        "importing vanishes ended its process (exit code 0)",
        None,
    ),
    (
        "profile-import-hangs",
        [*PROFILE, "--batch", "1", "--model", "hangs:build", "--point-timeout", "3"],
        {},
        {"hangs": HANG},
        "importing hangs did not finish within --point-timeout 3 s",
        None,
    ),
    (
        "profile-factory-hangs",
        [*PROFILE, "--batch", "1", "--model", "slowbuild:build", "--point-timeout", "3"],
        {},
        {"slowbuild": f"VARIANTS = ('v',)\n\n\ndef build(variant):\n    {HANG.replace(chr(10), '; ', 1)}"},
        "variant 'v', batch 1, 1 core(s): no result within --point-timeout 3 s",
        None,
    ),
    (
        "profile-make-batch-wrong-size",
        [*PROFILE, "--batch", "4", "--model", "onebatch:build"],
        {},
        {"onebatch": BUILD.format(make_batch="np.ones((1, 8), dtype=np.float32)")},
        "make_batch(4) built ndarray of shape [1, 8]; expected 4 item(s) along the first dimension",
        None,
    ),
    (
        "profile-make-batch-none",
        [*PROFILE, "--batch", "2", "--model", "nobatch:build"],
        {},
        {"nobatch": BUILD.format(make_batch="None")},
        "make_batch(2) built NoneType; expected an array or tensor of 2 item(s)",
        None,
    ),
    (
        "profile-point-timeout-with-url",
        [*PROFILE, "--batch", "1", "--url", "http://127.0.0.1:9", "--model-name", "m", "--point-timeout", "5"],
        {},
        {},
        "--point-timeout is for --model",
        None,
    ),
    # profile --url: never the password in a message; a URL that is no URL is one line
    (
        "profile-url-ftp-password",
        [*PROFILE, "--batch", "1", "--url", "ftp://admin:PASS@x", "--model-name", "m"],
        {},
        {},
        "--url 'ftp://***@x': expected http://HOST:PORT",
        "PASS",
    ),
    (
        "profile-url-ipv6-unclosed",
        [*PROFILE, "--batch", "1", "--url", "http://u:p@[::1", "--model-name", "m"],
        {},
        {},
        "--url 'http://***@[::1': not a valid URL",
        "u:p",
    ),
]


def _params():
    for case_id, argv, env, modules, fragment, secret in CASES:
        in_subprocess = bool(modules)  # a factory that exits, hangs or ends its process: the real process
        marks = [pytest.mark.subprocess] if in_subprocess else []
        yield pytest.param(argv, env, modules, fragment, secret, in_subprocess, id=case_id, marks=marks)


@pytest.mark.parametrize(("argv", "env", "modules", "fragment", "secret", "in_subprocess"), list(_params()))
def test_bad_input_gets_one_line_and_exit_2(tmp_path, cli_main, argv, env, modules, fragment, secret, in_subprocess):
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
    ours = [k for k in os.environ if k.startswith(("RLSCALE_", "MODEL_VARIANT", "MAX_BATCH"))]
    if in_subprocess:
        environ = {k: v for k, v in os.environ.items() if k not in ours}
        environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        result = subprocess.run(
            [sys.executable, "-m", "rlscale.cli", *argv],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
            env={**environ, **env},
        )
    else:
        result = cli_main(argv, cwd=tmp_path, env={**dict.fromkeys(ours), **env})
    assert_one_error_line(result, argv[0], fragment)
    if secret is not None:
        assert secret not in result.stderr + result.stdout
    for path, data in kept.items():
        assert path.read_bytes() == data, f"{path} was changed"
