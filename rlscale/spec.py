"""Pipeline specs: the YAML description of a pipeline, loaded into frozen dataclasses and validated.

A spec names the stages in order; per stage its variants (accuracy in [0, 1], startup delay), the batch sizes and
cores per replica it may use, its replica range and its latency profile; and for the whole pipeline the
end-to-end SLA, drop limit, adaptation interval, batch timeout, core budget and the objective's weights.
See ``rlscale/data/pipelines/video.yaml`` for a complete example.

Every problem is reported as one `SpecError` whose message names the file, the field and what is wrong.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from rlscale.errors import ProfileError, SpecError
from rlscale.inputs import MAX_SPEC_BYTES, MAX_YAML_DEPTH, nesting_depth, read_text_limited
from rlscale.paths import NAME_MAX, is_safe_name, name_rule
from rlscale.profiles import LatencyModel, load_profile

ACCURACY_METHODS = ("sum", "product")

_TOP_KEYS = {
    "name",
    "description",
    "sla_s",
    "drop_limit_s",
    "interval_s",
    "batch_timeout_s",
    "core_budget",
    "objective",
    "stages",
    "kubernetes",
}
_OBJECTIVE_KEYS = {"alpha", "beta", "gamma", "accuracy_method", "sla_penalty", "rho_max"}
_STAGE_KEYS = {
    "name",
    "task",
    "profile",
    "metric",
    "batch_sizes",
    "cores",
    "min_replicas",
    "max_replicas",
    "variants",
}
_VARIANT_KEYS = {"name", "accuracy", "metric_value", "startup_s"}
_KUBE_KEYS = {"namespace", "container", "variant_env", "batch_env", "deployments", "promql"}


# ranges of the spec's numbers: wide enough for any real pipeline, narrow enough that nothing overflows or runs away
MAX_SECONDS = 3600.0  # SLA, drop limit, interval, batch timeout, startup
MAX_BATCH = 4096
MAX_CORES_PER_REPLICA = 1024
MAX_REPLICAS = 10_000
MAX_CORE_BUDGET = 1_000_000
MAX_LIST_ITEMS = 64  # batch sizes or core counts a stage may choose from
MAX_WEIGHT = 1e6  # alpha, beta, gamma
MAX_PENALTY = 1e9  # sla_penalty


def data_dir() -> Path:
    """The bundled data folder (``rlscale/data``)."""
    return Path(str(resources.files("rlscale") / "data"))


def bundled_pipelines() -> list[str]:
    """Names of the bundled pipeline specs, sorted."""
    return sorted(p.stem for p in (data_dir() / "pipelines").glob("*.yaml"))


@dataclass(frozen=True)
class VariantSpec:
    """One model variant a stage can run.

    Attributes:
        name: variant name, unique within its stage.
        accuracy: task accuracy normalised to [0, 1] (used by the ``product`` method).
        metric_value: the raw published metric (informational).
        startup_s: seconds from the decision until a new replica of this variant serves (model load).
    """

    name: str
    accuracy: float
    metric_value: float | None
    startup_s: float


@dataclass(frozen=True)
class StageSpec:
    """One stage of a pipeline; ``latency`` is its profile's latency model."""

    name: str
    task: str
    metric: str
    batch_sizes: tuple[int, ...]
    cores: tuple[int, ...]
    min_replicas: int
    max_replicas: int
    variants: tuple[VariantSpec, ...]
    profile_path: Path
    latency: LatencyModel = field(repr=False, compare=False)

    @property
    def variant_names(self) -> list[str]:
        return [v.name for v in self.variants]

    def variant(self, name: str) -> VariantSpec:
        """The variant called ``name``; `SpecError` if the stage has none."""
        for v in self.variants:
            if v.name == name:
                return v
        raise SpecError(f"stage {self.name!r} has no variant {name!r} (has: {', '.join(self.variant_names)})")

    def rank_accuracy(self, name: str) -> float:
        """Rank-normalised accuracy: the k-th least accurate of n variants scores k/n (the best scores 1)."""
        ordered = sorted(self.variants, key=lambda v: v.accuracy)
        for rank, v in enumerate(ordered, start=1):
            if v.name == name:
                return rank / len(ordered)
        raise SpecError(f"stage {self.name!r} has no variant {name!r}")


@dataclass(frozen=True)
class ObjectiveSpec:
    """Weights of ``alpha*A - beta*C - gamma*B`` and how violations are charged in the score.

    Attributes:
        alpha: weight of pipeline accuracy A.
        beta: weight of total cores C.
        gamma: weight of total batch size B.
        accuracy_method: ``sum`` of rank-normalised accuracies or ``product`` of raw accuracies.
        sla_penalty: score charged per unit violation rate (default ``100*beta``: 1% violations cost one core).
        rho_max: highest planned utilisation of a stage (throughput must cover load / rho_max).
    """

    alpha: float
    beta: float
    gamma: float
    accuracy_method: str
    sla_penalty: float
    rho_max: float


