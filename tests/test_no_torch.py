"""Every command but ``train`` runs without torch, stable-baselines3 and tensorboard (the ``train`` extra).

Each command runs in a subprocess whose Python cannot import them: a `sys.meta_path` finder raises ImportError
for those names (as in the sidecar image, where they are not installed). The subprocess reports which of them
ended up in ``sys.modules`` (none may) and which imports were attempted.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRAINING_ONLY = ("torch", "stable_baselines3", "tensorboard")

# Runs rlscale.cli.main(argv[2:]) with the training-only packages unimportable, then writes which of them were
# loaded and which imports were attempted to the file argv[1] (the command's own stdout stays as it is).
WRAPPER = f"""
import json, sys
BLOCKED = {TRAINING_ONLY!r}
attempts = []

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            attempts.append(name)
            raise ImportError(f"{{name}} is blocked: not installed without the train extra")
        return None

sys.meta_path.insert(0, Blocker())
report_path = sys.argv[1]
try:
    from rlscale.cli import main
    code = main(sys.argv[2:])
finally:
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    with open(report_path, "w") as fh:
        json.dump({{"loaded": loaded, "attempts": sorted(set(attempts))}}, fh)
sys.exit(code)
"""


def run_without_torch(tmp_path: Path, *args: str, timeout: float = 600) -> tuple[subprocess.CompletedProcess, dict]:
    report = tmp_path / "imports.json"
    result = subprocess.run(
        [sys.executable, "-c", WRAPPER, str(report), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    assert report.exists(), result.stderr
    return result, json.loads(report.read_text())


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tiny_trace(tmp_path: Path) -> str:
    path = tmp_path / "tiny.csv"
    path.write_text("rps\n" + "\n".join(str(5 + (i // 30) % 4) for i in range(120)) + "\n")
    return str(path)


@pytest.mark.subprocess
def test_the_blocker_blocks(tmp_path):
    """The wrapper really makes torch unimportable (else every test below proves nothing)."""
    probe = "import torch"
    result = subprocess.run(
        [sys.executable, "-c", WRAPPER.replace("from rlscale.cli import main", probe), str(tmp_path / "r.json")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode != 0 and "ImportError" in result.stderr
    assert json.loads((tmp_path / "r.json").read_text())["attempts"] == ["torch"]


COMMANDS = {
    "pipelines": lambda tmp: ["pipelines", "--json"],
    "traces": lambda tmp: ["traces"],
    "simulate ppo": lambda tmp: ["simulate", "--pipeline", "video", "--trace", "steady_low", "--policy", "ppo"],
    "simulate ppo-raw sum-qa": lambda tmp: [
        "simulate",
        "--pipeline",
        "sum-qa",
        "--trace",
        _tiny_trace(tmp),
        "--policy",
        "ppo-raw",
    ],  # fmt: skip
    "simulate ipa": lambda tmp: ["simulate", "--pipeline", "video", "--trace", "steady_low", "--policy", "ipa"],
    "compare": lambda tmp: [
        "compare",
        "--pipeline",
        "video",
        "--traces",
        _tiny_trace(tmp),
        "--policies",
        "ppo,ipa",
        "--out",
        str(tmp / "cmp"),
        "--no-timelines",
    ],  # fmt: skip
    "bench": lambda tmp: ["bench", "--quick", "--repeats", "1", "--json"],  # train: left out, with a note
    "manifests": lambda tmp: ["manifests", "--spec", "video"],
    # the numpy example family (its workers are fresh processes without the blocker: this checks the profiler)
    "profile": lambda tmp: [
        "profile",
        "--model",
        "rlscale.examples.mlp:build",
        "--batch",
        "1",
        "--cores",
        "1",
        "--repeats",
        "2",
        "--out",
        str(tmp / "p.csv"),
    ],  # fmt: skip
    "demo": lambda tmp: ["demo", "--out", str(tmp / "demo")],
}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.subprocess
def test_command_runs_without_the_train_extra(tmp_path, command):
    result, imports = run_without_torch(tmp_path, *COMMANDS[command](tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert imports["loaded"] == [], imports
    if command == "bench":  # the agents' decision latency is measured with the numpy actor, never skipped
        report = json.loads(result.stdout)
        assert {"ppo", "ppo+safety"} <= set(report["decision_ms"])
        assert "train" not in report and "train section skipped" in result.stderr


@pytest.mark.subprocess
def test_sidecar_decides_with_the_bundled_agent_without_the_train_extra(tmp_path):
    """``--once`` against a Prometheus that is not there: past the policy (the bundled ppo agent), it fails on the
    metrics (exit 1), and torch was never imported."""
    url = f"http://127.0.0.1:{_closed_port()}"
    result, imports = run_without_torch(
        tmp_path, "sidecar", "--spec", "video", "--prometheus", url, "--once", "--metrics-port", "0", timeout=120
    )
    assert result.returncode == 1, result.stderr
    assert "does not fit" not in result.stderr and "Traceback" not in result.stderr
    assert imports["loaded"] == [], imports


@pytest.mark.subprocess
def test_a_model_zip_without_the_train_extra_is_one_line(tmp_path):
    """A run's model.zip is refused (never unpickled): one line pointing at the run's actor.npz or the converter."""
    model = tmp_path / "model.zip"
    with zipfile.ZipFile(model, "w") as zf:  # what SB3 writes: data, policy.pth, ...
        zf.writestr("data", "{}")
        zf.writestr("policy.pth", b"")
    result, imports = run_without_torch(
        tmp_path, "simulate", "--pipeline", "video", "--trace", "steady_low", "--policy", "ppo", "--agent", str(model)
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "train extra" in lines[0] and "actor.npz" in lines[0], lines
    assert imports["loaded"] == [], imports


@pytest.mark.subprocess
def test_train_without_the_train_extra_is_one_line(tmp_path):
    result, imports = run_without_torch(tmp_path, "train", "--pipeline", "video", "--out", str(tmp_path / "runs"))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "train extra" in lines[0], lines
    assert not (tmp_path / "runs").exists()


@pytest.mark.subprocess
def test_bench_train_section_without_the_train_extra(tmp_path):
    """``bench --sections train`` without torch: one line naming the train extra, exit 2; by default the section
    is left out with a note and the rest runs."""
    result, imports = run_without_torch(tmp_path, "bench", "--sections", "train", "--json")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "train extra" in lines[0] and "Traceback" not in result.stderr
    assert result.stdout == "" and imports["loaded"] == []
    result, imports = run_without_torch(tmp_path, "bench", "--sections", "sim,train", "--repeats", "1", "--json")
    assert result.returncode == 2 and result.stdout == ""  # asked for: refused before anything runs
