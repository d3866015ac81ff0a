"""What one calibration runs: the stages (a model factory to serve, or a server the team runs), the CPUs, the
trace window and the configurations; and the checks that turn bad input into one `RlscaleError` line before
anything is started.

A stage is named on the command line by ``--model [STAGE=]MODULE:FUNCTION`` (calibrate serves it with ``rlscale
serve``) and/or ``--url STAGE=URL`` (a server the team runs; calibrate starts nothing for it). Unnamed factories
go to the stages no other flag named, in the spec's order; a single unnamed factory serves every such stage (a
model family). A stage with both is profiled in-process from its factory and served at the URL.
"""

from __future__ import annotations

import logging
import math
import os
import re
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rlscale.errors import RlscaleError

if TYPE_CHECKING:  # the parser reads this module's defaults: no spec or workload machinery on import
    from rlscale.spec import PipelineSpec, StageSpec
    from rlscale.workload import Trace

log = logging.getLogger("rlscale.calibrate")

MAX_LOAD_FRACTION = 1.5
"""The largest ``--load-fraction``: a share of the bottleneck's capacity at batch 1 (batching carries more)."""
MAX_WINDOW_S = 3600
"""The longest trace window one configuration replays."""
MAX_BATCH = 256
MAX_CONFIGS = 64
MAX_REPEATS = 100
DEFAULT_WINDOW = "0:60"
DEFAULT_FRACTIONS = (0.5, 0.8)
DEFAULT_BATCHES = (1, 4)
DEFAULT_FIT_FRACTIONS = (0.4, 0.7)
"""The fit runs' loads (`rlscale.calibrate.fit`): batch 1, arrivals of another seed than the configurations'."""
FIT_MODES = ("overhead", "off-core", "on-core")
"""What the fit fits besides the delay and jitter (`rlscale.calibrate.fit`; the first is the default): the overhead on
the core on a line up to the server's CPU a request, nothing more, or the overhead and a batch cost on a grid."""
DEFAULT_REPEATS = 3
DEFAULT_PROFILE_REPEATS = 100
DEFAULT_WARMUP = 5
_FACTORY = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_]\w*$")
_MODEL_PATH = re.compile(r"^(?P<base>.*?)/v2/models/(?P<name>[^/]+)/?$")


@dataclass(frozen=True)
class StageTarget:
    """One stage as calibrate measures it.

    Attributes:
        name: the spec's stage name (the server's model name and the metrics' ``stage`` label when calibrate
            serves it).
        variant: the variant served and profiled (one of the stage's variants in the spec).
        factory: ``MODULE:FUNCTION`` (`rlscale serve`'s and `rlscale profile`'s), None for a server the team runs.
        url: the base URL of the team's server, None when calibrate serves the stage itself.
        model_name: the model's name on the server.
        cpu: the CPU its server runs on (calibrate's servers; None for ``url``).
    """

    name: str
    variant: str
    factory: str | None = None
    url: str | None = None
    model_name: str = ""
    cpu: int | None = None

    @property
    def served_here(self) -> bool:
        """Whether calibrate starts this stage's server (no ``--url`` for it)."""
        return self.url is None


@dataclass(frozen=True)
class Configuration:
    """One configuration of the table: every stage at ``batch``, one replica of one core each, under a load whose
    peak is ``load_fraction`` x the bottleneck's capacity at batch 1.

    Attributes:
        name: ``load0.5-b4``.
        load_fraction: the window's peak as a share of the bottleneck stage's capacity at batch 1.
        batch: every stage's largest batch.
    """

    name: str
    load_fraction: float
    batch: int

    @classmethod
    def of(cls, load_fraction: float, batch: int) -> Configuration:
        return cls(f"load{load_fraction:g}-b{batch}", float(load_fraction), int(batch))


def configurations(fractions: Sequence[float], batches: Sequence[int]) -> tuple[Configuration, ...]:
    """One configuration per (load fraction, batch) pair, fractions outermost, duplicates dropped."""
    pairs = dict.fromkeys((float(f), int(b)) for f in fractions for b in batches)
    if len(pairs) > MAX_CONFIGS:
        raise RlscaleError(f"{len(pairs)} configurations (load fractions x batches): at most {MAX_CONFIGS} a run")
    return tuple(Configuration.of(f, b) for f, b in pairs)


