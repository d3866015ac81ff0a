"""The calibrated profile and spec.

A stage's calibrated profile holds, for the variant calibrate served, one point per batch size at one core: the
distribution of the batch's service time (``latency_s`` = p99, ``p50_s``, ``mean_s``, ``p90_s``; the runs
themselves in ``NAME.runs.csv``, `rlscale.profiles.runs_path`) and ``overhead_s``, the serving cost of one request
on the replica's core (`rlscale.calibrate.measure.overhead`). The service time is the model's own, profiled
in-process on the server's CPU, with the serving overhead apart: the simulator charges it per request on the
replica's core ahead of the batcher (DESIGN.md section 4), so that a request alone costs the overhead and the model
once each, as the served request did. For a team's server without a factory it is the served request, overhead
included, and ``overhead_s`` is left empty. The *served* variant (``where="served"``, the simulator's
``sim_served``) takes the served requests' run times instead, with the same overhead: the overhead at no load is then
inside each run and charged again, which the report lets one compare. The stage's other variants keep their points
from the spec's profile, as they were.

The calibrated spec is the spec with each stage's ``profile`` pointing at its calibrated CSV, and its ``cores``
the one core a replica was measured with (planning other core counts would extrapolate from one).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from rlscale.calibrate.measure import StageProfile
from rlscale.paths import atomic_write_text
from rlscale.profiles import ProfilePoint
from rlscale.spec import PipelineSpec, load_spec

log = logging.getLogger("rlscale.calibrate")

CALIBRATED_CORES = 1
"""Cores a replica runs with while calibrate measures it."""


def _source(profile: StageProfile, where: str, date: str) -> str:
    from rlscale.profiling.results import cpu_model

    runs = profile.service_runs(where)
    where = "in-process" if runs is profile.in_process else f"served by {profile.target.url or 'rlscale serve'}"
    text = (
        f"rlscale calibrate {where} runs of {len(runs[0].samples_s) if runs else 0} on CPU {profile.cpu} "
        f"({cpu_model()}); overhead: {profile.overhead_how}; {date}"
    )
    return text.replace(",", " ").replace("\n", " ")


def calibrated_points(profile: StageProfile, where: str = "in-process", date: str | None = None) -> list[ProfilePoint]:
    """The calibrated variant's points (module docstring), one per batch size; ``where="served"``: the served
    requests' distribution instead (`rlscale.calibrate.measure.StageProfile.service_runs`), with the same overhead."""
    from rlscale.profiling.results import today

    source = _source(profile, where, date or today())
    points = []
    for m in profile.service_runs(where):
        runs = np.asarray(m.samples_s, dtype=float)
        p50, p90, p99 = (float(x) for x in np.percentile(runs, [50, 90, 99]))
        points.append(
            ProfilePoint(
                profile.target.variant,
                m.batch,
                float(CALIBRATED_CORES),
                p99,
                source,
                "measured",
                p50_s=p50,
                mean_s=float(runs.mean()),
                p90_s=p90,
                overhead_s=profile.overhead_s,
                runs_s=tuple(float(x) for x in runs),
            )
        )
    return points


def write_profile(path: Path, points: Sequence[ProfilePoint]) -> Path:
    """Write a profile CSV and, where its points keep runs, ``NAME.runs.csv`` beside it (a stale one is removed):
    `rlscale.profiling.results.write_points`."""
    from rlscale.profiling.results import write_points

    return write_points(path, points)


def stage_points(spec: PipelineSpec, stage_name: str, calibrated: Sequence[ProfilePoint]) -> list[ProfilePoint]:
    """A stage's calibrated profile: the calibrated variant's points, then the stage's other variants' points from
    its profile in the spec, unchanged."""
    stage = next(s for s in spec.stages if s.name == stage_name)
    variants = {p.variant for p in calibrated}
    others = [p for p in stage.latency.points.values() if p.variant not in variants]
    return [*calibrated, *others]


def write_calibrated_spec(
    spec: PipelineSpec, points: Mapping[str, Sequence[ProfilePoint]], path: Path, note: str = ""
) -> PipelineSpec:
    """Write the calibrated spec to ``path`` and each stage's calibrated profile beside it
    (``<spec stem>-<stage>.csv`` and its runs), then read it back (`rlscale.spec.load_spec`): what it returns, so
    what was written is proved to load.

    Args:
        spec: the spec calibrated.
        points: each calibrated stage's calibrated variant's points (`calibrated_points`).
        path: the spec's file.
        note: a comment for its first lines.
    """
    doc: dict[str, Any] = spec.to_document()
    for raw, stage in zip(doc["stages"], spec.stages, strict=True):
        if stage.name not in points:
            continue
        profile = path.with_name(f"{path.stem}-{stage.name}.csv")
        write_profile(profile, stage_points(spec, stage.name, points[stage.name]))
        raw["profile"] = profile.name
        if list(raw["cores"]) != [CALIBRATED_CORES]:
            log.info(
                "stage %s: the calibrated spec plans %d core a replica, as measured (the spec had %s)",
                stage.name,
                CALIBRATED_CORES,
                ",".join(map(str, raw["cores"])),
            )
            raw["cores"] = [CALIBRATED_CORES]
    head = "".join(f"# {line}\n" for line in note.splitlines())
    atomic_write_text(path, head + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return load_spec(path)
