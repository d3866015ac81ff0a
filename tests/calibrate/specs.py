"""The small specs the calibrate tests run: stages of the numpy example family (`rlscale.examples.mlp`) with a
made-up profile (the uncalibrated simulator's)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

MLP = "rlscale.examples.mlp:build"
PROFILE = "guess.csv"
PROFILE_TEXT = "variant,batch,cores,latency_s,source,kind\n" + "".join(
    f"{v},{b},1,{0.001 * (1 + b) / 2 * k},a guess,derived\n"
    for v, k in (("mlp-256", 1), ("mlp-512", 2))
    for b in (1, 2)
)
"""mlp-256: 1 ms a batch of 1, 1.5 ms a batch of 2; mlp-512 twice that."""


def mlp_spec_dict(stages: Sequence[str] = ("first", "second"), name: str = "tiny-mlp") -> dict[str, Any]:
    """A chain of ``stages``, each one replica of mlp-256 at batch 1 or 2 on one core; SLA 0.5 s."""
    stage = {
        "task": "mlp",
        "profile": PROFILE,
        "batch_sizes": [1, 2],
        "cores": [1],
        "max_replicas": 1,
        "variants": [{"name": "mlp-256", "accuracy": 0.5, "startup_s": 0.0}],
    }
    return {
        "name": name,
        "description": "numpy stages",
        "sla_s": 0.5,
        "drop_limit_s": 10.0,
        "interval_s": 10.0,
        "batch_timeout_s": 0.0,
        "core_budget": len(stages),
        "objective": {"alpha": 1.0, "beta": 0.01, "gamma": 0.0, "accuracy_method": "product"},
        "stages": [{**stage, "name": s} for s in stages],
    }


def write_mlp_spec(folder: Path, doc: dict[str, Any] | None = None, name: str = "tiny.yaml") -> Path:
    """``doc`` (default `mlp_spec_dict`) as ``folder/name``, its profile beside it."""
    (folder / PROFILE).write_text(PROFILE_TEXT)
    path = folder / name
    path.write_text(yaml.safe_dump(doc or mlp_spec_dict(), sort_keys=False))
    return path
