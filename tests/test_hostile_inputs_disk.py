"""Hostile values that used to pass unchecked, and outputs that used to overwrite a user's files: one line on stderr,
exit 2, no traceback, nothing on disk lost.

As `tests.test_hostile_inputs`: each case runs ``rlscale`` (in this process through ``rlscale.cli.main(argv)``, but
for the smoke cases in `SUBPROCESS`, which run the real process) in a folder that already holds earlier
work (``keep/results.csv``, ``keep.png``, and here also ``notes.png``, a text file, and ``data.csv``, a CSV that is
no timeline); after the run that work must be byte-for-byte intact. The tuning files with out-of-range values are
written by the ``hostile`` fixture.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.hostile import assert_one_error_line, params, run

ROOT = Path(__file__).resolve().parents[1]
DOWN = "http://127.0.0.1:9"  # discard port: nothing listens; refused at once
SIM = ["simulate", "--pipeline", "video", "--trace", "bursty"]

TUNINGS = {
    # the flags allow --headroom 0.1-10, --hold-delta 0-1e6, --hpa-target (0, 1]: a tuning file may not do more
    "tiny-headroom.json": {"video": {"headroom": 1e-300}},
    "huge-headroom.json": {"video": {"headroom": 1e300}},
    "huge-delta.json": {"video": {"ipa-hold": {"headroom": 1.0, "delta": 1e300}}},
    "tiny-hold-headroom.json": {"video": {"ipa-hold": {"headroom": 0.01, "delta": 0.5}}},
    "huge-target.json": {"video": {"hpa": {"target": 5.0}}},
}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("hostile-disk")
    for name, data in TUNINGS.items():
        (d / name).write_text(json.dumps(data))
    return d


# (id, argv with {h} for the hostile folder, a fragment the one error line must contain)
CASES = [
    # item 9: a tuning file's values pass the bounds of the flag they stand for, in every command that reads one
    (
        "sim-tuning-tiny-headroom",
        [*SIM, "--policy", "ipa-tuned", "--tuning", "{h}/tiny-headroom.json"],
        "headroom",
    ),
    (
        "sim-tuning-huge-headroom",
        [*SIM, "--policy", "ipa-tuned", "--tuning", "{h}/huge-headroom.json"],
        "0.1 to 10",
    ),
    (
        "sim-tuning-huge-delta",
        [*SIM, "--policy", "ipa-hold", "--tuning", "{h}/huge-delta.json"],
        "delta",
    ),
    (
        "sim-tuning-tiny-hold-headroom",
        [*SIM, "--policy", "ipa-hold", "--tuning", "{h}/tiny-hold-headroom.json"],
        "headroom",
    ),
    (
        "sim-tuning-huge-target",
        [*SIM, "--policy", "hpa-tuned", "--tuning", "{h}/huge-target.json"],
        "huge-target.json: hpa target",
    ),
    (
        "compare-tuning-tiny-headroom",
        [
            "compare",
            "--pipeline",
            "video",
            "--traces",
            "bursty",
            "--policies",
            "ipa-tuned",
            "--tuning",
            "{h}/tiny-headroom.json",
            "--out",
            "out",
        ],
        "headroom",
    ),
    (
        "sidecar-tuning-tiny-headroom",
        ["sidecar", "--spec", "video", "--prometheus", DOWN, "--policy", "ipa-tuned", "--tuning"]
        + ["{h}/tiny-headroom.json", "--once"],
        "headroom",
    ),
    (
        "manifests-tuning-tiny-headroom",
        ["manifests", "--spec", "video", "--tuning", "{h}/tiny-headroom.json"],
        "headroom",
    ),
    (
        "manifests-tuning-huge-target",
        ["manifests", "--spec", "video", "--policy", "hpa-tuned", "--tuning", "{h}/huge-target.json"],
        "huge-target.json: hpa target",
    ),
    # item 9: --set in scientific notation is a number, then checked by the field's own bounds
    ("set-sla-1e300", ["pipelines", "--spec", "video", "--set", "sla_s=1e300"], "sla_s: must be <="),
    ("set-alpha-1e9", ["pipelines", "--spec", "video", "--set", "objective.alpha=1e9"], "objective.alpha: must be <="),
    ("sim-set-sla-1e300", [*SIM, "--policy", "ipa", "--set", "sla_s=1e300"], "sla_s: must be <="),
    # item 10: --plot and --timeline never overwrite a file rlscale did not write
    ("sim-plot-over-text", [*SIM, "--policy", "ipa", "--plot", "notes.png"], "not a plot rlscale wrote"),
    ("sim-plot-over-keep-png", [*SIM, "--policy", "ipa", "--plot", "keep.png"], "not a plot rlscale wrote"),
    ("sim-timeline-over-csv", [*SIM, "--policy", "ipa", "--timeline", "data.csv"], "not a timeline"),
    (
        "sim-timeline-over-results",
        [*SIM, "--policy", "ipa", "--timeline", "keep/results.csv"],
        "not a timeline",
    ),
]


SUBPROCESS = {"sim-tuning-huge-headroom", "sim-plot-over-text"}  # smoke cases: the real process


@pytest.mark.parametrize(("argv", "fragment", "in_subprocess"), list(params(CASES, SUBPROCESS)))
def test_bad_input_gets_one_line_and_exit_2(tmp_path, hostile, cli_main, argv, fragment, in_subprocess):
    (tmp_path / "keep").mkdir()
    kept = {
        tmp_path / "keep" / "results.csv": b"trace,policy\nbursty,ipa\n",
        tmp_path / "keep.png": b"\x89PNG...",
        tmp_path / "notes.png": b"my notes, not a picture\n",
        tmp_path / "data.csv": b"rps\n3\n4\n",
    }
    for path, data in kept.items():
        path.write_bytes(data)
    args = [a.replace("{h}", str(hostile)) for a in argv]
    result = run(cli_main, args, tmp_path, in_subprocess)
    assert_one_error_line(result, args[0], fragment)
    for path, data in kept.items():
        assert path.read_bytes() == data, f"{path} was changed"
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir()), "results were written"
