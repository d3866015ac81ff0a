"""The sim-to-real script over `rlscale.calibrate`: its uncalibrated spec (the in-process p99 profile, six columns)
and a tiny run of the numpy pair, real servers on 127.0.0.1 and all; its flags."""

from __future__ import annotations

import json
import os

import pytest

from experiments import sim_to_real as s2r
from rlscale.profiles import load_profile
from rlscale.spec import load_spec
from tests.serve.stage_server import require_mlserver


def test_the_uncalibrated_spec_is_the_in_process_p99_profile(tmp_path):
    cpus = sorted(os.sched_getaffinity(0))
    path = s2r.uncalibrated_spec("mlp-mlp", [1, 2], tmp_path, cpus, repeats=3, warmup=1)
    spec = load_spec(path)
    assert [s.name for s in spec.stages] == ["first", "second"]
    assert [s.variants[0].name for s in spec.stages] == ["mlp-1024", "mlp-256"]
    for stage in spec.stages:
        model = load_profile(stage.profile_path)
        assert not model.has_runs and not model.has_overhead  # a p99 used as a fixed service time
        assert "p99 of 3" in next(iter(model.points.values())).source
        assert stage.batch_sizes == (1, 2) and stage.cores == (1,)


@pytest.mark.e2e
@pytest.mark.slow
def test_a_tiny_run_of_the_numpy_pair(tmp_path, capsys):
    require_mlserver()
    pytest.importorskip("aiohttp")
    argv = ["--out", str(tmp_path), "--pair", "mlp-mlp", "--window", "360:363", "--load-fraction", "0.3"]
    assert s2r.main([*argv, "--batches", "2", "--repeats", "1", "--profile-repeats", "5"]) == 0
    assert "| load0.3-b2 | end-to-end | p99 |" in capsys.readouterr().out
    doc = json.loads((tmp_path / "calibrate.json").read_text())
    assert doc["complete"] and [c["name"] for c in doc["configs"]] == ["load0.3-b2"]
    for name in ("spec.yaml", "spec-calibrated.yaml", "results.csv", "sim_vs_real.png", "run.json"):
        assert (tmp_path / name).exists(), name


def test_help_and_bad_flags(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        s2r.main(["--help"])
    assert exc.value.code == 0
    assert "--load-fraction" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        s2r.main(["--pair", "nope"])
    assert exc.value.code == 2
    assert s2r.main(["--batches", "one", "--out", str(tmp_path / "o")]) == 2
    assert "error:" in capsys.readouterr().err
