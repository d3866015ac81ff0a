"""docs/walkthrough.md, end to end: a team's own pipeline and traffic (docs/example/) go from a spec to a trained
agent deciding in the sidecar that `rlscale manifests` renders, with nothing but the CLI.

The steps are the walkthrough's commands, scaled down (tiny trainings, short tuning windows); the sidecar runs
the rendered container's arguments against a stand-in Prometheus on 127.0.0.1 and no Kubernetes API
(``--once --dry-run`` then decides from the spec's starting configuration).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.kube.fake_prometheus import FakePrometheus
from tests.kube.test_manifests_shipping import mount, sidecar_container

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "example"
WALKTHROUGH = Path(__file__).resolve().parents[1] / "docs" / "walkthrough.md"


def rlscale(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    entry = "import sys; from rlscale.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", entry, *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env
    )


@pytest.fixture(scope="module")
def team(tmp_path_factory) -> Path:
    """The example copied where a team would keep it (its own folder, not the repository)."""
    folder = tmp_path_factory.mktemp("team")
    for item in ("speech.yaml", "traffic.csv", "profiles"):
        src = EXAMPLE / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, folder / item)
    return folder


def test_the_example_traffic_is_what_its_generator_writes():
    sys.path.insert(0, str(EXAMPLE))
    try:
        from make_traffic import traffic
    finally:
        sys.path.remove(str(EXAMPLE))
    rows = (EXAMPLE / "traffic.csv").read_text().split()
    assert rows[0] == "rps" and [int(v) for v in rows[1:]] == traffic().tolist()


def test_every_command_of_the_walkthrough_exists():
    """Each ``rlscale <command>`` the walkthrough shows is a command of the CLI (a renamed one would break it)."""
    from rlscale.cli import build_parser

    text = WALKTHROUGH.read_text()
    used = set(re.findall(r"^\s*(?:\$ )?rlscale ([a-z]+)", text, flags=re.M))
    assert {"check", "simulate", "tune", "train", "compare", "manifests", "sidecar"} <= used
    commands = set(build_parser()._subparsers._group_actions[0].choices)
    assert used <= commands, used - commands


@pytest.mark.subprocess
@pytest.mark.e2e
def test_own_pipeline_from_spec_to_a_trained_agent_in_the_rendered_sidecar(team):
    check = rlscale("check", "--spec", "speech.yaml", "--trace", "traffic.csv", cwd=team)
    assert check.returncode == 0 and "can meet the SLA" in check.stdout, check.stdout + check.stderr

    tune = rlscale(
        "tune", "--pipeline", "speech.yaml", "--traces", "traffic.csv", "--windows", "2", "--window-s", "300",
        "--out", "tuning.json", cwd=team,
    )  # fmt: skip
    assert tune.returncode == 0, tune.stderr
    assert json.loads((team / "tuning.json").read_text())["speech"]["headroom"] > 0

    tiny = ["--timesteps", "128", "--n-steps", "64", "--batch-size", "32", "--n-envs", "1", "--window-s", "300"]
    train = rlscale(
        "train", "--pipeline", "speech.yaml", "--traces", "traffic.csv", "--eval-traces", "none", *tiny,
        "--validation-windows", "2", "--seeds", "2", "--workers", "2", "--out", "runs", cwd=team,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr
    (sweep,) = (team / "runs").glob("speech__sweep__*")
    selection = json.loads((sweep / "selection.json").read_text())
    actor = team / selection["actor"]  # as the sweep was told: relative to where it ran
    assert actor.is_file() and selection["finished"] == 2
    assert all(name.startswith("val:") for name in json.loads((actor.parent / "eval.json").read_text())["validation"])

    compare = rlscale(
        "compare", "--pipeline", "speech.yaml", "--traces", "traffic.csv", "--policies", "ppo,ipa,ipa-tuned",
        "--agent", str(actor), "--tuning", "tuning.json", "--out", "cmp", "--no-timelines", cwd=team,
    )  # fmt: skip
    assert compare.returncode == 0, compare.stderr
    assert "| speech | traffic.csv | ppo |" in compare.stdout

    manifests = rlscale(
        "manifests", "--spec", "speech.yaml", "--namespace", "speech", "--agent", str(actor),
        "--prometheus", "http://prometheus.monitoring.svc:9090", cwd=team,
    )  # fmt: skip
    assert manifests.returncode == 0, manifests.stderr
    docs = list(yaml.safe_load_all(manifests.stdout))
    args = sidecar_container(docs)["args"]
    assert args[args.index("--policy") + 1] == "ppo"

    # the sidecar exactly as rendered, its volume written where the kubelet would mount it
    etc = mount(docs, team / "etc-rlscale")
    fake = FakePrometheus()
    try:
        argv = [a.replace("/etc/rlscale", str(etc)) for a in args]
        argv[argv.index("--prometheus") + 1] = fake.url
        argv[argv.index("--metrics-port") + 1] = "0"
        argv[argv.index("--metrics-address") + 1] = "127.0.0.1"
        home = team / "home"
        home.mkdir(exist_ok=True)
        env = {**os.environ, "HOME": str(home), "KUBECONFIG": str(home / "none")}  # no Kubernetes API here
        result = rlscale(*argv, "--once", "--dry-run", cwd=team, env=env)
    finally:
        fake.stop()
    assert result.returncode == 0, result.stderr
    (decision,) = result.stdout.strip().splitlines()
    assert "load 20.0 rps" in decision and "ppo" in decision, decision