@dataclass(frozen=True)
class KubeSpec:
    """How the pipeline runs on Kubernetes (the spec's optional ``kubernetes`` section; every field has a default).

    Attributes:
        namespace: namespace of the stage Deployments (the sidecar's ``--namespace`` overrides it; with neither,
            the sidecar pod's own namespace, else ``default``).
        container: the container that serves the model (None: the Deployment's first container).
        variant_env: env var that names the model variant the container loads.
        batch_env: env var that sets the container's maximum batch size.
        deployments: Deployment name by stage; a stage not listed is found by the labels
            ``rlscale.io/pipeline=<pipeline>`` and ``rlscale.io/stage=<stage>``.
        promql: PromQL templates that override `rlscale.kube.prometheus.DEFAULT_TEMPLATES`, by name.
    """

    namespace: str | None = None
    container: str | None = None
    variant_env: str = "MODEL_VARIANT"
    batch_env: str = "MAX_BATCH_SIZE"
    deployments: dict[str, str] = field(default_factory=dict)
    promql: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PipelineSpec:
    """A validated pipeline spec. Build it with `load_spec`."""

    name: str
    description: str
    sla_s: float
    drop_limit_s: float
    interval_s: float
    batch_timeout_s: float
    core_budget: int
    objective: ObjectiveSpec
    stages: tuple[StageSpec, ...]
    source: Path
    kubernetes: KubeSpec = field(default_factory=KubeSpec, compare=False)

    def stage(self, name: str) -> StageSpec:
        for s in self.stages:
            if s.name == name:
                return s
        raise SpecError(f"pipeline {self.name!r} has no stage {name!r}")

    def accuracy(self, variants: list[str] | tuple[str, ...]) -> float:
        """Pipeline accuracy A of one variant per stage, by the spec's accuracy method."""
        if len(variants) != len(self.stages):
            raise SpecError(f"expected {len(self.stages)} variants, got {len(variants)}")
        if self.objective.accuracy_method == "sum":
            return sum(s.rank_accuracy(v) for s, v in zip(self.stages, variants, strict=True))
        return math.prod(s.variant(v).accuracy for s, v in zip(self.stages, variants, strict=True))

    def to_dict(self) -> dict[str, Any]:
        """A plain-data view (what ``rlscale pipelines --json`` prints)."""
        return {
            "name": self.name,
            "description": self.description,
            "sla_s": self.sla_s,
            "drop_limit_s": self.drop_limit_s,
            "interval_s": self.interval_s,
            "batch_timeout_s": self.batch_timeout_s,
            "core_budget": self.core_budget,
            "objective": {
                "alpha": self.objective.alpha,
                "beta": self.objective.beta,
                "gamma": self.objective.gamma,
                "accuracy_method": self.objective.accuracy_method,
                "sla_penalty": self.objective.sla_penalty,
                "rho_max": self.objective.rho_max,
            },
            "stages": [
                {
                    "name": s.name,
                    "task": s.task,
                    "metric": s.metric,
                    "batch_sizes": list(s.batch_sizes),
                    "cores": list(s.cores),
                    "min_replicas": s.min_replicas,
                    "max_replicas": s.max_replicas,
                    "variants": [
                        {
                            "name": v.name,
                            "accuracy": v.accuracy,
                            "metric_value": v.metric_value,
                            "startup_s": v.startup_s,
                        }
                        for v in s.variants
                    ],
                }
                for s in self.stages
            ],
            "kubernetes": {
                "namespace": self.kubernetes.namespace,
                "container": self.kubernetes.container,
                "variant_env": self.kubernetes.variant_env,
                "batch_env": self.kubernetes.batch_env,
                "deployments": dict(self.kubernetes.deployments),
                "promql": dict(self.kubernetes.promql),
            },
        }


