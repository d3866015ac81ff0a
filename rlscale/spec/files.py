"""The files a spec document names, read apart from its validation: the bundled folder, each stage's latency
profile (a CSV) and the per-request SLOs' bandwidth trace.

`read_files` reads them all before the models validate the document (`rlscale.spec.reading.parse_spec`); the
models then take what was read, or the reading's error, from the read context. Validation itself reads no CSV: it
only resolves a stage's profile path (an existence check of the bundled profile), so the error of a missing or
broken file stays where the document names the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic_core import PydanticCustomError

from rlscale.bandwidth import BandwidthTrace, load_bandwidth
from rlscale.errors import ProfileError, TraceError
from rlscale.paths import is_safe_name
from rlscale.profiles import LatencyModel, load_profile
from rlscale.spec.fields import fail


def data_dir() -> Path:
    """The bundled data folder (``rlscale/data``)."""
    return Path(str(resources.files("rlscale") / "data"))


def bundled_pipelines() -> list[str]:
    """Names of the bundled pipeline specs, sorted."""
    return sorted(p.stem for p in (data_dir() / "pipelines").glob("*.yaml"))


def resolve_profile(stage: dict[str, Any], spec_path: Path) -> Path | None:
    """The profile CSV a stage document names (relative to the spec's folder) or its task's bundled one.

    None when the stage's task is not a usable string (its own error says so).

    Raises:
        PydanticCustomError: ``profile`` is not a non-empty string, or the task has no bundled profile.
    """
    raw = stage.get("profile")
    if raw is not None:
        if not isinstance(raw, str) or not raw.strip():
            raise fail(f"must be a non-empty string, got {raw!r}", "profile")
        path = Path(raw.strip())
        return path if path.is_absolute() else spec_path.parent / path
    task = stage.get("task")
    if not isinstance(task, str) or not task.strip():
        return None
    task = task.strip()
    path = data_dir() / "profiles" / f"{task}.csv"
    if not is_safe_name(task) or not path.exists():  # a task is a file name in the bundled folder, never a path
        known = sorted(p.stem for p in (data_dir() / "profiles").glob("*.csv"))
        raise fail(
            f"no bundled profile for task {task!r} (known: {', '.join(known)}); set 'profile' to a CSV path", "task"
        )
    return path


@dataclass
class SpecFiles:
    """What `read_files` read: each profile by resolved path and each bandwidth trace by the name the document
    wrote, as the model read or the reading's error message (one line, naming the file)."""

    profiles: dict[Path, LatencyModel | str] = field(default_factory=dict)
    bandwidth: dict[str, BandwidthTrace | str] = field(default_factory=dict)

    def profile(self, path: Path) -> LatencyModel:
        """The profile read from ``path``; its reading's error as a validation error at ``profile``."""
        got = self.profiles[path]
        if isinstance(got, str):
            raise fail(got, "profile")
        return got

    def bandwidth_trace(self, name: str) -> BandwidthTrace:
        """The bandwidth trace ``name`` read; its reading's error as a validation error at ``bandwidth``."""
        got = self.bandwidth[name]
        if isinstance(got, str):
            raise fail(got, "bandwidth")
        return got


def read_files(raw: Any, spec_path: Path) -> SpecFiles:
    """Read every file the spec document ``raw`` (at ``spec_path``) names: the profile each stage resolves (once per
    file) and the request SLOs' bandwidth trace. A file that cannot be read is recorded with its error, which the
    validation reports at the field that names it; a stage whose profile cannot be resolved is skipped (its
    validation reports why). Nothing here is validated: anything that is not shaped as the spec is left alone.
    """
    files = SpecFiles()
    if not isinstance(raw, dict):
        return files
    stages = raw.get("stages")
    for stage in stages if isinstance(stages, list | tuple) else ():
        if not isinstance(stage, dict):
            continue
        try:
            path = resolve_profile(stage, spec_path)
        except PydanticCustomError:
            continue
        if path is not None and path not in files.profiles:
            try:
                files.profiles[path] = load_profile(path)
            except ProfileError as exc:
                files.profiles[path] = str(exc)
    slo = raw.get("request_slo")
    name = slo.get("bandwidth") if isinstance(slo, dict) else None
    if isinstance(name, str) and name.strip() and name.strip() not in files.bandwidth:
        try:
            files.bandwidth[name.strip()] = load_bandwidth(name.strip(), spec_path.parent)
        except TraceError as exc:
            files.bandwidth[name.strip()] = str(exc)
    return files
