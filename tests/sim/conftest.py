"""A one-stage spec with known latencies, per-request SLOs, a queue discipline and in-place resizing as asked."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlscale.spec import PipelineSpec, parse_spec

# latency (s) of a batch of b by cores: 1 core 0.1 s per batch of 1, 4 cores 0.025 s; batch 2 takes 1.5x
LATENCY = {(1, 1): 0.1, (2, 1): 0.15, (1, 4): 0.025, (2, 4): 0.0375}


@pytest.fixture
def sponge_like(tmp_path: Path):
    """``sponge_like(request_slo=None, discipline="fifo", in_place=False, ...)``: a parsed one-stage spec."""

    def make(
        *,
        request_slo: dict | None = None,
        discipline: str = "fifo",
        in_place: bool = False,
        resize_s: float = 0.5,
        sla_s: float = 1.0,
        drop_s: float = 100.0,
        timeout_s: float = 0.0,
        max_pools: int = 1,
        stages: int = 1,
    ) -> PipelineSpec:
        rows = ["variant,batch,cores,latency_s,source,kind"]
        for (b, c), lat in LATENCY.items():
            rows.append(f"fast,{b},{c},{lat},test,measured")
            rows.append(f"slow,{b},{c},{lat * 2},test,measured")
        (tmp_path / "p.csv").write_text("\n".join(rows) + "\n")
        stage = {
            "task": "t",
            "profile": "p.csv",
            "batch_sizes": [1, 2],
            "cores": [1, 4],
            "max_replicas": 8,
            "max_pools": max_pools,
            "queue_discipline": discipline,
            "variants": [
                {"name": "fast", "accuracy": 0.5, "startup_s": 5.0},
                {"name": "slow", "accuracy": 0.8, "startup_s": 7.0},
            ],
        }
        raw = {
            "name": "one",
            "sla_s": sla_s,
            "drop_limit_s": max(drop_s, sla_s),
            "interval_s": 10,
            "batch_timeout_s": timeout_s,
            "core_budget": 64,
            "objective": {"alpha": 1, "beta": 1, "gamma": 0, "accuracy_method": "product"},
            "stages": [{"name": f"s{i}", **stage} for i in range(stages)],
            "in_place_resize": in_place,
            "resize_s": resize_s,
        }
        if request_slo is not None:
            raw["request_slo"] = request_slo
        return parse_spec(raw, tmp_path / "one.yaml")

    return make


@pytest.fixture
def bandwidth_csv(tmp_path: Path):
    """``bandwidth_csv([b0, b1, ...])``: a bandwidth trace (bytes/s, one value per second) in the spec's folder."""

    def write(values: list[float], name: str = "bw.csv") -> str:
        lines = ["t_s,bandwidth_bytes_per_s", *(f"{t},{v}" for t, v in enumerate(values))]
        (tmp_path / name).write_text("\n".join(lines) + "\n")
        return name

    return write
