"""A trained agent's actor as numpy arrays: the bundled-agent file format and its torch-free forward pass.

An actor file (``agents/data/ppo_<pipeline>.npz``, a run's ``actor.npz``) is an uncompressed ``.npz`` holding

| array | shape, dtype | meaning |
|---|---|---|
| ``meta`` | () unicode | a JSON object, below |
| ``w0``, ``b0``, ``w1``, ``b1``... | (in, out), (out,) float32 | hidden layers: ``h = tanh(h @ w + b)`` |
| ``w_out``, ``b_out`` | (hidden, sum(nvec)), (sum(nvec),) float32 | the action head's logits |

``meta``: ``format`` (``"rlscale-ppo-actor"``), ``version`` (1), ``pipeline`` (the spec's name), ``activation``
(``"tanh"``), ``layers`` (number of hidden layers), ``obs_shape`` (``[n]``), ``nvec`` (the MultiDiscrete action's
choices), ``codec`` (the observation/action encoding it was trained with: ``load_scale_rps``,
``capacity_levels``, ``history_steps``, ``step_s``, ``obs_high``; since issue 15 also ``observation``
(``conditioned`` or ``absolute``), ``action`` (``planner`` or ``direct``), ``headrooms`` and ``tilts``, which files
written before it lack and read as ``absolute``/``direct``; and ``hold_delta``, the planner's hold-unless-gain
threshold, absent or null in the first planner agents, which have no such choice) and ``training`` (the run's
settings, for the record).
Every other key but ``training`` is required.

The action is the argmax of each sub-action's slice of the logits (``np.split`` at ``cumsum(nvec)[:-1]``): SB3's
deterministic action for its default MLP policy. Reading one needs numpy only (no pickle); `load_actor` checks
every field and shape, so a garbage or foreign file is one `RlscaleError` line and an agent of another pipeline
an `AgentMismatch`.

An agent file is data: nothing here unpickles. A stable-baselines3 model (any zip holding ``policy.pth``, whatever
its name: a run's ``model.zip``, a checkpoint) is refused, since loading one unpickles its ``data`` member, which
can run any code; only ``rlscale train --resume`` and ``python -m agents.ppo MODEL.zip OUT.npz`` read one, and
only a model the user trained (`agents.training`, `agents.conversion`).
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from envs.codecs import (
    ACTION_DESIGNS,
    CAPACITY_LEVELS,
    HEADROOMS,
    HISTORY_STEPS,
    HOLD_DELTA,
    OBS_HIGH,
    STEP_S,
    TILTS,
    Codec,
    ConditionedCodec,
)
from rlscale.errors import RlscaleError
from rlscale.inputs import MAX_JSON_DEPTH, loads_json, special_file_kind
from rlscale.paths import atomic_path
from rlscale.spec import PipelineSpec

FORMAT = "rlscale-ppo-actor"
VERSION = 1
ACTIVATIONS = ("tanh",)
MAX_BYTES = 64 * 1024 * 1024  # a 128x128 actor is about 100 KB; anything near this is not an actor
MAX_LAYERS = 16


class AgentMismatch(RlscaleError):
    """The agent was trained for another pipeline (another name, observations or action choices)."""


@dataclass(frozen=True)
class Actor:
    """A deterministic MLP actor (SB3's default ``MlpPolicy``: tanh hidden layers, a linear head per action).

    Attributes:
        pipeline: the name of the spec the agent was trained for.
        layers: hidden layers ``(w, b)``, ``w`` of shape (in, out).
        head: the action head ``(w_out, b_out)``.
        nvec: choices per sub-action (the env's MultiDiscrete ``nvec``).
        load_scale_rps: the codec's load normalisation used in training.
        capacity_levels: the codec's replica levels used in training.
        training: the training run's settings (provenance only).
        observation: ``absolute`` (`envs.codecs.Codec`: loads / load_scale_rps, no objective; agents
            trained before issue 15) or ``conditioned`` (`envs.codecs.ConditionedCodec`: relative loads and
            the objective's weights).
        action: ``direct`` or ``planner`` (conditioned observations only).
        headrooms: the planner action's headroom levels.
        tilts: the planner action's accuracy tilts.
        hold_delta: the planner action's hold-unless-gain threshold (None: the choice is not in the action).
    """

    pipeline: str
    layers: tuple[tuple[np.ndarray, np.ndarray], ...]
    head: tuple[np.ndarray, np.ndarray]
    nvec: tuple[int, ...]
    load_scale_rps: float
    capacity_levels: tuple[float, ...] = CAPACITY_LEVELS
    training: dict[str, Any] = field(default_factory=dict)
    observation: str = "absolute"
    action: str = "direct"
    headrooms: tuple[float, ...] = HEADROOMS
    tilts: tuple[float, ...] = TILTS
    hold_delta: float | None = None

    @property
    def obs_size(self) -> int:
        return int((self.layers[0][0] if self.layers else self.head[0]).shape[0])

    def act(self, obs: np.ndarray) -> np.ndarray:
        """The deterministic action (argmax of every sub-action's logits) for one observation."""
        h = np.asarray(obs, dtype=np.float32)
        for w, b in self.layers:
            h = np.tanh(h @ w + b)
        logits = h @ self.head[0] + self.head[1]
        return np.array([int(logits[a:b].argmax()) for a, b in self._segments])

    @cached_property
    def _segments(self) -> tuple[tuple[int, int], ...]:
        """``(start, end)`` of every sub-action's logits, computed once (the hot path runs every decision)."""
        ends = np.cumsum(self.nvec).tolist()
        return tuple(zip([0, *ends[:-1]], ends, strict=True))

    def codec(self, spec: PipelineSpec, source: str | Path = "agent") -> Codec:
        """The codec the agent was trained with, for ``spec``; checked to fit it.

        Raises:
            AgentMismatch: the agent was trained for another pipeline, observes another shape or chooses among
                other options (e.g. a spec edited from a bundled one).
        """
        if self.pipeline != spec.name:
            raise AgentMismatch(
                f"{source}: the agent was trained for pipeline {self.pipeline}, not pipeline {spec.name}; "
                f"train one for it with: rlscale train --pipeline {spec.name}"
            )
        codec = self.make_codec(spec)
        expected = codec.observation_shape()
        if (self.obs_size,) != expected:
            raise AgentMismatch(f"{source}: agent observes ({self.obs_size},), pipeline {spec.name} needs {expected}")
        wanted = list(codec.action_nvec())
        if list(self.nvec) != wanted:
            raise AgentMismatch(
                f"{source}: agent chooses among {list(self.nvec)} options per action, pipeline {spec.name} needs "
                f"{wanted} ({self._choices}); train one for it with rlscale train"
            )
        return codec

    @property
    def _choices(self) -> str:
        if self.action == "planner":
            return "a headroom level per stage, hold or re-plan, an accuracy tilt"
        return "variants, batch sizes, cores, replica levels per stage"

    def make_codec(self, spec: PipelineSpec) -> Codec:
        """The codec these settings describe, for ``spec`` (unchecked; `codec` checks)."""
        if self.observation == "conditioned":
            return ConditionedCodec(
                spec,
                load_scale_rps=self.load_scale_rps,
                capacity_levels=self.capacity_levels,
                action=self.action,
                headrooms=self.headrooms,
                tilts=self.tilts,
                hold_delta=self.hold_delta,
            )
        return Codec(spec, load_scale_rps=self.load_scale_rps, capacity_levels=self.capacity_levels)

    def meta(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "pipeline": self.pipeline,
            "activation": "tanh",
            "layers": len(self.layers),
            "obs_shape": [self.obs_size],
            "nvec": list(self.nvec),
            "codec": {
                "load_scale_rps": self.load_scale_rps,
                "capacity_levels": list(self.capacity_levels),
                "history_steps": HISTORY_STEPS,
                "step_s": STEP_S,
                "obs_high": OBS_HIGH,
                "observation": self.observation,
                "action": self.action,
                "headrooms": list(self.headrooms),
                "tilts": list(self.tilts),
                "hold_delta": self.hold_delta,
            },
            "training": self.training,
        }

    def save(self, path: Path) -> Path:
        """Write the actor file atomically (uncompressed ``.npz``); returns ``path``."""
        arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(self.meta(), sort_keys=True))}
        for i, (w, b) in enumerate(self.layers):
            arrays[f"w{i}"], arrays[f"b{i}"] = np.asarray(w, np.float32), np.asarray(b, np.float32)
        arrays["w_out"], arrays["b_out"] = np.asarray(self.head[0], np.float32), np.asarray(self.head[1], np.float32)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        return path


def model_zip_refused(path: Path | str) -> RlscaleError:
    """The one line refusing a stable-baselines3 model where an agent file is expected."""
    return RlscaleError(
        f"{path}: a training checkpoint (a stable-baselines3 model.zip: loading it unpickles torch data, which can "
        "run code), not an agent file; pass the run's actor.npz, or convert a model you trained yourself with: "
        f"python -m agents.ppo {path} OUT.npz (needs the train extra)"
    )


def load_actor(path: Path) -> Actor:
    """Read and validate an actor file (numpy arrays and a JSON record: never unpickled).

    Raises:
        RlscaleError: no such file, not a regular file, a stable-baselines3 model (`model_zip_refused`), not an
            actor file, another format version, or a field or shape is wrong.
    """
    path = Path(path)
    try:
        kind = special_file_kind(path)  # before any open: a FIFO blocks, a device never ends
    except OSError:
        raise RlscaleError(f"no agent at {path}") from None
    if kind is not None:
        raise RlscaleError(f"{path}: is {kind}, not an agent file; pass a run's actor.npz")
    bad = f"{path}: cannot load the agent:"
    try:
        with zipfile.ZipFile(path) as zf:  # sizes first: a small compressed file may unpack to gigabytes
            infos = zf.infolist()
        if any(info.filename == "policy.pth" for info in infos):
            raise model_zip_refused(path)
        unpacked = sum(info.file_size for info in infos)
        if max(unpacked, path.stat().st_size) > MAX_BYTES:
            raise RlscaleError(f"{bad} larger than {MAX_BYTES // 2**20} MiB; is it an actor .npz?")
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except RlscaleError:
        raise
    except Exception as exc:  # noqa: BLE001 - not a zip, truncated, pickled...: one clear line
        raise RlscaleError(f"{bad} not an rlscale actor .npz ({_one_line(exc)})") from None
    if "meta" not in arrays or arrays["meta"].dtype.kind != "U" or arrays["meta"].shape != ():
        raise RlscaleError(f"{bad} not an rlscale actor .npz (no meta record)")
    meta = loads_json(str(arrays["meta"]), bad.rstrip(":"), RlscaleError, "its meta record", MAX_JSON_DEPTH)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise RlscaleError(f"{bad} not an rlscale actor .npz (format {_field(meta, 'format')!r})")
    if meta.get("version") != VERSION:
        raise RlscaleError(
            f"{bad} actor format version {_field(meta, 'version')!r}; this rlscale reads version {VERSION}"
        )
    return _build(meta, arrays, bad)


def _build(meta: dict[str, Any], arrays: dict[str, np.ndarray], bad: str) -> Actor:
    def need(table: dict, key: str, kind: type | tuple[type, ...], where: str = "") -> Any:
        if key not in table:
            raise RlscaleError(f"{bad} {where}{key} is missing")
        value = table[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise RlscaleError(f"{bad} {where}{key} has the wrong type")
        return value

    pipeline = need(meta, "pipeline", str)
    activation = need(meta, "activation", str)
    if activation not in ACTIVATIONS:
        raise RlscaleError(f"{bad} activation {activation!r} (supported: {', '.join(ACTIVATIONS)})")
    n_layers = need(meta, "layers", int)
    if not 0 <= n_layers <= MAX_LAYERS:
        raise RlscaleError(f"{bad} layers must be 0-{MAX_LAYERS}, got {n_layers}")
    obs_shape = need(meta, "obs_shape", list)
    nvec = need(meta, "nvec", list)
    if len(obs_shape) != 1 or not all(isinstance(n, int) and n >= 1 for n in obs_shape):
        raise RlscaleError(f"{bad} obs_shape must be [n], n >= 1")
    if not nvec or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in nvec):
        raise RlscaleError(f"{bad} nvec must be a list of positive integers")
    codec = need(meta, "codec", dict)
    scale = need(codec, "load_scale_rps", (int, float), "codec.")
    if not (math.isfinite(scale) and scale > 0):
        raise RlscaleError(f"{bad} codec.load_scale_rps must be a number > 0, got {scale}")
    levels = need(codec, "capacity_levels", list, "codec.")
    if not levels or not all(isinstance(x, int | float) and math.isfinite(x) and x > 0 for x in levels):
        raise RlscaleError(f"{bad} codec.capacity_levels must be positive numbers")
    for key, ours in (("history_steps", HISTORY_STEPS), ("step_s", STEP_S), ("obs_high", OBS_HIGH)):
        if need(codec, key, (int, float), "codec.") != ours:
            raise AgentMismatch(
                f"{bad} its observations were encoded with codec.{key} = {codec[key]}, this rlscale uses {ours}; "
                "retrain the agent"
            )
    training = meta.get("training", {})
    if not isinstance(training, dict):
        raise RlscaleError(f"{bad} training must be a JSON object")
    # issue 15's codec keys; absent in agents trained before it (absolute observations, direct action)
    observation = codec.get("observation", "absolute")
    action = codec.get("action", "direct")
    if observation not in ("absolute", "conditioned"):
        raise RlscaleError(f"{bad} codec.observation must be absolute or conditioned, got {observation!r}")
    if action not in ACTION_DESIGNS or (observation == "absolute" and action != "direct"):
        raise RlscaleError(f"{bad} codec.action {action!r} is not one of {', '.join(ACTION_DESIGNS)} for {observation}")
    levels_of = {}
    for key, default in (("headrooms", HEADROOMS), ("tilts", TILTS)):
        values = codec.get(key, list(default))
        if (
            not isinstance(values, list)
            or not values
            or not all(
                isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) and x > 0 for x in values
            )
        ):
            raise RlscaleError(f"{bad} codec.{key} must be positive numbers")
        levels_of[key] = tuple(float(x) for x in values)
    hold_delta = codec.get("hold_delta")
    if hold_delta is not None and (
        not isinstance(hold_delta, int | float)
        or isinstance(hold_delta, bool)
        or not math.isfinite(hold_delta)
        or hold_delta < 0
    ):
        raise RlscaleError(f"{bad} codec.hold_delta must be a number >= 0 or null")

    def matrix(name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in arrays:
            raise RlscaleError(f"{bad} array {name} is missing")
        a = arrays[name]
        if a.dtype.kind != "f" or a.shape != shape:
            raise RlscaleError(f"{bad} array {name} is {a.dtype}{list(a.shape)}, expected float{list(shape)}")
        if not np.isfinite(a).all():
            raise RlscaleError(f"{bad} array {name} holds NaN or infinite values")
        return a.astype(np.float32, copy=False)

    width = obs_shape[0]
    layers = []
    for i in range(n_layers):
        if f"w{i}" not in arrays or arrays[f"w{i}"].ndim != 2:
            raise RlscaleError(f"{bad} array w{i} is missing or not a matrix")
        out = int(arrays[f"w{i}"].shape[1])
        layers.append((matrix(f"w{i}", (width, out)), matrix(f"b{i}", (out,))))
        width = out
    head = (matrix("w_out", (width, sum(nvec))), matrix("b_out", (sum(nvec),)))
    expected = {"meta", "w_out", "b_out"} | {f"{c}{i}" for i in range(n_layers) for c in "wb"}
    if set(arrays) - expected:
        raise RlscaleError(f"{bad} unexpected arrays {sorted(set(arrays) - expected)}")
    return Actor(
        pipeline=pipeline,
        layers=tuple(layers),
        head=head,
        nvec=tuple(nvec),
        load_scale_rps=float(scale),
        capacity_levels=tuple(float(x) for x in levels),
        training=training,
        observation=observation,
        action=action,
        headrooms=levels_of["headrooms"],
        tilts=levels_of["tilts"],
        hold_delta=None if hold_delta is None else float(hold_delta),
    )


def random_actor(
    spec: PipelineSpec,
    hidden: tuple[int, ...] = (128, 128),
    seed: int = 0,
    observation: str = "absolute",
    action: str = "direct",
) -> Actor:
    """An untrained actor of the shape a trained one for ``spec`` has (for benchmarks: same cost, other weights)."""
    hold_delta = HOLD_DELTA if action == "planner" else None  # a planner agent of today: three hold choices
    codec = Actor(
        spec.name,
        (),
        (np.zeros((1, 1)), np.zeros(1)),
        (1,),
        50.0,
        observation=observation,
        action=action,
        hold_delta=hold_delta,
    )
    codec = codec.make_codec(spec)
    rng = np.random.default_rng(seed)
    sizes = [codec.observation_shape()[0], *hidden]
    nvec = codec.action_nvec()

    def dense(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
        w = rng.normal(0.0, 1.0 / math.sqrt(n_in), size=(n_in, n_out)).astype(np.float32)
        return w, np.zeros(n_out, np.float32)

    layers = tuple(dense(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    return Actor(
        spec.name,
        layers,
        dense(sizes[-1], sum(nvec)),
        nvec,
        codec.load_scale_rps,
        observation=observation,
        action=action,
        hold_delta=hold_delta,
    )


def _field(meta: Any, key: str) -> Any:
    return meta.get(key) if isinstance(meta, dict) else None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
