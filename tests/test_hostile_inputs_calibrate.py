"""Hostile and careless input to ``rlscale calibrate`` (the rounds of tests/test_hostile_inputs*.py): one line on
stderr, exit 2, no traceback, nothing on stdout, no server started, earlier work intact. Every case fails before
anything is measured; they run in this process (``cli_main``), but for one smoke case of the real process."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.calibrate.specs import MLP, write_mlp_spec
from tests.conftest import base_spec_dict, write_profile
from tests.hostile import assert_one_error_line, params, run


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("hostile-calibrate")
    write_mlp_spec(d, name="mlp.yaml")
    write_profile(d)
    (d / "toy.yaml").write_text(yaml.safe_dump(base_spec_dict()))  # variants fast and slow: no mlp's
    (d / "quiet.csv").write_text("rps\n" + "0\n" * 10 + "5\n" * 10)
    (d / "a-file").write_text("not a folder\n")
    return d


BASE = ["calibrate", "--spec", "{h}/mlp.yaml", "--trace", "bursty", "--window", "360:364", "--out", "out"]
WITH = [*BASE, "--model", MLP]
OTHER = ["calibrate", "--model", MLP, "--trace", "bursty", "--out", "o"]
UNKNOWN_STAGE = "unknown stage 'third'; the spec's stages: first, second"

# (id, argv with {h} for the hostile folder, a fragment the one error line must contain)
CASES = [
    ("calibrate-spec-missing", [*OTHER, "--spec", "nope.yaml"], "nope"),
    ("calibrate-no-model", BASE, "name each stage's model: --model"),
    ("calibrate-unknown-stage", [*BASE, "--model", f"third={MLP}"], UNKNOWN_STAGE),
    ("calibrate-not-module-function", [*BASE, "--model", "rlscale.examples.mlp"], "expected [STAGE=]MODULE:FUNCTION"),
    ("calibrate-module-path", [*BASE, "--model", "../evil:build"], "expected [STAGE=]MODULE:FUNCTION"),
    ("calibrate-no-module", [*BASE, "--model", "nope:build"], "no module named 'nope'"),
    ("calibrate-no-function", [*BASE, "--model", "rlscale.examples.mlp:nothing"], "has no function 'nothing'"),
    ("calibrate-stage-without-model", [*BASE, "--model", f"first={MLP}"], "stage(s) second have no model"),
    ("calibrate-stage-twice", [*BASE, "--model", f"first={MLP}", f"first={MLP}"], "has a factory already"),
    ("calibrate-three-for-two", [*BASE, "--model", MLP, MLP, MLP], "3 factories without a stage for 2 stage(s)"),
    ("calibrate-variants-unknown-to-factory", [*OTHER, "--spec", "{h}/toy.yaml"], "none of its factory's VARIANTS"),
    ("calibrate-variant-unknown", [*WITH, "--variant", "first=mlp-7"], "stage first has no variant 'mlp-7'"),
    ("calibrate-url-without-stage", [*BASE, "--url", "http://127.0.0.1:9"], "expected STAGE=URL"),
    ("calibrate-url-ftp", [*BASE, "--url", "first=ftp://x", "--model", f"second={MLP}"], "expected http://HOST:PORT"),
    ("calibrate-url-refused", [*BASE, "--model", f"first={MLP}", "--url", "second=http://127.0.0.1:9"], "cannot reach"),
    ("calibrate-window-backwards", [*WITH, "--window", "10:5"], "--window '10:5': expected START:END"),
    ("calibrate-window-words", [*WITH, "--window", "start:end"], "expected START:END"),
    ("calibrate-window-no-colon", [*WITH, "--window", "360"], "expected START:END"),
    ("calibrate-window-fractional", [*WITH, "--window", "1.5:3"], "expected START:END"),
    ("calibrate-window-past-the-trace", [*WITH, "--window", "1000:1300"], "END must be at most"),
    ("calibrate-window-too-long", [*WITH, "--window", "0:4000"], "at most 3600 s a window"),
    ("calibrate-window-no-load", [*WITH, "--trace", "{h}/quiet.csv", "--window", "0:10"], "has no request in it"),
    ("calibrate-trace-unknown", [*WITH, "--trace", "nope"], "nope"),
    ("calibrate-fraction-zero", [*WITH, "--load-fraction", "0"], "--load-fraction: must be > 0 and <= 1.5"),
    ("calibrate-fraction-negative", [*WITH, "--load-fraction", "0.5,-0.2"], "must be > 0 and <= 1.5"),
    ("calibrate-fraction-too-high", [*WITH, "--load-fraction", "1.6"], "must be > 0 and <= 1.5"),
    ("calibrate-fraction-nan", [*WITH, "--load-fraction", "nan"], "must be > 0 and <= 1.5"),
    ("calibrate-fraction-words", [*WITH, "--load-fraction", "half"], "expected a number"),
    ("calibrate-fit-fraction-zero", [*WITH, "--fit-load-fraction", "0"], "--fit-load-fraction: must be > 0 and <= 1.5"),
    ("calibrate-fit-fraction-words", [*WITH, "--fit-load-fraction", "some"], "expected a number"),
    ("calibrate-fit-fraction-empty", [*WITH, "--fit-load-fraction", ""], "--fit-load-fraction"),
    ("calibrate-fraction-empty-item", [*WITH, "--load-fraction", "0.5,"], "comma-separated numbers"),
    ("calibrate-batches-zero", [*WITH, "--batches", "0"], "--batches: must be between 1 and 256"),
    ("calibrate-repeats-zero", [*WITH, "--repeats", "0"], "--repeats: must be between 1 and 100"),
    ("calibrate-repeats-negative", [*WITH, "--repeats", "-3"], "--repeats: must be between 1 and 100"),
    ("calibrate-repeats-words", [*WITH, "--repeats", "few"], "expected an integer"),
    ("calibrate-out-is-a-file", [*WITH, "--out", "{h}/a-file"], "exists and is not a folder"),
    ("calibrate-out-unwritable", [*WITH, "--out", "/proc/rlscale-calibrate"], "cannot write there"),
    ("calibrate-write-spec-not-yaml", [*WITH, "--write-spec", "cal.txt"], "the spec is a YAML file"),
    ("calibrate-write-spec-no-folder", [*WITH, "--write-spec", "no/such/cal.yaml"], "does not exist"),
    ("calibrate-set-unknown-field", [*WITH, "--set", "colour=blue"], "colour"),
    ("calibrate-capacity-zero", [*WITH, "--capacity-rps", "0"], "--capacity-rps: must be > 0"),
]  # fmt: skip
SUBPROCESS = {"calibrate-no-module"}


@pytest.mark.parametrize(("argv", "fragment", "in_subprocess"), list(params(CASES, SUBPROCESS)))
def test_bad_input_gets_one_line_and_exit_2(tmp_path, hostile, cli_main, argv, fragment, in_subprocess):
    (tmp_path / "keep").mkdir()
    kept = {tmp_path / "keep" / "results.csv": b"config,where\n", tmp_path / "keep.png": b"\x89PNG..."}
    for path, data in kept.items():
        path.write_bytes(data)
    args = [a.replace("{h}", str(hostile)) for a in argv]
    result = run(cli_main, args, tmp_path, in_subprocess)
    assert_one_error_line(result, "calibrate", fragment)
    for path, data in kept.items():
        assert path.read_bytes() == data, f"{path} was changed"
    out = tmp_path / "out"
    assert not out.exists() or not any(out.iterdir()), "something was measured"
