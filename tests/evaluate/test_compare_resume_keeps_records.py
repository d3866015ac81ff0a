"""``compare --resume`` never deletes a user's data: a valid line of ``records.jsonl`` for a run outside the
comparison is not used for the table, and stays in the file verbatim, even when the file is rewritten to drop a
torn last line."""

from __future__ import annotations

import json

import numpy as np

from rlscale.evaluate.compare import run_comparison
from rlscale.policies.registry import make_policy


def test_resume_keeps_record_lines_of_other_runs(tmp_path):
    trace = tmp_path / "short.csv"
    trace.write_text("rps\n" + "\n".join(map(str, np.full(60, 5))) + "\n")
    out = tmp_path / "out"
    kwargs = {"seeds": 2, "out": out, "progress": False, "timelines": False, "make_policy": make_policy}
    run_comparison("video", [str(trace)], ["static-min"], **kwargs)
    first, second = (out / "records.jsonl").read_text().splitlines()
    other = json.dumps({**json.loads(first), "seed": 7, "note": "a run of mine"})  # valid, not in the comparison
    foreign = json.dumps({**json.loads(first), "trace": "elsewhere"})
    torn = second[: len(second) // 2]  # the last run was killed mid-write: it runs again
    (out / "records.jsonl").write_text(f"{first}\n{other}\n{foreign}\n{torn}")

    comp = run_comparison("video", [str(trace)], ["static-min"], resume=True, **kwargs)

    assert [r["seed"] for r in comp.records] == [0, 1]  # the table holds the comparison's runs only
    lines = (out / "records.jsonl").read_text().splitlines()
    assert lines[:3] == [first, other, foreign]  # kept, byte for byte
    assert len(lines) == 4 and json.loads(lines[3])["seed"] == 1