class _Reader:
    """Field access with error messages that name the file and the field path."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, problem: str) -> SpecError:
        return SpecError(f"{self.path}: {where}: {problem}")

    def mapping(self, value: Any, where: str, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"must be a mapping, got {type(value).__name__}")
        unknown = sorted(set(map(str, value)) - allowed)
        if unknown:
            raise self.fail(
                f"{where}.{unknown[0]}" if where else unknown[0],
                f"unknown field (allowed: {', '.join(sorted(allowed))})",
            )
        return value

    def required(self, m: dict[str, Any], key: str, where: str) -> Any:
        if key not in m or m[key] is None:
            raise self.fail(self._join(where, key), "required field is missing")
        return m[key]

    @staticmethod
    def _join(where: str, key: str) -> str:
        return f"{where}.{key}" if where else key

    def string(self, m: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
        value = m.get(key, default) if default is not None else self.required(m, key, where)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(self._join(where, key), f"must be a non-empty string, got {value!r}")
        return value.strip()

    def number(
        self,
        m: dict[str, Any],
        key: str,
        where: str,
        *,
        default: float | None = None,
        minimum: float | None = None,
        exclusive_min: bool = False,
        maximum: float | None = None,
    ) -> float:
        value = m.get(key, default) if default is not None else self.required(m, key, where)
        name = self._join(where, key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self.fail(name, f"must be a number, got {value!r}")
        if minimum is not None:
            if exclusive_min and not value > minimum:
                raise self.fail(name, f"must be > {minimum:g}, got {value:g}")
            if not exclusive_min and value < minimum:
                raise self.fail(name, f"must be >= {minimum:g}, got {value:g}")
        if maximum is not None and value > maximum:
            raise self.fail(name, f"must be <= {maximum:g}, got {value:g}")
        return float(value)

    def integer(
        self, m: dict[str, Any], key: str, where: str, *, minimum: int, maximum: int, default: int | None = None
    ) -> int:
        value = m.get(key, default) if default is not None else self.required(m, key, where)
        name = self._join(where, key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(name, f"must be an integer, got {value!r}")
        if value < minimum:
            raise self.fail(name, f"must be >= {minimum}, got {value}")
        if value > maximum:
            raise self.fail(name, f"must be <= {maximum}, got {value}")
        return value

    def int_list(self, m: dict[str, Any], key: str, where: str, *, maximum: int) -> tuple[int, ...]:
        value = self.required(m, key, where)
        name = self._join(where, key)
        if not isinstance(value, list) or not value:
            raise self.fail(name, f"must be a non-empty list of positive integers, got {value!r}")
        if len(value) > MAX_LIST_ITEMS:
            raise self.fail(name, f"has {len(value)} entries; at most {MAX_LIST_ITEMS}")
        for item in value:
            if isinstance(item, bool) or not isinstance(item, int) or item < 1:
                raise self.fail(name, f"must contain positive integers only, got {item!r}")
            if item > maximum:
                raise self.fail(name, f"must contain integers <= {maximum}, got {item}")
        if len(set(value)) != len(value):
            raise self.fail(name, f"has duplicates: {value}")
        return tuple(sorted(value))


def _resolve_spec_path(name_or_path: str | Path) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists() or "/" in str(name_or_path):
        return candidate
    bundled = data_dir() / "pipelines" / f"{name_or_path}.yaml"
    if bundled.exists():
        return bundled
    raise SpecError(
        f"unknown pipeline {str(name_or_path)!r}: not a bundled name ({', '.join(bundled_pipelines())}) nor a YAML file"
    )


def _resolve_profile(r: _Reader, stage: dict[str, Any], where: str, task: str) -> Path:
    if "profile" in stage and stage["profile"] is not None:
        raw = r.string(stage, "profile", where)
        path = Path(raw)
        return path if path.is_absolute() else (r.path.parent / path)
    path = data_dir() / "profiles" / f"{task}.csv"
    if not path.exists():
        known = sorted(p.stem for p in (data_dir() / "profiles").glob("*.csv"))
        raise r.fail(
            f"{where}.task",
            f"no bundled profile for task {task!r} (known: {', '.join(known)}); set 'profile' to a CSV path",
        )
    return path


def _parse_stage(r: _Reader, raw: Any, where: str, cache: dict[Path, LatencyModel]) -> StageSpec:
    m = r.mapping(raw, where, _STAGE_KEYS)
    name = r.string(m, "name", where)
    task = r.string(m, "task", where)
    metric = r.string(m, "metric", where, default="accuracy")
    batch_sizes = r.int_list(m, "batch_sizes", where, maximum=MAX_BATCH)
    cores = r.int_list(m, "cores", where, maximum=MAX_CORES_PER_REPLICA)
    min_replicas = r.integer(m, "min_replicas", where, minimum=1, maximum=MAX_REPLICAS, default=1)
    max_replicas = r.integer(m, "max_replicas", where, minimum=1, maximum=MAX_REPLICAS)
    if max_replicas < min_replicas:
        raise r.fail(f"{where}.max_replicas", f"must be >= min_replicas ({min_replicas}), got {max_replicas}")
    raw_variants = r.required(m, "variants", where)
    if not isinstance(raw_variants, list) or not raw_variants:
        raise r.fail(f"{where}.variants", "stage has no variants (need a non-empty list)")
    variants: list[VariantSpec] = []
    for j, rv in enumerate(raw_variants):
        vw = f"{where}.variants[{j}]"
        vm = r.mapping(rv, vw, _VARIANT_KEYS)
        vname = r.string(vm, "name", vw)
        if any(v.name == vname for v in variants):
            raise r.fail(f"{vw}.name", f"duplicate variant {vname!r} in stage {name!r}")
        accuracy = r.number(vm, "accuracy", vw, minimum=0.0, maximum=1.0)
        metric_value = None
        if vm.get("metric_value") is not None:
            metric_value = r.number(vm, "metric_value", vw)
        startup = r.number(vm, "startup_s", vw, minimum=0.0, maximum=MAX_SECONDS)
        variants.append(VariantSpec(vname, accuracy, metric_value, startup))

    profile_path = _resolve_profile(r, m, where, task)
    if profile_path not in cache:
        try:
            cache[profile_path] = load_profile(profile_path)
        except ProfileError as exc:
            raise r.fail(f"{where}.profile", str(exc)) from None
    latency = cache[profile_path]
    for j, v in enumerate(variants):
        if v.name not in latency.variants:
            raise r.fail(
                f"{where}.variants[{j}].name",
                f"unknown variant {v.name!r}: no rows in profile {profile_path.name} "
                f"(has: {', '.join(latency.variants)})",
            )
        for b in batch_sizes:
            if not latency.has_batch(v.name, b):
                raise r.fail(
                    f"{where}.batch_sizes",
                    f"batch size {b} has no profile point for variant {v.name!r} in {profile_path.name}",
                )
    return StageSpec(
        name=name,
        task=task,
        metric=metric,
        batch_sizes=batch_sizes,
        cores=cores,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        variants=tuple(variants),
        profile_path=profile_path,
        latency=latency,
    )


def parse_spec(raw: Any, path: Path) -> PipelineSpec:
    """Validate already-parsed YAML data; ``path`` is used in messages and to resolve relative profiles."""
    r = _Reader(path)
    m = r.mapping(raw, "", _TOP_KEYS)
    name = r.string(m, "name", "")
    if not is_safe_name(name):  # the name becomes part of file paths (run folders, bundled agents, plots)
        raise r.fail("name", f"{name!r} is not a usable pipeline name ({name_rule(NAME_MAX)})")
    description = r.string(m, "description", "", default=name)
    sla_s = r.number(m, "sla_s", "", minimum=0.0, exclusive_min=True, maximum=MAX_SECONDS)
    drop_limit_s = r.number(m, "drop_limit_s", "", minimum=0.0, exclusive_min=True, maximum=MAX_SECONDS)
    if drop_limit_s < sla_s:
        raise r.fail("drop_limit_s", f"must be >= sla_s ({sla_s:g}), got {drop_limit_s:g}")
    # the simulator and the traces count whole seconds: an interval below 1 s would never end a run
    interval_s = r.number(m, "interval_s", "", minimum=1.0, maximum=MAX_SECONDS)
    batch_timeout_s = r.number(m, "batch_timeout_s", "", minimum=0.0, maximum=MAX_SECONDS)
    core_budget = r.integer(m, "core_budget", "", minimum=1, maximum=MAX_CORE_BUDGET)

    om = r.mapping(r.required(m, "objective", ""), "objective", _OBJECTIVE_KEYS)
    alpha = r.number(om, "alpha", "objective", minimum=0.0, maximum=MAX_WEIGHT)
    beta = r.number(om, "beta", "objective", minimum=0.0, maximum=MAX_WEIGHT)
    gamma = r.number(om, "gamma", "objective", minimum=0.0, maximum=MAX_WEIGHT)
    method = r.string(om, "accuracy_method", "objective")
    if method not in ACCURACY_METHODS:
        raise r.fail("objective.accuracy_method", f"must be one of {', '.join(ACCURACY_METHODS)}, got {method!r}")
    sla_penalty = r.number(om, "sla_penalty", "objective", default=100.0 * beta, minimum=0.0, maximum=MAX_PENALTY)
    rho_max = r.number(om, "rho_max", "objective", default=1.0, minimum=0.0, exclusive_min=True, maximum=1.0)
    objective = ObjectiveSpec(alpha, beta, gamma, method, sla_penalty, rho_max)

    raw_stages = r.required(m, "stages", "")
    if not isinstance(raw_stages, list) or not raw_stages:
        raise r.fail("stages", "pipeline has no stages (need a non-empty list)")
    cache: dict[Path, LatencyModel] = {}
    stages: list[StageSpec] = []
    for i, rs in enumerate(raw_stages):
        stage = _parse_stage(r, rs, f"stages[{i}]", cache)
        if any(s.name == stage.name for s in stages):
            raise r.fail(f"stages[{i}].name", f"duplicate stage {stage.name!r}")
        stages.append(stage)
    smallest = sum(s.min_replicas * min(s.cores) for s in stages)
    if smallest > core_budget:
        raise r.fail(
            "core_budget",
            f"{core_budget} cores cannot hold the smallest configuration (min_replicas x min cores = {smallest})",
        )
    kubernetes = _parse_kube(r, m.get("kubernetes"), [s.name for s in stages])
    return PipelineSpec(
        name=name,
        description=description,
        sla_s=sla_s,
        drop_limit_s=drop_limit_s,
        interval_s=interval_s,
        batch_timeout_s=batch_timeout_s,
        core_budget=core_budget,
        objective=objective,
        stages=tuple(stages),
        source=path,
        kubernetes=kubernetes,
    )


_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def is_k8s_name(value: str, max_len: int = 63) -> bool:
    """A Kubernetes name: lowercase letters, digits and '-', starting and ending with a letter or digit; 63
    characters for a DNS label (namespaces, containers), 253 for object names."""
    return bool(_K8S_NAME.match(value)) and len(value) <= max_len


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _parse_kube(r: _Reader, raw: Any, stage_names: list[str]) -> KubeSpec:
    from rlscale.kube.prometheus import check_template  # no client import: only the template names and fields

    if raw is None:
        return KubeSpec()
    m = r.mapping(raw, "kubernetes", _KUBE_KEYS)
    where = "kubernetes"
    names = {}
    for key in ("namespace", "container"):
        if m.get(key) is not None:
            value = r.string(m, key, where)
            if not is_k8s_name(value):
                raise r.fail(f"{where}.{key}", f"must be a Kubernetes name (lowercase, digits, '-'), got {value!r}")
            names[key] = value
    envs = {}
    for key in ("variant_env", "batch_env"):
        if m.get(key) is not None:
            value = r.string(m, key, where)
            if not _ENV_NAME.match(value):
                raise r.fail(f"{where}.{key}", f"must be an environment variable name, got {value!r}")
            envs[key] = value
    if envs.get("variant_env", "MODEL_VARIANT") == envs.get("batch_env", "MAX_BATCH_SIZE"):
        raise r.fail(f"{where}.batch_env", "variant and batch size need two different env vars")
    deployments: dict[str, str] = {}
    if m.get("deployments") is not None:
        dm = r.mapping(m["deployments"], f"{where}.deployments", set(stage_names))
        for stage in dm:
            value = r.string(dm, stage, f"{where}.deployments")
            if not is_k8s_name(value, max_len=253):
                raise r.fail(f"{where}.deployments.{stage}", f"must be a Kubernetes name, got {value!r}")
            if value in deployments.values():
                raise r.fail(f"{where}.deployments.{stage}", f"Deployment {value!r} is already another stage's")
            deployments[str(stage)] = value
    promql: dict[str, str] = {}
    if m.get("promql") is not None:
        from rlscale.kube.prometheus import DEFAULT_TEMPLATES

        pm = r.mapping(m["promql"], f"{where}.promql", set(DEFAULT_TEMPLATES))
        for key in pm:
            value = r.string(pm, key, f"{where}.promql")
            problem = check_template(key, value)
            if problem:
                raise r.fail(f"{where}.promql.{key}", problem)
            promql[str(key)] = value
    return KubeSpec(**names, **envs, deployments=deployments, promql=promql)


def load_spec(name_or_path: str | Path) -> PipelineSpec:
    """Load a bundled pipeline by name (``video``) or a spec YAML by path, validated.

    Raises:
        SpecError: one message naming the file, the field and the problem.
    """
    path = _resolve_spec_path(name_or_path)
    text = read_text_limited(path, MAX_SPEC_BYTES, SpecError, "spec")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "YAML"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{path}: {where}: not valid YAML: {problem}") from None
    except RecursionError:
        raise SpecError(f"{path}: YAML nested too deeply to be a spec") from None
    if raw is None:
        raise SpecError(f"{path}: spec is empty")
    if nesting_depth(raw, MAX_YAML_DEPTH) > MAX_YAML_DEPTH:
        raise SpecError(f"{path}: YAML nested deeper than {MAX_YAML_DEPTH} levels; a spec needs 4")
    return parse_spec(raw, path)
