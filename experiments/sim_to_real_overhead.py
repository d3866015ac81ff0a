"""Which overhead the calibrated simulator should charge on the core, recomputed from a calibration's recorded runs
(experiments/RESULTS.md section 17): the one measured with 8 requests in flight (what ``rlscale calibrate`` keeps),
or the server's whole CPU a request in the fit runs at batch 1 less the model's mean. For each, the delay and
jitter are refitted to the fit runs' real quantiles (``calibrate.json``'s ``fit``), then the configurations are
simulated on their own arrivals and compared with their real medians (``results.csv``). Nothing is run for real.

    python -m experiments.sim_to_real_overhead experiments/results/sim-to-real-v6
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from rlscale.calibrate.calibrated import write_calibrated_spec
from rlscale.calibrate.fit import QUANTILES, _latencies, best_delay_and_jitter
from rlscale.calibrate.load import window_trace
from rlscale.calibrate.simulated import simulate
from rlscale.spec import load_spec
from rlscale.workload import load_trace


def evaluate(folder: Path, overhead: str) -> dict[str, object]:
    doc = json.loads((folder / "calibrate.json").read_text())
    diagnostics = {c["config"]: c["repeats"][0] for c in json.loads((folder / "run.json").read_text())}
    real = {
        (r["config"], r["where"], r["metric"]): float(r["real"]) for r in csv.DictReader(open(folder / "results.csv"))
    }
    source, calibrated = load_spec(folder / "spec.yaml"), load_spec(folder / "spec-calibrated.yaml")
    variants = [s.variants[0].name for s in calibrated.stages]
    fits = {f["stage"]: f for f in doc["fit"]["stages"]}
    runs = doc["fit"]["runs"]
    trace, (start, end), capacity = load_trace(doc["trace"]), doc["window"], doc["capacity_rps"]
    points, figures = {}, {}
    for st, v in zip(calibrated.stages, variants, strict=True):
        base = [replace(p, delay_s=None, jitter_s=None) for p in st.latency.points.values()]
        o = st.latency.overhead_s(v, 1)
        if overhead == "cpu":
            cpus = [diagnostics[f"fit-{r}"]["server"][st.name]["cpu_per_request_s"] for r in runs if r.endswith("-b1")]
            o = float(np.median(cpus)) - st.latency.mean_s(v, 1, 1)
        points[st.name] = [replace(p, overhead_s=o) for p in base]
        figures[st.name] = {"overhead_ms": round(o * 1e3, 3)}

    def run_at(spec, fraction_or_peak, batch, seed, peak=False):
        rps = fraction_or_peak if peak else fraction_or_peak * capacity
        return simulate(spec, variants, batch, window_trace(trace, start, end, rps), doc["arrivals"], seed)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spec.yaml"
        for s, st in enumerate(calibrated.stages):
            spec = write_calibrated_spec(source, points, path)
            lats = []
            for r in runs:
                fraction, batch = r.removeprefix("load").split("-b")
                lats.append(_latencies(run_at(spec, float(fraction), int(batch), doc["seed"] + 1), s))
            real_q = np.array([fits[st.name]["real_s"][f"fit-{r}"] for r in runs])
            draws = [np.random.default_rng(i).exponential(1.0, lat.size) for i, lat in enumerate(lats)]
            delay, jitter, _ = best_delay_and_jitter(lats, draws, real_q, float(real_q[:, 0].max()))
            points[st.name] = [replace(p, delay_s=delay, jitter_s=jitter) for p in points[st.name]]
            figures[st.name].update(delay_ms=round(delay * 1e3, 3), jitter_ms=round(jitter * 1e3, 3))
        spec = write_calibrated_spec(source, points, path)
        ratios = {}
        for c in doc["configs"]:
            e2e = run_at(spec, c["peak_rps"], c["batch"], doc["seed"], peak=True).e2e_s
            ratios[c["name"]] = [
                round(float(np.nanpercentile(e2e, q)) / real[(c["name"], "end-to-end", f"p{q}_s")], 3)
                for q in QUANTILES
            ]
    mape = {
        f"p{q}": round(100 * float(np.mean([abs(r[i] - 1) for r in ratios.values()])), 1)
        for i, q in enumerate(QUANTILES)
    }
    return {"overhead": overhead, "stages": figures, "sim_over_real": ratios, "mape_percent": mape}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="an rlscale calibrate --out folder with a fit")
    args = parser.parse_args(argv)
    logging.disable(logging.INFO)
    print(json.dumps([evaluate(args.folder, how) for how in ("measured", "cpu")], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
