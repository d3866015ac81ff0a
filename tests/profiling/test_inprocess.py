"""In-process profiling (`rlscale.profiling.inprocess`): every point in a fresh worker pinned to its cores with the
thread limits set before the factory's module is imported; the factory checked first; each failure one message
naming the variant and batch."""

from __future__ import annotations

import json
import os
import textwrap
import uuid

import pytest

from rlscale.errors import ProfilingError
from rlscale.profiling.inprocess import (
    Factory,
    check_cores,
    choose_variants,
    load_factory,
    profile_in_process,
    usable_cpus,
)

USER_FACTORY = """
import json, os
from pathlib import Path

# what the worker's environment holds when the factory's module is imported (before any framework would be)
AT_IMPORT = {"omp": os.environ.get("OMP_NUM_THREADS"), "cpus": sorted(os.sched_getaffinity(0))}
VARIANTS = ("small", "big")


def build(variant):
    if variant == "broken":
        raise RuntimeError("weights file missing")
    if variant == "notuple":
        return 42
    if variant == "crash":
        return (lambda batch: os._exit(7)), (lambda b: [0.0] * b)
    width = {"small": 10, "big": 20}[variant]

    def make_batch(b):
        return [[1.0] * width for _ in range(b)]

    def model(batch):
        if len(batch) > 4:
            raise ValueError(f"batch of {len(batch)} is over this model's limit of 4")
        seen = {**AT_IMPORT, "pid": os.getpid(), "now_cpus": sorted(os.sched_getaffinity(0))}
        Path(__file__).with_name(f"seen-{variant}-{len(batch)}-{len(seen['now_cpus'])}.json").write_text(json.dumps(seen))
        return sum(map(sum, batch))

    return model, make_batch
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A factory module of the user's own, importable here and in the workers (they get this process's path)."""
    name = f"userfactory_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(USER_FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


@pytest.mark.slow
def test_each_point_runs_in_a_fresh_worker_pinned_to_its_cores(user_module, tmp_path):
    cores = sorted({1, len(usable_cpus())})
    factory = load_factory(f"{user_module}:build")
    assert factory.variants == ("small", "big")
    points = list(profile_in_process(factory, ["small", "big"], [1, 2], cores, warmup=1, repeats=3))
    assert [(m.variant, m.cores, m.batch) for m in points] == [
        (v, c, b) for v in ("small", "big") for c in cores for b in (1, 2)
    ]
    pids = set()
    for m in points:
        assert len(m.samples_s) == 3 and all(s > 0 for s in m.samples_s)
        assert len(m.worker["cpus"]) == m.cores
        assert m.worker["env"]["OMP_NUM_THREADS"] == str(m.cores) == m.worker["env"]["OPENBLAS_NUM_THREADS"]
        assert m.worker["torch_threads"] is None  # this factory never imports torch
        seen = json.loads((tmp_path / f"seen-{m.variant}-{m.batch}-{m.cores}.json").read_text())
        assert seen["omp"] == str(m.cores)  # set before the module was imported
        assert len(seen["cpus"]) == m.cores and seen["now_cpus"] == m.worker["cpus"]
        pids.add(seen["pid"])
    assert len(pids) == len(points) and os.getpid() not in pids


def test_the_parent_environment_is_left_as_it_was(user_module, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    (m,) = profile_in_process(load_factory(f"{user_module}:build"), ["small"], [1], [1], warmup=0, repeats=1)
    assert m.worker["env"]["OMP_NUM_THREADS"] == "1" and m.worker["env"]["MKL_NUM_THREADS"] == "1"
    assert os.environ["OMP_NUM_THREADS"] == "7" and "MKL_NUM_THREADS" not in os.environ


@pytest.mark.parametrize(
    "variant, batch, message",
    [
        ("broken", 1, "the factory failed for variant 'broken': RuntimeError: weights file missing"),
        ("notuple", 1, "factory failed for variant 'notuple': returned int, expected a tuple (model, make_batch)"),
        ("small", 8, "variant 'small' rejects batch 8: ValueError: batch of 8 is over this model's limit of 4"),
        ("crash", 1, "variant 'crash', batch 1, 1 core(s): the worker died without a result (exit code 7)"),
    ],
)
def test_a_failing_point_is_one_message_naming_it(user_module, variant, batch, message):
    factory = Factory(f"{user_module}:build", None)
    with pytest.raises(ProfilingError) as info:
        list(profile_in_process(factory, [variant], [batch], [1], warmup=1, repeats=2))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_the_factory_is_checked_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    tag = uuid.uuid4().hex[:8]
    (tmp_path / f"boom_{tag}.py").write_text("raise RuntimeError('boom at import')\n")
    (tmp_path / f"needsdep_{tag}.py").write_text("import nonexistent_dependency_xyz\n")
    (tmp_path / f"novariants_{tag}.py").write_text("def build(v):\n    pass\nVALUE = 1\n")
    (tmp_path / f"badvariants_{tag}.py").write_text("def build(v):\n    pass\nVARIANTS = 'ab'\n")
    cases = {
        "nosuchmodule_xyz:build": "no module named 'nosuchmodule_xyz'",
        f"boom_{tag}:build": f"importing boom_{tag} failed: RuntimeError: boom at import",
        f"needsdep_{tag}:build": "ModuleNotFoundError: No module named 'nonexistent_dependency_xyz'",
        f"novariants_{tag}:missing": f"module novariants_{tag} has no function 'missing'",
        f"novariants_{tag}:VALUE": "VALUE is a int, not a function",
        f"badvariants_{tag}:build": "VARIANTS must be a tuple of names",
        f"novariants_{tag}": "expected MODULE:FUNCTION",
    }
    for name, message in cases.items():
        with pytest.raises(ProfilingError) as info:
            load_factory(name)
        assert message in str(info.value), (name, str(info.value))


def test_variants_default_to_the_modules_and_are_checked_against_them():
    with_variants = Factory("m:build", ("a", "b"))
    assert choose_variants(with_variants, None) == ["a", "b"]
    assert choose_variants(with_variants, ["b", "b"]) == ["b"]
    with pytest.raises(ProfilingError, match="c not in m.VARIANTS"):
        choose_variants(with_variants, ["a", "c"])
    assert choose_variants(Factory("m:build", None), ["x"]) == ["x"]
    with pytest.raises(ProfilingError, match="no VARIANTS; name the variants with --variants"):
        choose_variants(Factory("m:build", None), None)


def test_more_cores_than_the_machine_gives_is_refused():
    n = len(usable_cpus())
    assert check_cores([1, n]) == usable_cpus()
    with pytest.raises(ProfilingError, match=f"--cores {n + 1}: this machine lets rlscale use {n} CPU"):
        check_cores([n + 1])


TORCH_FACTORY = """
import json
from pathlib import Path
import torch

def build(variant):
    def model(batch):
        seen = {"inference": torch.is_inference_mode_enabled(), "threads": torch.get_num_threads()}
        Path(__file__).with_name("torch-seen.json").write_text(json.dumps(seen))
        return batch * 2
    return model, lambda b: torch.ones(b, 4)
"""


@pytest.mark.slow
def test_a_torch_model_runs_in_inference_mode_with_torch_threads_capped(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    name = f"torchfactory_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(TORCH_FACTORY))
    monkeypatch.syspath_prepend(str(tmp_path))
    (m,) = profile_in_process(load_factory(f"{name}:build"), ["t"], [2], [1], warmup=0, repeats=1)
    assert m.worker["torch_threads"] == 1
    assert json.loads((tmp_path / "torch-seen.json").read_text()) == {"inference": True, "threads": 1}
