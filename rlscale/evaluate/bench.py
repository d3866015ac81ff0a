"""``rlscale bench``: speed figures, always against a baseline measured in the same run.

``sim``: request-stage events per second of the simulator on the video pipeline over the bursty trace with the
``static-max`` configuration (median of ``repeats`` runs), and of the naive reference simulator
(`rlscale.sim.naive`, one heap event per request per stage) on exactly the same arrivals and configuration.

``decision_ms`` (``ppo``, ``ppo+safety``): an agent's full decision, see `bench_agents`.

``decision_ms`` (solvers): time of one full planning decision (build the options, build and solve the model) for IPA's
ILP with CBC (``ipa-cbc``) and HiGHS (``ipa-highs``) and for the exact DP (``dp``), on synthetic chains of 2, 5,
10 and 20 stages (`rlscale.evaluate.synthetic`: 5 variants, batch sizes up to 64, up to 30 replicas per stage) at a
low (5 rps) and a high (30 rps) load. p50/p99 pool both loads; ``by_load`` keeps them apart. An ILP solve that
hits the time limit counts as the limit (a lower bound of its real time) and is counted in ``timeouts``.

``train``: environment steps per second of PPO training (stable-baselines3, rlscale's default settings) on
``rlscale/Pipeline-v0`` (the video pipeline) and on Gymnasium's ``CartPole-v1`` in the same run, and their ratio;
CartPole's environment costs next to nothing, so its figure is the ceiling the learner allows
(`rlscale.evaluate.train_throughput`). Needs the ``train`` extra (torch).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from agents.static import StaticPolicy
from ilp_baseline.policy import plan
from ilp_baseline.problem import PlanningError
from rlscale.evaluate.synthetic import synthetic_chain
from rlscale.sim.cluster import Simulator
from rlscale.sim.naive import simulate_naive
from rlscale.spec import load_spec
from rlscale.workload import load_trace


def bench_sim(pipeline: str = "video", trace_name: str = "bursty", repeats: int = 5) -> dict[str, Any]:
    spec = load_spec(pipeline)
    trace = load_trace(trace_name)
    config = StaticPolicy(spec, "max", trace.peak_rps).config
    fast: list[float] = []
    naive: list[float] = []
    events = 0
    for _ in range(repeats):
        t = time.perf_counter()
        sim = Simulator(spec, trace, config, seed=0)
        while not sim.done:
            sim.step()
        sim.drain()
        elapsed = time.perf_counter() - t
        events = sim.events
        fast.append(events / elapsed)
        t = time.perf_counter()
        ref = simulate_naive(spec, config, sim.entry_s)
        elapsed = time.perf_counter() - t
        naive.append(int(ref["events"][0]) / elapsed)
    fast_med = statistics.median(fast)
    naive_med = statistics.median(naive)
    return {
        "events_per_s": round(fast_med),
        "naive_events_per_s": round(naive_med),
        "ratio": round(fast_med / naive_med, 2),
        "events": events,
        "repeats": repeats,
        "workload": f"{pipeline}/{trace_name}/static-max",
    }


STAGES = (2, 5, 10, 20)
LOADS_RPS = {"low": 5.0, "high": 30.0}
SOLVER_NAMES = {"ipa-cbc": "cbc", "ipa-highs": "highs", "dp": "dp"}


def bench_decisions(
    stages: tuple[int, ...] = STAGES,
    ilp_repeats: int = 3,
    dp_repeats: int = 20,
    time_limit_s: float = 10.0,
    progress=None,
) -> dict[str, Any]:
    """Decision latency per solver and chain length (see the module docstring)."""
    out: dict[str, Any] = {name: {} for name in SOLVER_NAMES}
    for n in stages:
        spec = synthetic_chain(n)
        for name, solver in SOLVER_NAMES.items():
            samples: dict[str, list[float]] = {}
            timeouts = 0
            objectives = []
            for load_name, load in LOADS_RPS.items():
                times = samples.setdefault(load_name, [])
                for _ in range(dp_repeats if solver == "dp" else ilp_repeats):
                    if progress is not None:
                        progress(f"decision latency: {name}, {n} stages, {load_name} load")
                    t = time.perf_counter()
                    try:
                        result = plan(spec, load, "ipa", solver, time_limit_s=time_limit_s)
                        objectives.append(result.objective)
                        times.append((time.perf_counter() - t) * 1e3)
                    except PlanningError:
                        timeouts += 1
                        times.append(time_limit_s * 1e3)
            pooled = np.concatenate([np.asarray(v) for v in samples.values()])
            out[name][str(n)] = {
                "p50": round(float(np.percentile(pooled, 50)), 3),
                "p99": round(float(np.percentile(pooled, 99)), 3),
                "by_load": {
                    k: {"p50": round(float(np.percentile(v, 50)), 3), "p99": round(float(np.percentile(v, 99)), 3)}
                    for k, v in samples.items()
                },
                "timeouts": timeouts,
                "runs": int(pooled.size),
            }
    return out


def bench_agents(stages: tuple[int, ...] = STAGES, repeats: int = 50, progress=None) -> dict[str, Any]:
    """Decision latency of an (untrained) PPO agent alone and behind the safety layer, per chain length.

    The agent's actor has the shape a trained one would have (SB3's default 128x128 tanh MLP, as numpy, like the
    bundled agents: `agents.actor.random_actor`); training changes its weights, not its cost. No torch.
    Each decision: observation (with the LSTM prediction), the network's forward pass, decoding, and for
    ``ppo+safety`` the projection onto the feasible set. States alternate between the low and the high load.
    """
    from agents.actor import random_actor
    from agents.inference import PPOPolicy
    from ilp_baseline.safety import SafetyLayer
    from rlscale.control import Controller
    from rlscale.types import PipelineState

    out: dict[str, Any] = {"ppo": {}, "ppo+safety": {}}
    for n in stages:
        spec = synthetic_chain(n)
        actor = random_actor(spec, hidden=(128, 128), seed=0)
        for name, safety in (("ppo", False), ("ppo+safety", True)):
            if progress is not None:
                progress(f"decision latency: {name}, {n} stages")
            agent = PPOPolicy(spec, actor)
            policy = Controller(agent, SafetyLayer(spec) if safety else None)
            config = agent.decide(PipelineState(0.0, 10.0, np.full(10, 5.0), _first_config(spec), None))
            times = []
            for i in range(repeats):
                load = LOADS_RPS["low"] if i % 2 == 0 else LOADS_RPS["high"]
                state = PipelineState(10.0 * i, 10.0, np.full(120, load), config, None)
                t = time.perf_counter()
                config = policy.decide(state)
                times.append((time.perf_counter() - t) * 1e3)
            arr = np.asarray(times[2:])  # the first calls warm caches
            out[name][str(n)] = {
                "p50": round(float(np.percentile(arr, 50)), 3),
                "p99": round(float(np.percentile(arr, 99)), 3),
                "runs": int(arr.size),
            }
    return out


def _first_config(spec):
    from rlscale.model import plan_fixed_variants

    return plan_fixed_variants(spec, [st.cheapest_variant for st in spec.stages], 5.0)


SECTIONS = ("sim", "decisions", "train")
"""What ``rlscale bench --sections`` selects: ``sim``, ``decisions`` (``decision_ms`` and ``ratios``), ``train``."""
TRAIN_STEPS = 4096
"""Default steps of each training of the ``train`` section (two rollouts of 4 x 512 steps)."""


def bench_train(timesteps: int = TRAIN_STEPS, progress=None) -> dict[str, Any]:
    """PPO training throughput on the pipeline and on CartPole (`rlscale.evaluate.train_throughput.train_throughput`).

    Raises:
        ImportError: the ``train`` extra (torch, stable-baselines3) is not installed.
    """
    from rlscale.evaluate.train_throughput import train_throughput

    if progress is not None:
        progress(f"training throughput: PPO, {timesteps} steps on the pipeline and on CartPole")
    return train_throughput(timesteps)


def run_bench(
    repeats: int = 5,
    quick: bool = False,
    progress=None,
    sections: tuple[str, ...] = SECTIONS,
    train_steps: int = TRAIN_STEPS,
) -> dict[str, Any]:
    """The sections asked for; sections not built yet are absent, never faked.

    Args:
        repeats: simulator runs per figure.
        quick: decision latency on 2 and 5 stages only, one ILP repeat (for smoke tests).
        progress: optional callable taking a status line.
        sections: which of `SECTIONS` to measure.
        train_steps: steps of each training of the ``train`` section.

    Raises:
        ImportError: ``train`` asked for without the ``train`` extra (checked before anything runs).
    """
    if "train" in sections:
        from rlscale.evaluate.train_throughput import require_train_extra

        require_train_extra()
    report: dict[str, Any] = {}
    if "sim" in sections:
        report["sim"] = bench_sim(repeats=repeats)
    if "decisions" in sections:
        if quick:
            report["decision_ms"] = bench_decisions(stages=(2, 5), ilp_repeats=1, dp_repeats=3, progress=progress)
            report["decision_ms"].update(bench_agents(stages=(2,), repeats=6, progress=progress))
        else:
            report["decision_ms"] = bench_decisions(progress=progress)
            report["decision_ms"].update(bench_agents(progress=progress))
        dm = report["decision_ms"]
        report["ratios"] = {
            f"cbc_over_dp_{n}": round(dm["ipa-cbc"][n]["p50"] / dm["dp"][n]["p50"], 1) for n in dm["dp"]
        }
    if "train" in sections:
        report["train"] = bench_train(train_steps, progress=progress)
    return report