@dataclass(frozen=True)
class Settings:
    """One calibration (the command line's values, checked).

    Attributes:
        spec: the pipeline spec (with ``--set`` applied): its stages, SLA, batch timeout and profiles (the
            uncalibrated simulator's).
        stages: one `StageTarget` per spec stage, in order.
        trace: the whole trace the window is cut from.
        window: ``(start_s, end_s)`` of the trace.
        configs: the configurations, in run order.
        repeats: real runs per configuration, each on freshly started servers.
        out: the output folder (exists, writable).
        seed: the arrivals' seed (Poisson) and the simulator's.
        arrivals: ``poisson`` or ``even`` (the simulator's arrival processes).
        profile_repeats: timed runs per profile point (in-process and served).
        warmup: untimed runs per profile point.
        capacity_rps: the bottleneck's capacity the loads are scaled to; None: measured (1 / the largest served
            p50 of one item).
        generator_cpu: the CPU the open-loop generator (and the served profiles' client) runs on.
        write_spec: where to write the calibrated spec (None: only into ``out``).
        fit_fractions: the fit runs' load fractions (`rlscale.calibrate.fit`); empty: no fit (the measured
            overhead, no delay).
        fit_mode: what the fit fits besides the delay and jitter (`FIT_MODES`).
        spec_arg: the spec as named on the command line (for the report).
    """

    spec: PipelineSpec
    stages: tuple[StageTarget, ...]
    trace: Trace
    window: tuple[int, int]
    configs: tuple[Configuration, ...]
    out: Path
    repeats: int = DEFAULT_REPEATS
    seed: int = 0
    arrivals: str = "poisson"
    profile_repeats: int = DEFAULT_PROFILE_REPEATS
    warmup: int = DEFAULT_WARMUP
    capacity_rps: float | None = None
    generator_cpu: int = 0
    write_spec: Path | None = None
    fit_fractions: tuple[float, ...] = DEFAULT_FIT_FRACTIONS
    fit_mode: str = "overhead"
    spec_arg: str = ""
    overrides: tuple[str, ...] = field(default=())

    @property
    def window_s(self) -> int:
        return self.window[1] - self.window[0]

    @property
    def max_batch(self) -> int:
        return max(c.batch for c in self.configs)


def parse_window(text: str, trace: Trace) -> tuple[int, int]:
    """``START:END`` (whole seconds of the trace, ``START < END``, at most `MAX_WINDOW_S` long, inside the trace,
    some load in it).

    Raises:
        RlscaleError: anything else, one line.
    """
    start_text, sep, end_text = text.partition(":")
    try:
        start, end = int(start_text), int(end_text)
    except ValueError:
        start = end = -1
    if not sep or start < 0 or end <= start:
        raise RlscaleError(f"--window {text!r}: expected START:END, whole seconds of the trace with START < END")
    if end - start > MAX_WINDOW_S:
        raise RlscaleError(f"--window {text}: {end - start} s; at most {MAX_WINDOW_S} s a window")
    if end > trace.duration_s:
        raise RlscaleError(f"--window {text}: trace {trace.name} has {trace.duration_s} s; END must be at most that")
    if float(trace.rps[start:end].max()) <= 0:
        raise RlscaleError(f"--window {text}: trace {trace.name} has no request in it; choose a window with load")
    return start, end


def check_fractions(values: Sequence[float]) -> list[float]:
    """Load fractions in (0, `MAX_LOAD_FRACTION`]."""
    for f in values:
        if not (math.isfinite(f) and 0 < f <= MAX_LOAD_FRACTION):
            raise RlscaleError(f"--load-fraction {f:g}: must be > 0 and <= {MAX_LOAD_FRACTION:g}")
    return list(values)


def _split_named(item: str, flag: str, what: str) -> tuple[str | None, str]:
    """``STAGE=VALUE`` -> (STAGE, VALUE); ``VALUE`` -> (None, VALUE)."""
    name, sep, value = item.partition("=")
    if not sep:
        return None, item.strip()
    name, value = name.strip(), value.strip()
    if not name or not value:
        raise RlscaleError(f"{flag} {item!r}: expected {what}")
    return name, value


def _check_stage(name: str, spec: PipelineSpec, flag: str, item: str) -> None:
    names = [s.name for s in spec.stages]
    if name not in names:
        raise RlscaleError(f"{flag} {item}: unknown stage {name!r}; the spec's stages: {', '.join(names)}")


