"""Bundle the workload traces into ``rlscale/data/traces/`` from the reference copies in ``../shared/data``.

Writes ``eval_windows.csv`` (``pattern,t_s,rps``: IPA's four 20-minute windows damped by 8, InfAdapter's
21-minute window undamped, and ``sponge``: Sponge's static load, the constant rate of its final run for its
duration) and ``twitter_train_days00-13.npz`` (the undamped training split, one uint16 count per second,
compressed). Run from the repository root:

    python experiments/data_prep/bundle_traces.py --shared ../shared/data --out rlscale/data/traces
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import yaml

IPA_PATTERNS = ("bursty", "steady_low", "steady_high", "fluctuating")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("rlscale/data/traces"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    rows: list[tuple[str, int, int]] = []
    with open(args.shared / "ipa/twitter_trace/load_patterns_damped8.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            # IPA's generator damps with int(raw / 8); the column already holds that, check it anyway.
            assert int(r["rps_damped8"]) == int(int(r["rps_raw"]) / 8)
            rows.append((r["pattern"], int(r["t_s"]), int(r["rps_damped8"])))
    with open(args.shared / "infadapter/twitter_trace/eval_window_day15_min82-103.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            rows.append(("infadapter", int(r["t_s"]), int(r["rps"])))
    sponge = yaml.safe_load((args.shared / "sponge/configs/final/dynainf.yaml").read_text())
    assert sponge["workload_type"] == "static"
    load = sponge["workload_config"]
    rows += [("sponge", t, int(load["loads_to_test"])) for t in range(int(load["load_duration"]))]
    with open(args.out / "eval_windows.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["pattern", "t_s", "rps"])
        w.writerows(rows)

    train = np.loadtxt(args.shared / "traces/twitter_train_days00-13_rps.csv", skiprows=1, dtype=np.int64)
    assert train.min() >= 0 and train.max() < 2**16
    np.savez_compressed(args.out / "twitter_train_days00-13.npz", rps=train.astype(np.uint16))
    for name in (*IPA_PATTERNS, "infadapter", "sponge"):
        total = sum(r[2] for r in rows if r[0] == name)
        print(f"{name}: {sum(1 for r in rows if r[0] == name)} s, {total} requests")
    print(f"training split: {train.size} s, {int(train.sum())} requests, max {int(train.max())} rps")


if __name__ == "__main__":
    main()
