"""Reading a spec: a bundled name or a YAML file, its document (``--set`` applied), the files it names, validated."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from rlscale.errors import SpecError
from rlscale.inputs import MAX_SPEC_BYTES, load_yaml, read_text_limited
from rlscale.spec.files import bundled_pipelines, data_dir, read_files
from rlscale.spec.messages import invalid
from rlscale.spec.overrides import apply_overrides, override_paths
from rlscale.spec.pipeline import PipelineSpec

_ADAPTER = TypeAdapter(PipelineSpec)


def parse_spec(raw: Any, path: Path) -> PipelineSpec:
    """Validate already-parsed YAML data; ``path`` is used in messages and to resolve relative profiles.

    Two steps: the files the document names (profiles, a bandwidth trace) are read first (`read_files`), then the
    models validate the document, taking what was read from the context (a file's error is reported at the field
    that names it, in the document's order).

    Raises:
        SpecError: one line, ``<path>: <field path>: <problem>`` (the first problem found).
    """
    files = read_files(raw, path)
    try:
        return _ADAPTER.validate_python(raw, context={"path": path, "files": files})
    except ValidationError as exc:
        raise invalid(path, exc) from None


def spec_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a spec document: the fields, their types and ranges.

    The checks that need files or several fields (profiles, drop limit >= SLA, unique names, a core budget that
    holds the smallest configuration) are not expressible in it; `load_spec` makes them.
    """
    schema = _ADAPTER.json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


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


def read_document(name_or_path: str | Path) -> tuple[Path, Any]:
    """The spec file a name or path means, and its YAML data (not validated yet).

    Raises:
        SpecError: unknown name, unreadable or oversized file, not YAML, empty, nested too deeply.
    """
    path = _resolve_spec_path(name_or_path)
    text = read_text_limited(path, MAX_SPEC_BYTES, SpecError, "spec")
    raw = load_yaml(text, str(path), SpecError)
    if raw is None:
        raise SpecError(f"{path}: spec is empty")
    return path, raw


def load_spec(name_or_path: str | Path, overrides: Sequence[str] = ()) -> PipelineSpec:
    """Load a bundled pipeline by name (``video``) or a spec YAML by path, validated.

    Args:
        name_or_path: a bundled pipeline's name or a spec file.
        overrides: ``FIELD=VALUE`` items (``--set``) applied to the document before validation; see
            `apply_overrides`. A relative profile still resolves from the spec file's folder.

    Raises:
        SpecError: one message naming the file, the field and the problem (and the ``--set`` involved, if any).
    """
    path, raw = read_document(name_or_path)
    if not overrides:
        return parse_spec(raw, path)
    try:
        return parse_spec(apply_overrides(raw, overrides), path)
    except SpecError as exc:
        field = getattr(exc, "field", None)
        if field is None:
            raise
        paths = override_paths(overrides)
        hit = [item for p, item in paths if field == p or field.startswith((p + ".", p + "["))]
        shown = ", ".join(f"--set {i}" for i in (hit or [item for _, item in paths]))
        raise SpecError(f"{exc} (with {shown})") from None


def dump_spec(spec: PipelineSpec, note: str = "") -> str:
    """The spec as YAML text that `load_spec` reads back to an equal spec (see `PipelineSpec.to_document`).

    Args:
        spec: the spec.
        note: a comment for the first lines (where the file came from).
    """
    head = "".join(f"# {line}\n" for line in note.splitlines())
    return head + yaml.safe_dump(spec.to_document(), sort_keys=False, allow_unicode=True)
