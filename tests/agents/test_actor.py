"""The actor file format (agents/actor.py): the bundled agents, validation of a file, the numpy forward pass."""

from __future__ import annotations

import dataclasses
import json
import zipfile

import numpy as np
import pytest

from agents.actor import FORMAT, VERSION, Actor, AgentMismatch, load_actor, random_actor
from agents.inference import PPOPolicy, bundled_agent
from envs.codecs import CAPACITY_LEVELS, Codec
from rlscale.errors import RlscaleError
from rlscale.spec import load_spec

BUNDLED = ("video", "sum-qa", "sponge")  # sponge: the observation with the budget features


@pytest.mark.parametrize("pipeline", BUNDLED)
def test_bundled_agent_is_an_actor_with_its_codec_settings(pipeline):
    spec = load_spec(pipeline)
    path = bundled_agent(pipeline)
    assert path.suffix == ".npz" and path.exists(), "run `make agent` to train and bundle the agents"
    assert not path.with_suffix(".json").exists(), "the codec settings live inside the actor file"
    actor = load_actor(path)
    assert actor.pipeline == spec.name
    assert actor.load_scale_rps == 50.0 and actor.capacity_levels == CAPACITY_LEVELS
    assert [w.shape[1] for w, _ in actor.layers] == [128, 128]
    codec = actor.codec(spec, path)
    assert actor.nvec == codec.action_nvec()
    with np.load(path, allow_pickle=False) as npz:
        meta = json.loads(str(npz["meta"]))
    assert (meta["format"], meta["version"]) == (FORMAT, VERSION)
    assert meta["training"]["pipeline"] == pipeline


def test_round_trip_keeps_every_action(tmp_path):
    spec = load_spec("video")
    actor = random_actor(spec, seed=3)
    path = actor.save(tmp_path / "a.npz")
    loaded = load_actor(path)
    assert loaded.nvec == actor.nvec and loaded.pipeline == "video"
    rng = np.random.default_rng(0)
    for obs in rng.uniform(0, 10, size=(300, actor.obs_size)).astype(np.float32):
        np.testing.assert_array_equal(loaded.act(obs), actor.act(obs))
    # and a policy takes it like the bundled one
    assert PPOPolicy(spec, path).actor.nvec == actor.nvec


def _rewrite(path, tmp_path, *, meta=None, drop=(), add=None, name="edited.npz"):
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files if k not in drop}
    if meta is not None:
        m = json.loads(str(arrays["meta"]))
        meta(m)
        arrays["meta"] = np.array(json.dumps(m))
    arrays.update(add(arrays) if callable(add) else add or {})
    out = tmp_path / name
    np.savez(out, **arrays)
    return out


def _del(*keys):
    def edit(m):
        d = m
        for k in keys[:-1]:
            d = d[k]
        del d[keys[-1]]

    return edit


def _set(value, *keys):
    def edit(m):
        d = m
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value

    return edit


BROKEN = {
    "missing load_scale_rps": (dict(meta=_del("codec", "load_scale_rps")), "codec.load_scale_rps is missing"),
    "zero load scale": (dict(meta=_set(0, "codec", "load_scale_rps")), "load_scale_rps must be"),
    "missing pipeline": (dict(meta=_del("pipeline")), "pipeline is missing"),
    "missing nvec": (dict(meta=_del("nvec")), "nvec is missing"),
    "future version": (dict(meta=_set(VERSION + 1, "version")), "version"),
    "foreign format": (dict(meta=_set("something-else", "format")), "not an rlscale actor"),
    "relu": (dict(meta=_set("relu", "activation")), "activation"),
    "no meta": (dict(drop=("meta",)), "no meta record"),
    "missing layer": (dict(drop=("w1",)), "w1"),
    "head too small": (dict(add={"b_out": np.zeros(3, np.float32)}), "b_out"),
    "nan weights": (dict(add=lambda a: {"w0": np.full_like(a["w0"], np.nan)}), "NaN"),
    "extra array": (dict(add={"w7": np.zeros((2, 2), np.float32)}), "unexpected arrays"),
    "integer weights": (dict(add={"b0": np.zeros(128, np.int64)}), "b0"),
    "meta not json": (dict(add={"meta": np.array("{not json")}), "not JSON"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_actor_file_is_one_clear_error(tmp_path, case):
    kwargs, needle = BROKEN[case]
    path = _rewrite(bundled_agent("video"), tmp_path, **kwargs)
    with pytest.raises(RlscaleError, match="cannot load the agent") as info:
        load_actor(path)
    message = str(info.value)
    assert needle in message and "\n" not in message, message


@pytest.mark.parametrize(
    "content",
    [b"", b"not a zip at all", b"PK\x03\x04 this is not a zip archive", None],
    ids=["empty", "text", "fake zip", "pickled"],
)
def test_garbage_is_one_clear_error(tmp_path, content):
    path = tmp_path / "agent.npz"
    if content is None:  # an object array needs pickle, which the loader never allows
        np.savez(path, meta=np.array([{"format": FORMAT}], dtype=object))
    else:
        path.write_bytes(content)
    with pytest.raises(RlscaleError, match="cannot load the agent"):
        PPOPolicy(load_spec("video"), path)


def test_a_foreign_npz_is_refused():
    from agents.lstm import DEFAULT_WEIGHTS

    with pytest.raises(RlscaleError, match="not an rlscale actor"):
        load_actor(DEFAULT_WEIGHTS)


def test_a_zip_bomb_is_refused_before_unpacking(tmp_path):
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("meta.npy", b"\0" * (65 * 2**20))
    assert path.stat().st_size < 2**20
    with pytest.raises(RlscaleError, match="larger than"):
        load_actor(path)


def test_same_name_other_shape_is_a_mismatch(tmp_path):
    """A spec edited from a bundled one keeps the name but not the choices: the shapes decide."""
    spec = load_spec("video")
    actor = load_actor(bundled_agent("video"))
    narrower = dataclasses.replace(actor, nvec=(3, *actor.nvec[1:]))
    with pytest.raises(AgentMismatch, match=r"chooses among \[3, "):
        narrower.codec(spec)


def test_codec_from_the_actor_uses_its_settings():
    spec = load_spec("video")
    actor = random_actor(spec)
    scaled = Actor(actor.pipeline, actor.layers, actor.head, actor.nvec, 80.0)
    codec = scaled.codec(spec)
    assert isinstance(codec, Codec) and codec.load_scale_rps == 80.0
