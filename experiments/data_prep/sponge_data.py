"""Bundle Sponge's benchmark data from the reference copy in ``../shared/data/sponge`` (see its README).

Writes ``<out>/bandwidth/lte-bus.csv`` (``t_s,bandwidth_bytes_per_s``: Sponge's 4G/LTE bandwidth trace, one row
per second) and ``<out>/pipelines/sponge.yaml`` (Sponge's one-stage YOLOv5n pipeline with per-request SLOs and
in-place resizing). The ``sponge`` trace (static 10 rps for 600 s) is written by ``bundle_traces.py`` beside the
other evaluation traces. Every choice is explained in ``rlscale/data/PROVENANCE.md``. Run from the repository root:

    python -m experiments.data_prep.sponge_data --shared ../shared/data --out rlscale/data
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Sequence
from pathlib import Path

import yaml

from experiments.data_prep.derive_profiles import write_spec

BANDWIDTH_NAME = "lte-bus"
PAYLOAD_KB = 284.0  # the image size of Sponge's comparison (comparison.ipynb; README of the reference copy)


def read_bandwidth_log(path: Path) -> list[int]:
    """Sponge's bandwidth per line of ``report_bus_0001.log`` in bytes per second.

    Sponge computes ``int(bytes_received / interval_ms)`` (bytes per ms, truncated); we keep that truncation, so
    the remaining budgets equal Sponge's, and write it as bytes per second (x 1000, exact).
    """
    out = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        _ts, _elapsed, _lat, _lon, received, interval_ms = line.split()
        out.append(int(int(received) / int(interval_ms)) * 1000)
    return out


def write_bandwidth(values: list[int], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["t_s", "bandwidth_bytes_per_s"])
        w.writerows((t, v) for t, v in enumerate(values))


def sponge_spec(shared: Path, video: dict) -> dict:
    """Sponge's pipeline: one YOLOv5n stage, SLO 1 s, one replica of 1..16 cores, per-request SLOs."""
    run = yaml.safe_load((shared / "sponge/configs/final/dynainf.yaml").read_text())
    node = run["nodes"][0]
    assert node["model_variants"] == "yolov5n" and run["sla"] == 1000 and run["adaptation_interval"] == 1
    yolo = next(v for v in video["stages"][0]["variants"] if v["name"] == "yolov5n")
    return {
        "name": "sponge",
        "description": "Sponge's benchmark: one YOLOv5n stage, one replica resized in place, per-request SLOs over 4G",
        "sla_s": run["sla"] / 1000.0,
        "drop_limit_s": float(run["drop_limit"]),
        "interval_s": float(run["adaptation_interval"]),
        "batch_timeout_s": float(node["max_batch_time"]),
        "core_budget": int(run["cpu_cap"]),
        "objective": {"alpha": 1.0, "beta": 1.0, "gamma": 0.001, "accuracy_method": "product"},
        "request_slo": {"payload_kb": PAYLOAD_KB, "bandwidth": BANDWIDTH_NAME},
        "in_place_resize": True,
        "stages": [
            {
                "name": "crop",
                "task": "crop",
                "metric": video["stages"][0]["metric"],
                # Sponge searches batch 1..16; the spec offers the batch sizes its measured grid has
                "batch_sizes": [1, 2, 4, 8, 16],
                "cores": list(range(1, int(run["cpu_cap"]) + 1)),
                "min_replicas": 1,
                "max_replicas": 1,
                "variants": [dict(yolo)],
            }
        ],
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"), help="reference data folder")
    parser.add_argument("--out", type=Path, default=Path("rlscale/data"), help="bundled data folder")
    args = parser.parse_args(argv)

    values = read_bandwidth_log(args.shared / "sponge/report_bus_0001.log")
    write_bandwidth(values, args.out / "bandwidth" / f"{BANDWIDTH_NAME}.csv")
    print(f"{BANDWIDTH_NAME}: {len(values)} s, {min(values)}..{max(values)} bytes/s")
    video = yaml.safe_load((args.out / "pipelines/video.yaml").read_text())
    spec = sponge_spec(args.shared, video)
    write_spec(args.out / "pipelines/sponge.yaml", spec, script="experiments/data_prep/sponge_data.py")
    print("sponge.yaml written")


if __name__ == "__main__":
    main()
