"""Golden records: the comparison records of the bundled pipelines, to show a refactor changes no behaviour.

``python -m experiments.golden record OUT`` runs the comparisons below through the CLI (serial executor, 2 seeds;
no timelines) into ``OUT/<name>/``; ``python -m experiments.golden diff A B`` compares two such folders record by
record, field for field, leaving out the wall-clock fields (``decision_ms_*``, ``wall_s``...), and exits 1 with
the first differences when any record differs. Typical use, from a clean tree at the old and the new commit::

    git worktree add /tmp/old OLD && (cd /tmp/old && python -m experiments.golden record /tmp/golden-old)
    python -m experiments.golden record /tmp/golden-new
    python -m experiments.golden diff /tmp/golden-old /tmp/golden-new
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

RUNS: dict[str, list[str]] = {
    "video": [
        "--pipeline", "video", "--traces", "bursty,steady_high",
        "--policies", "ppo,ppo-raw,ipa,ipa-tuned,ipa-hold,hpa,fa2-low",
    ],
    "sum-qa": [
        "--pipeline", "sum-qa", "--traces", "bursty,steady_high",
        "--policies", "ppo,ppo-raw,ipa,ipa-tuned,ipa-hold,hpa,fa2-low",
    ],
    "infadapter": [
        "--pipeline", "infadapter", "--traces", "infadapter", "--policies", "infadapter,ms-plus,vpa,ipa,ppo",
    ],
    "sponge": ["--pipeline", "sponge", "--traces", "sponge", "--policies", "sponge,fa2,vpa,ppo"],
}  # fmt: skip
"""The comparisons of issue 27's check: name -> ``rlscale compare`` arguments."""

WALL_CLOCK = ("decision_ms", "wall_s", "elapsed", "duration_wall", "time_s_wall")
"""Fields (by prefix) that measure this machine, not the behaviour."""


def record(out: Path, names: Sequence[str]) -> int:
    for name in names:
        args = [sys.executable, "-m", "rlscale.cli", "compare", *RUNS[name], "--seeds", "2"]
        args += ["--executor", "serial", "--no-timelines", "--out", str(out / name), "--overwrite"]
        print(f"golden: {name}", file=sys.stderr)
        done = subprocess.run(args, check=False)
        if done.returncode != 0:
            print(f"golden: {name} failed (exit {done.returncode})", file=sys.stderr)
            return done.returncode
    return 0


def _records(folder: Path) -> dict[tuple, dict]:
    out = {}
    for line in (folder / "records.jsonl").read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            out[(r.get("trace"), r.get("policy"), r.get("seed"))] = r
    return out


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def diff(a: Path, b: Path) -> int:
    problems: list[str] = []
    compared = 0
    for name in sorted(p.name for p in a.iterdir() if (p / "records.jsonl").is_file()):
        old, new = _records(a / name), _records(b / name) if (b / name / "records.jsonl").is_file() else {}
        for key in sorted(set(old) | set(new), key=str):
            if key not in old or key not in new:
                problems.append(f"{name} {key}: only in {'B' if key not in old else 'A'}")
                continue
            compared += 1
            ra, rb = old[key], new[key]
            for field in sorted(set(ra) | set(rb)):
                if field.startswith(WALL_CLOCK):
                    continue
                if not _same(ra.get(field), rb.get(field)):
                    problems.append(f"{name} {key} {field}: {ra.get(field)!r} != {rb.get(field)!r}")
    if problems:
        print("\n".join(problems[:40]), file=sys.stderr)
        print(f"golden: {len(problems)} differences over {compared} records", file=sys.stderr)
        return 1
    print(f"golden: {compared} records identical field for field (wall-clock fields aside)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.golden", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="run the comparisons into OUT")
    rec.add_argument("out", type=Path)
    rec.add_argument("--only", default=",".join(RUNS), help=f"comma-separated subset of {', '.join(RUNS)}")
    dif = sub.add_parser("diff", help="compare two record folders")
    dif.add_argument("a", type=Path)
    dif.add_argument("b", type=Path)
    args = parser.parse_args(argv)
    if args.command == "record":
        names = [n for n in args.only.split(",") if n]
        unknown = [n for n in names if n not in RUNS]
        if unknown:
            parser.error(f"--only: unknown {', '.join(unknown)}")
        return record(args.out, names)
    return diff(args.a, args.b)


if __name__ == "__main__":
    sys.exit(main())
