"""``rlscale profile`` when a point's worker hangs: ``--point-timeout`` kills it, the run stops with one line (exit
2), the points finished before are written, and no worker is left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

LATE_HANG = """
import os
import time
from pathlib import Path

import pytest

VARIANTS = ("v",)


def build(variant):
    def model(batch):
        if len(batch) == 2:  # batch 1 is measured; batch 2 never answers
            Path("worker.pid").write_text(str(os.getpid()))
            time.sleep(120)
        return sum(batch)

    return model, lambda b: [1.0] * b
"""


@pytest.mark.subprocess
def test_a_point_that_hangs_is_stopped_and_the_finished_points_are_written(tmp_path):
    (tmp_path / "latehang.py").write_text(LATE_HANG)
    args = ["profile", "--model", "latehang:build", "--batch", "1,2", "--cores", "1", "--out", "p.csv"]
    args += ["--warmup", "1", "--repeats", "2", "--point-timeout", "5"]
    environ = {**os.environ, "PYTHONPATH": str(ROOT)}
    environ.pop("RLSCALE_DEBUG", None)
    result = subprocess.run(
        [sys.executable, "-m", "rlscale.cli", *args], capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env=environ,
    )  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "variant 'v', batch 2, 1 core(s): no result within --point-timeout 5 s" in lines[0], lines[0]
    assert "1 point finished before, written to p.csv" in lines[0], lines[0]
    rows = (tmp_path / "p.csv").read_text().splitlines()[1:]
    assert [r.split(",")[:3] for r in rows] == [["v", "1", "1"]]
    pid = int((tmp_path / "worker.pid").read_text())
    assert not Path(f"/proc/{pid}").exists(), "the hanging worker was left running"
