"""The sidecar in a closed loop with a real Prometheus and the Kubernetes API emulator (all on 127.0.0.1).

The twin plays the pipeline in accelerated time (10x) from its Deployments; the sidecar is the real
``rlscale sidecar`` process. What the tests show is summarised at the end of the pytest output.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from rlscale.model import plan_fixed_variants
from rlscale.sim.cluster import Simulator
from rlscale.spec import load_spec
from tests.integration.closed_loop import SPEEDUP, SUMMARY, ClosedLoop, stage_capacity_rps, step_trace

LOW_RPS, HIGH_RPS, STEP_S = 5.0, 30.0, 150


@pytest.fixture
def video():
    return load_spec("video")


@pytest.fixture
def small(video):
    """Cheapest variants sized for the low load: violates heavily after the step unless scaled."""
    return plan_fixed_variants(video, [st.variants[0].name for st in video.stages], LOW_RPS)


def held_violation_rate(spec, trace, config, since_s: float) -> float:
    """The baseline, measured in the same run: the twin's simulation with nobody scaling it."""
    held = Simulator(spec, trace, config, seed=0, arrivals="poisson", interval_s=1.0)
    while not held.done:
        held.step()
    return violation_rate([(m.end_s, m.arrivals, m.late, m.dropped) for m in held.history], since_s)


@pytest.fixture
def loop_factory(prometheus_server, kube_api, tmp_path):
    made = []

    def make(spec, trace, initial):
        loop = ClosedLoop(spec, trace, initial, prometheus_server, kube_api, tmp_path)
        made.append(loop)
        return loop

    yield make
    for loop in made:
        loop.close()


def violation_rate(rows, since_s: float) -> float:
    """(late + dropped) / arrivals over the ``(end_s, arrivals, late, dropped)`` rows after ``since_s``."""
    sel = [r for r in rows if r[0] > since_s]
    arrivals = sum(r[1] for r in sel)
    return min(1.0, sum(r[2] + r[3] for r in sel) / arrivals) if arrivals else 0.0


@pytest.mark.e2e
def test_a_load_step_makes_the_sidecar_scale_up_and_violations_recover(video, small, loop_factory):
    duration = 480
    trace = step_trace(LOW_RPS, HIGH_RPS, STEP_S, duration)
    # the baseline, measured in the same run: the same twin with nobody scaling it
    held_after = held_violation_rate(video, trace, small, STEP_S + 150)

    loop = loop_factory(video, trace, small)
    loop.start_sidecar()
    assert loop.wait_for(lambda: sum(loop.decisions().values()) >= 1, timeout_s=30), loop.log()
    # wait for the end of the trace
    loop.wait_for(lambda: not loop.twin.running, timeout_s=duration / SPEEDUP + 30)
    ticks = loop.twin.ticks
    d = loop.decisions()
    rc = loop.stop_sidecar()
    log = loop.log()
    assert rc == 0, log

    capacity = [(t.time_s, stage_capacity_rps(video, t.config)) for t in ticks]
    before = [c for t, c in capacity if t < STEP_S]
    scaled_at = next((t for t, c in capacity if t >= STEP_S and c >= HIGH_RPS), None)
    assert scaled_at is not None, log
    intervals = (scaled_at - STEP_S) / video.interval_s
    after = violation_rate([(t.time_s, t.arrivals, t.late, t.dropped) for t in ticks], STEP_S + 150)
    assert max(before) < HIGH_RPS  # nothing scaled up before the load came
    assert intervals <= 6, log  # rate window (3 intervals) + a decision + startup: bounded
    # ipa plans at 100% utilisation, so Poisson bursts and its own rollouts still cost a few percent
    lag = (loop.twin.max_lag_s, float(np.median(loop.twin.tick_wall_s)), float(np.max(loop.twin.tick_wall_s)))
    assert after < 0.05 and held_after > 0.5, (after, held_after, lag)
    assert d["applied"] >= 1 and d["held"] == 0 and d["failed"] == 0
    assert "applied:" in log and "crop" in log
    SUMMARY.append(
        f"scale-up: load {LOW_RPS:g} -> {HIGH_RPS:g} rps at t={STEP_S}s; capacity {max(before):.0f} -> "
        f">= {HIGH_RPS:g} rps {intervals:.1f} intervals after the step; violations from t={STEP_S + 150}s "
        f"{after:.2%} with the sidecar vs {held_after:.2%} held at the initial config; "
        f"{int(d['applied'])} decisions applied, SIGTERM -> exit {rc}; twin tick p50 "
        f"{1e3 * np.median(loop.twin.tick_wall_s):.1f} ms, max lag {loop.twin.max_lag_s:.2f} s"
    )