def parse_models(items: Sequence[str], spec: PipelineSpec, taken: set[str]) -> dict[str, str]:
    """``--model [STAGE=]MODULE:FUNCTION`` items -> ``{stage: factory}`` (module docstring's rules).

    Args:
        items: the values as given.
        spec: the spec whose stages they name.
        taken: stages given by ``--url`` alone elsewhere: unnamed factories skip them.
    """
    named: dict[str, str] = {}
    unnamed: list[str] = []
    for item in items:
        stage, factory = _split_named(item, "--model", "[STAGE=]MODULE:FUNCTION")
        if not _FACTORY.match(factory):
            raise RlscaleError(
                f"--model {item!r}: expected [STAGE=]MODULE:FUNCTION, such as rlscale.examples.mlp:build"
            )
        if stage is None:
            unnamed.append(factory)
            continue
        _check_stage(stage, spec, "--model", item)
        if stage in named:
            raise RlscaleError(f"--model {item}: stage {stage!r} has a factory already ({named[stage]})")
        named[stage] = factory
    rest = [s.name for s in spec.stages if s.name not in named and s.name not in taken]
    if len(unnamed) == 1 and rest:
        named.update(dict.fromkeys(rest, unnamed[0]))
    elif unnamed:
        if len(unnamed) != len(rest):
            raise RlscaleError(
                f"--model: {len(unnamed)} factories without a stage for {len(rest)} stage(s) left "
                f"({', '.join(rest) or 'none'}); name them as STAGE=MODULE:FUNCTION"
            )
        named.update(zip(rest, unnamed, strict=True))
    return named


def parse_urls(items: Sequence[str], spec: PipelineSpec) -> dict[str, tuple[str, str]]:
    """``--url STAGE=URL`` items -> ``{stage: (base URL, model name)}``. The model's name on the server is the
    stage's, unless the URL ends in ``/v2/models/NAME``.

    Raises:
        RlscaleError: no ``STAGE=``, an unknown stage, the same stage twice, or not an http(s) URL.
    """
    from rlscale.profiling.served import base_url

    urls: dict[str, tuple[str, str]] = {}
    for item in items:
        stage, url = _split_named(item, "--url", "STAGE=URL")
        if stage is None:
            raise RlscaleError(f"--url {item!r}: expected STAGE=URL (which stage the server serves)")
        _check_stage(stage, spec, "--url", item)
        if stage in urls:
            raise RlscaleError(f"--url {item}: stage {stage!r} has a URL already")
        model = stage
        match = _MODEL_PATH.match(url)
        if match:
            url, model = match["base"], urllib.parse.unquote(match["name"])
        urls[stage] = (base_url(url), model)
    return urls


def parse_variants(items: Sequence[str], spec: PipelineSpec) -> dict[str, str]:
    """``--variant STAGE=V`` items -> ``{stage: variant}``, each a variant of its stage in the spec."""
    chosen: dict[str, str] = {}
    for item in items:
        stage, variant = _split_named(item, "--variant", "STAGE=VARIANT")
        if stage is None:
            raise RlscaleError(f"--variant {item!r}: expected STAGE=VARIANT")
        _check_stage(stage, spec, "--variant", item)
        known = [v.name for v in next(s for s in spec.stages if s.name == stage).variants]
        if variant not in known:
            raise RlscaleError(f"--variant {item}: stage {stage} has no variant {variant!r} ({', '.join(known)})")
        chosen[stage] = variant
    return chosen


def choose_variant(stage: StageSpec, factory_variants: Sequence[str] | None, given: str | None) -> str:
    """The variant a stage is calibrated with: ``given`` (``--variant``), else the first of the stage's variants
    that the factory's module lists in ``VARIANTS`` (any, when it lists none).

    Raises:
        RlscaleError: the factory builds none of the stage's variants, or not the one given.
    """
    names = [v.name for v in stage.variants]
    if factory_variants is None:
        return given or names[0]
    if given is not None:
        if given not in factory_variants:
            raise RlscaleError(
                f"--variant {stage.name}={given}: the factory builds {', '.join(factory_variants)}, not {given}"
            )
        return given
    for name in names:
        if name in factory_variants:
            return name
    raise RlscaleError(
        f"stage {stage.name}: its variants ({', '.join(names)}) are none of its factory's VARIANTS "
        f"({', '.join(factory_variants)}); name them alike in the spec"
    )


def assign_cpus(stage_names: Sequence[str], cpus: Sequence[int]) -> tuple[dict[str, int], int]:
    """Each served stage's CPU (its own while there are enough, round-robin once stages outnumber them, said in a
    log line) and the load generator's: a CPU no server has, else the last stage's (the pipeline's end).

    Args:
        stage_names: the stages calibrate serves, in order.
        cpus: the CPUs this process may run on.

    Returns:
        ``({stage: cpu}, generator_cpu)``.
    """
    cpus = sorted(cpus)
    if not cpus:
        raise RlscaleError("this process may run on no CPU")
    placed = {name: cpus[i % len(cpus)] for i, name in enumerate(stage_names)}
    if len(stage_names) > len(cpus):
        shared = ", ".join(
            f"CPU {c}: {' and '.join(n for n in stage_names if placed[n] == c)}" for c in sorted(set(placed.values()))
        )
        log.warning("%d stages on %d CPU(s): stages share cores (%s)", len(stage_names), len(cpus), shared)
    free = [c for c in cpus if c not in placed.values()]
    generator = free[0] if free else (placed[stage_names[-1]] if stage_names else cpus[-1])
    return placed, generator


