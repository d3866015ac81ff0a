"""The bundled data folder, and the profile a stage document names."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from rlscale.paths import is_safe_name
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
