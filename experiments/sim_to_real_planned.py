"""The planned end-to-end p99 of a calibration's configurations, recomputed with the current planner from its
recorded calibrated spec (experiments/RESULTS.md section 18): the planner's model over the window's seconds
(`rlscale.calibrate.run.window_planned_p99_s`, what ``rlscale calibrate`` now reports as ``planned_p99_s``) and its
steady state at the window's peak, each against the real p99 (the median over the repeats). Nothing is run for real.

    python -m experiments.sim_to_real_planned experiments/results/sim-to-real-v8
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rlscale.calibrate.load import window_trace
from rlscale.calibrate.run import planned_p99_s, window_planned_p99_s
from rlscale.spec import load_spec
from rlscale.workload import load_trace


def planned(folder: Path) -> list[dict[str, object]]:
    doc = json.loads((folder / "calibrate.json").read_text())
    spec = load_spec(folder / "spec-calibrated.yaml")
    variants = [s.variants[0].name for s in spec.stages]
    trace, (start, end) = load_trace(doc["trace"]), doc["window"]
    rows = []
    for c in doc["configs"]:
        window = window_trace(trace, start, end, c["peak_rps"])
        real = c["real"]["e2e"]["p99"]
        over_window = window_planned_p99_s(spec, variants, c["batch"], window)
        at_peak = planned_p99_s(spec, variants, c["batch"], c["peak_rps"])
        rows.append(
            {
                "config": c["name"],
                "real_p99_ms": round(real * 1e3, 2),
                "planned_window_ms": round(over_window * 1e3, 2),
                "window_over_real": round(over_window / real, 3),
                "planned_at_peak_ms": round(at_peak * 1e3, 2),
                "peak_over_real": round(at_peak / real, 3),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="an rlscale calibrate --out folder")
    args = parser.parse_args(argv)
    print(json.dumps(planned(args.folder), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
