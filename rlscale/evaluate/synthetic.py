"""Synthetic chain pipelines for decision-latency benchmarks, built from the bundled profiles.

Stage i alternates between the video pipeline's two tasks (YOLOv5 detectors, ResNet classifiers): 5 variants,
batch sizes 1..64 (powers of two; beyond the tables the latency model's fit answers), cores 1/2/4/8, up to 30
replicas. The SLA grows with the number of stages (1.5 s per stage) and the core budget is 40 per stage.
"""

from __future__ import annotations

from pathlib import Path

from rlscale.spec import ObjectiveSpec, PipelineSpec, StageSpec, load_spec

BATCHES = (1, 2, 4, 8, 16, 32, 64)
CORES = (1, 2, 4, 8)


def synthetic_chain(n_stages: int, accuracy_method: str = "product") -> PipelineSpec:
    """A chain of ``n_stages`` stages; deterministic (no randomness)."""
    video = load_spec("video")
    stages = []
    for i in range(n_stages):
        base = video.stages[i % 2]
        stages.append(
            StageSpec(
                name=f"s{i:02d}-{base.name}",
                task=base.task,
                metric=base.metric,
                batch_sizes=BATCHES,
                cores=CORES,
                min_replicas=1,
                max_replicas=30,
                variants=base.variants,
                profile_path=base.profile_path,
                latency=base.latency,
            )
        )
    return PipelineSpec(
        name=f"synthetic-{n_stages}",
        description=f"synthetic {n_stages}-stage chain from the video profiles",
        sla_s=1.5 * n_stages,
        drop_limit_s=3.0 * n_stages,
        interval_s=10.0,
        batch_timeout_s=1.0,
        core_budget=40 * n_stages,
        objective=ObjectiveSpec(
            alpha=2.0, beta=1.0, gamma=1e-6, accuracy_method=accuracy_method, sla_penalty=100.0, rho_max=1.0
        ),
        stages=tuple(stages),
        source=Path(f"<synthetic-{n_stages}>"),
    )