def _sidecar_patches(loop, since: float = 0.0, until: float = float("inf")):
    from tests.integration.servers import is_sidecar_change_entry

    return [r for r in loop.kube_api.emulator.seen if is_sidecar_change_entry(r) and since <= r["t"] <= until]


@pytest.mark.e2e
def test_prometheus_outage_holds_the_config_and_the_loop_resumes(video, prometheus_server, loop_factory):
    initial = plan_fixed_variants(video, [st.variants[0].name for st in video.stages], 20.0)
    loop = loop_factory(video, step_trace(20.0, 20.0, 0, 600), initial)
    loop.start_sidecar()
    assert loop.wait_for(lambda: loop.decisions()["held"] == 0 and sum(loop.decisions().values()) >= 2, 30)

    prometheus_server.stop()
    down_at = time.monotonic()
    config_at_outage = loop.deployed_config()
    assert loop.wait_for(lambda: loop.decisions()["held"] >= 3, timeout_s=30), loop.log()
    assert loop.proc.poll() is None  # still running
    assert loop.deployed_config() == config_at_outage
    outage_s = time.monotonic() - down_at
    prometheus_server.start()
    up_at = time.monotonic()
    assert not _sidecar_patches(loop, down_at, up_at)  # nothing was changed while blind
    held = loop.decisions()["held"]
    resumed = loop.wait_for(
        lambda: sum(v for k, v in loop.decisions().items() if k != "held") > 0 and "recovered" in loop.log(),
        timeout_s=40,
    )
    assert resumed, loop.log()
    decided = sum(v for k, v in loop.decisions().items() if k != "held")
    metrics_errors = loop.errors()["metrics"]
    rc = loop.stop_sidecar()
    log = loop.log()
    assert rc == 0, log
    assert "holding the current config: Prometheus" in log and "backing off" in log
    assert "recovered: Prometheus" in log
    assert metrics_errors >= held
    SUMMARY.append(
        f"Prometheus outage: stopped for {outage_s:.1f} s; {int(held)} steps held with the config unchanged and no "
        f"patches, backoff logged; after the restart the loop resumed ({int(decided)} decisions); exit {rc}"
    )


@pytest.mark.e2e
def test_api_faults_are_survived_and_the_change_lands(video, small, loop_factory):
    loop = loop_factory(video, step_trace(HIGH_RPS, HIGH_RPS, 0, 600), small)
    emu = loop.kube_api.emulator
    server = emu.inject(500, count=2)
    conflict = emu.inject(409, count=1)
    forbidden = emu.inject(403, count=None)
    loop.start_sidecar()
    assert loop.wait_for(lambda: forbidden.hits >= 3, timeout_s=40), loop.log()
    assert loop.deployed_config() == small  # every faulty answer stored nothing
    errors = loop.errors()
    emu.clear()
    landed = loop.wait_for(lambda: stage_capacity_rps(video, loop.deployed_config()) >= HIGH_RPS, timeout_s=30)
    assert landed, loop.log()
    rc = loop.stop_sidecar()
    log = loop.log()
    assert rc == 0, log
    assert server.hits == 2 and conflict.hits == 1
    assert errors["server"] >= 1 and errors["conflict"] >= 1 and errors["forbidden"] >= 1
    assert "backing off" in log
    forbidden_errors = [ln for ln in log.splitlines() if " ERROR " in ln and "forbidden" in ln]
    assert len(forbidden_errors) == 1, log  # one clear line, not one per step
    assert "recovered" in log
    SUMMARY.append(
        f"API faults: 500 x{server.hits} (backed off), 409 x{conflict.hits} (re-read and retried), 403 x"
        f"{forbidden.hits} (one ERROR line, kept running); after the faults cleared the scale-up landed; exit {rc}"
    )