def usable_cpus() -> list[int]:
    """The CPUs this process may run on."""
    return sorted(os.sched_getaffinity(0))


def build_settings(
    *,
    spec: PipelineSpec,
    models: Sequence[str],
    urls: Sequence[str],
    trace: Trace,
    window: str,
    fractions: Sequence[float],
    batches: Sequence[int],
    out: Path,
    variants: Sequence[str] = (),
    cpus: Sequence[int] | None = None,
    probe: bool = True,
    **options,
) -> Settings:
    """`Settings` from the command line's values, every check done before anything starts.

    Args:
        spec: the spec (``--set`` applied).
        models: ``--model`` items; urls: ``--url`` items; variants: ``--variant`` items.
        trace: the trace; window: ``--window``.
        fractions: ``--load-fraction``; batches: ``--batches``.
        out: the output folder (created and checked here).
        cpus: the CPUs to place servers on (default: this process's).
        probe: import each factory in a worker first (`rlscale.profiling.inprocess.probe_factory`): a module that
            cannot be imported, or has no such function, is one line here, not a server that never gets ready.
        options: the other `Settings` fields (repeats, seed, ...).

    Raises:
        RlscaleError: one line naming the flag and the problem.
    """
    from rlscale.paths import output_folder
    from rlscale.profiling.inprocess import probe_factory
    from rlscale.profiling.served import V2Client

    if not models and not urls:
        raise RlscaleError("name each stage's model: --model [STAGE=]MODULE:FUNCTION, or --url STAGE=URL")
    served = parse_urls(urls, spec)
    factories = parse_models(models, spec, taken=set(served))
    missing = [s.name for s in spec.stages if s.name not in factories and s.name not in served]
    if missing:
        raise RlscaleError(
            f"stage(s) {', '.join(missing)} have no model: give --model STAGE=MODULE:FUNCTION or --url STAGE=URL"
        )
    given = parse_variants(variants, spec)
    start_end = parse_window(window, trace)
    configs = configurations(check_fractions(fractions), batches)
    write_spec = options.get("write_spec")
    if write_spec is not None:
        check_spec_path(Path(write_spec))
    check_extras(serving=any(s.name not in served for s in spec.stages))
    out = output_folder(out)
    known: dict[str, tuple[str, ...] | None] = {}
    if probe:  # the slower checks: a worker imports each factory, each team's server is asked whether it is ready
        for factory in dict.fromkeys(factories.values()):
            known[factory] = probe_factory(factory).variants
        for stage, (url, model) in served.items():
            try:
                V2Client(url, model, timeout_s=10).check_ready()
            except RlscaleError as exc:
                raise RlscaleError(f"--url {stage}={url}: {str(exc).removeprefix(f'--url {url}: ')}") from None
    placed, generator = assign_cpus([s.name for s in spec.stages if s.name not in served], cpus or usable_cpus())
    stages = []
    for stage in spec.stages:
        factory = factories.get(stage.name)
        url, model = served.get(stage.name, (None, stage.name))
        variant = choose_variant(stage, known.get(factory) if factory else None, given.get(stage.name))
        stages.append(StageTarget(stage.name, variant, factory, url, model, placed.get(stage.name)))
    return Settings(
        spec=spec,
        stages=tuple(stages),
        trace=trace,
        window=start_end,
        configs=configs,
        out=out,
        generator_cpu=generator,
        **options,
    )


def check_extras(serving: bool) -> None:
    """The serve extra is installed: aiohttp for the load generator, MLServer where calibrate serves a stage.

    Raises:
        RlscaleError: one is missing (named, with the install line).
    """
    import importlib.util

    needed = ["aiohttp", *(["mlserver"] if serving else [])]
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise RlscaleError(
            f"rlscale calibrate needs {' and '.join(missing)}: install the serve extra (pip install 'rlscale[serve]')"
        )


def check_spec_path(path: Path) -> Path:
    """``--write-spec``: a ``.yaml`` (or ``.yml``) file whose folder exists and is writable."""
    from rlscale.paths import check_output_file

    if path.suffix.lower() not in (".yaml", ".yml"):
        raise RlscaleError(f"--write-spec {path}: the spec is a YAML file; give a path ending in .yaml")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise RlscaleError(f"--write-spec {path}: folder {folder} does not exist (create it first)")
    check_output_file(path, "--write-spec", path.suffix, "the spec is a YAML file")
    return path
