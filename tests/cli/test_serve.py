"""``rlscale serve``: --help, every bad input as one line with exit code 2 before any port listens, and MLServer
imported by nothing but the serve command (without the serve extra: one line naming it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlscale.cli.parser import main
from tests.serve.stage_server import FACTORY, free_port, require_mlserver

ROOT = Path(__file__).resolve().parents[2]


def ports() -> list[str]:
    return ["--http-port", str(free_port()), "--grpc-port", str(free_port()), "--metrics-port", str(free_port())]


def test_help_names_the_env_vars(capsys):
    with pytest.raises(SystemExit) as info:
        main(["serve", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for name in ("MODEL_VARIANT", "MAX_BATCH_SIZE", "BATCH_TIMEOUT_S", "RLSCALE_MODEL_FACTORY", "127.0.0.1"):
        assert name in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "no model factory: give --model or set RLSCALE_MODEL_FACTORY"),
        (["--model", "m:f", "--pipeline", "p", "--stage", "s"], "no model variant: give --variant or set"),
        (["--model", "m:f", "--variant", "v", "--pipeline", "p", "--stage", "s", "--batch", "0"], "--batch '0'"),
        (["--model", "m:f", "--variant", "v", "--pipeline", "p", "--stage", "s", "--http-port", "70000"], "70000"),
        (
            ["--model", "m:f", "--variant", "v", "--pipeline", "p", "--stage", "s", "--http-port", "9100"]
            + ["--grpc-port", "9100"],
            "--grpc-port 9100: already --http-port's",
        ),
    ],
)
def test_bad_settings_are_one_line_and_exit_2(capsys, monkeypatch, args, message):
    for name in ("RLSCALE_MODEL_FACTORY", "MODEL_VARIANT", "MAX_BATCH_SIZE", "RLSCALE_PIPELINE", "RLSCALE_STAGE"):
        monkeypatch.delenv(name, raising=False)
    try:
        code = main(["serve", *args])
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


@pytest.mark.parametrize(
    ("factory", "variant", "message"),
    [
        ("nosuch:build", "double", "no module named 'nosuch'"),
        ("tinymodels:build", "quadruple", "variant 'quadruple' is not in tinymodels.VARIANTS (double, triple)"),
    ],
)
def test_a_factory_that_cannot_build_is_one_line_before_listening(
    tmp_path, monkeypatch, capsys, factory, variant, message
):
    require_mlserver()
    (tmp_path / "tinymodels.py").write_text(FACTORY)
    monkeypatch.chdir(tmp_path)
    try:
        code = main(["serve", "--model", factory, "--variant", variant, "--pipeline", "p", "--stage", "s", *ports()])
    finally:
        sys.modules.pop("tinymodels", None)
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


BLOCK_MLSERVER = """
import sys

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "mlserver":
            raise ImportError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, Blocker())
from rlscale.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.subprocess
def test_without_the_serve_extra_serve_is_one_line_and_nothing_else_imports_mlserver(tmp_path):
    (tmp_path / "tinymodels.py").write_text(FACTORY)
    args = ["serve", "--model", "tinymodels:build", "--variant", "double", "--pipeline", "p", "--stage", "s"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_MLSERVER, *args, *ports()],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "serving needs MLServer" in lines[0] and "rlscale[serve]" in lines[0]
    probe = "import sys; from rlscale.cli import build_parser; build_parser(); print('mlserver' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert loaded.stdout.strip() == "False", loaded.stderr