@pytest.mark.e2e
def test_dry_run_changes_nothing_in_the_emulator(video, small, loop_factory):
    loop = loop_factory(video, step_trace(HIGH_RPS, HIGH_RPS, 0, 600), small)
    loop.start_sidecar("--dry-run")
    assert loop.wait_for(lambda: loop.decisions()["dry_run"] >= 3, timeout_s=30), loop.log()
    rc = loop.stop_sidecar()
    log = loop.log()
    patches = _sidecar_patches(loop)
    assert rc == 0
    assert loop.deployed_config() == small
    assert patches and all(p["params"].get("dryRun") == "All" for p in patches)
    assert "would apply (dry run)" in log and "DRY RUN" in log
    SUMMARY.append(f"--dry-run: {len(patches)} patches, all dryRun=All; the Deployments are unchanged")


@pytest.mark.e2e
def test_the_bundled_agent_runs_live_behind_the_safety_layer(video, small, loop_factory):
    """``ppo`` (the default policy) in the same loop: the agent proposes, the safety layer projects, the
    projection distance is exported.

    The bar is a little lower than ipa's: with a 1 s scrape at 10x, one sample spans 10 simulated seconds, so
    the per-second peaks the agent and its safety floor were trained on are averaged away.
    """
    duration = 400
    trace = step_trace(LOW_RPS, HIGH_RPS, STEP_S, duration)
    held_after = held_violation_rate(video, trace, small, STEP_S + 100)
    loop = loop_factory(video, trace, small)
    loop.start_sidecar(policy="ppo")
    assert loop.wait_for(lambda: sum(loop.decisions().values()) >= 1, timeout_s=60), loop.log()
    loop.wait_for(lambda: not loop.twin.running, timeout_s=duration / SPEEDUP + 30)
    ticks = loop.twin.ticks
    metrics = loop.sidecar_metrics()
    d = loop.decisions(metrics)  # the same scrape: the sidecar keeps deciding while the test reads
    rc = loop.stop_sidecar()
    log = loop.log()
    assert rc == 0, log
    assert "policy ppo + safety" in log
    scaled_at = next(
        (t.time_s for t in ticks if t.time_s >= STEP_S and stage_capacity_rps(video, t.config) >= HIGH_RPS), None
    )
    assert scaled_at is not None, log
    intervals = (scaled_at - STEP_S) / video.interval_s
    after = violation_rate([(t.time_s, t.arrivals, t.late, t.dropped) for t in ticks], STEP_S + 100)
    assert intervals <= 6 and after < 0.10 and held_after > 0.5, (intervals, after, held_after, log)
    assert d["held"] == 0 and d["failed"] == 0
    assert "rlscale_sidecar_projection_distance" in metrics
    assert metrics["rlscale_sidecar_decision_seconds_count"] == sum(d.values())
    n = sum(d.values())
    mean_ms = metrics["rlscale_sidecar_decision_seconds_sum"] / max(1, n) * 1e3
    SUMMARY.append(
        f"ppo live: capacity >= {HIGH_RPS:g} rps {intervals:.1f} intervals after the step; violations from "
        f"t={STEP_S + 100}s {after:.2%} (unscaled: {held_after:.2%}); {int(n)} decisions, mean decide+project "
        f"{mean_ms:.1f} ms"
    )


@pytest.mark.subprocess
@pytest.mark.e2e
def test_once_dry_run_decides_one_step_and_exits_zero(video, small, loop_factory):
    import subprocess
    import sys

    loop = loop_factory(video, step_trace(HIGH_RPS, HIGH_RPS, 0, 600), small)
    loop.wait_for(lambda: len(loop.twin.ticks) >= 40, timeout_s=20)  # 40 simulated s: the rate window is full
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rlscale.cli",
            "sidecar",
            "--spec",
            "video",
            "--prometheus",
            loop.prometheus.url,
            "--kubeconfig",
            str(loop.kubeconfig),
            "--policy",
            "ipa",
            "--speedup",
            "10",
            "--once",
            "--dry-run",
            "--metrics-port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=loop.tmp,
    )
    assert result.returncode == 0, result.stderr
    assert "would apply (dry run)" in result.stdout
    assert loop.deployed_config() == small
