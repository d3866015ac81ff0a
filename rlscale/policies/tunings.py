"""The reading of tuning files: the bundled tunings of the bundled pipelines (``rlscale/data/ipa_tuned.json``, made by
`rlscale.evaluate.tune_headroom`, the search) or a user's (``rlscale tune --out FILE``, read with ``--tuning FILE``).

A tuning file holds one entry per pipeline: IPA's tuning (``ipa-tuned``) at the entry's top level (``headroom``,
``windows``, ``sweep``...), the HPA's (``hpa-tuned``) under its key ``hpa`` (``target``...) and ``ipa-hold``'s under
its key ``ipa-hold`` (``headroom``, ``delta``...). A tuned value is input: it must lie in the range of the flag it
stands for (`TUNED_RANGES`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from rlscale.errors import RlscaleError
from rlscale.inputs import MAX_SETTINGS_BYTES, read_json_limited
from rlscale.spec import PipelineSpec, data_dir

TUNED_PATH = data_dir() / "ipa_tuned.json"
"""The bundled tunings of the bundled pipelines (read by ``ipa-tuned`` and ``hpa-tuned`` without ``--tuning``)."""
POLICIES = {"ipa": "headroom", "hpa": "target", "ipa-hold": "headroom"}
"""The policies that can be tuned, and the name of the (first) value tuned; ``ipa-hold`` also tunes ``delta``."""
SUB_ENTRIES = ("hpa", "ipa-hold")
"""The policies whose tuning sits under their own key of a pipeline's entry (IPA's is the entry's top level)."""
HOLD_DEFAULTS = (1.0, 0.5)
"""``ipa-hold``'s (headroom, δ) for a pipeline the bundled tunings lack: the issue's prototype, which beat ``ipa`` on
all four IPA windows of ``video``."""
HEADROOM_RANGE = (0.1, 10.0)
"""The headrooms a policy plans with, inclusive: the ``--headroom`` flag's range, and a tuning file's."""
HOLD_DELTA_RANGE = (0.0, 1e6)
"""``ipa-hold``'s δ, inclusive: the ``--hold-delta`` flag's range, and a tuning file's."""
HPA_TARGET_RANGE = (0.0, 1.0)
"""The HPA's target utilisation, (low, high]: the ``--hpa-target`` flag's range, and a tuning file's."""
TUNED_RANGES = {"headroom": (*HEADROOM_RANGE, "--headroom"), "delta": (*HOLD_DELTA_RANGE, "--hold-delta")}
TUNED_RANGES["target"] = (*HPA_TARGET_RANGE, "--hpa-target")
"""A tuned value's (low, high, the flag it stands for): a tuning file may hold only what the flag accepts (the low end
of ``target`` is exclusive)."""


def pipeline_argument(spec: PipelineSpec) -> str:
    """How a command names ``spec``: its name when bundled, else its file."""
    source = Path(spec.source) if spec.source is not None else None
    if source is None or source.parent.resolve() == (data_dir() / "pipelines").resolve():
        return spec.name
    return str(source)


def tuned_value(spec: PipelineSpec, policy: str, path: str | Path | None = None, key: str | None = None) -> float:
    """The tuned ``headroom`` (``policy="ipa"`` or ``"ipa-hold"``), ``target`` (``"hpa"``) or, with ``key``, another
    tuned value (``ipa-hold``'s ``delta``) of ``spec`` in the tuning file ``path`` (default: the bundled one,
    `TUNED_PATH`).

    Raises:
        RlscaleError: the file cannot be read, or holds no tuning of this policy for the pipeline (the message names
            the command that makes one).
    """
    key = key or POLICIES[policy]
    file = Path(path) if path is not None else TUNED_PATH
    where = f"--tuning {file}" if path is not None else "the bundled tunings"
    flag = "" if policy == "ipa" else f" --policy {policy}"
    make = (
        f"rlscale tune --pipeline {pipeline_argument(spec)}{flag} --out {file if path is not None else 'tuning.json'}"
    )
    if path is not None and not file.exists():
        raise RlscaleError(f"--tuning {file}: no such file; make one with: {make}")
    try:
        table = read_json_limited(file, MAX_SETTINGS_BYTES, RlscaleError, "tuning") if file.exists() else {}
    except RlscaleError as exc:
        raise RlscaleError(f"{where}: cannot read it: {exc}") from None
    entry = table.get(spec.name) if isinstance(table, dict) else None
    if isinstance(entry, dict) and policy in SUB_ENTRIES:
        entry = entry.get(policy)
    value = entry.get(key) if isinstance(entry, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        then = ", then pass --tuning tuning.json" if path is None else ""
        raise RlscaleError(f"{where}: no tuned {policy} {key} for pipeline {spec.name!r}; run: {make}{then}")
    check_tuned(float(value), key, f"{where}: {policy} {key} of pipeline {spec.name!r}", make)
    return float(value)


def check_tuned(value: float, key: str, what: str, make: str | None = None) -> None:
    """Refuse a tuned ``headroom``, ``delta`` or ``target`` outside the range of the flag it stands for
    (`TUNED_RANGES`): a tuning file is input, and may not do what ``--headroom`` may not.

    Raises:
        RlscaleError: out of range; the message says ``what`` it is, the range, the flag and (``make``) the command
            that makes a new tuning.
    """
    low, high, flag = TUNED_RANGES[key]
    exclusive = key == "target"
    if (low < value if exclusive else low <= value) and value <= high:
        return
    span = f"({low:g}, {high:g}]" if exclusive else f"{low:g} to {high:g}"
    again = f"; make a new one with: {make}" if make else ""
    raise RlscaleError(f"{what} is {value:g}, outside {span} (the range of {flag}){again}")


def tuned_hold(spec: PipelineSpec, path: str | Path | None = None) -> tuple[float, float] | None:
    """``ipa-hold``'s tuned (headroom, δ) of ``spec`` in the tuning file ``path``; without ``path``, from the bundled
    tunings, or None when they have no ``ipa-hold`` entry for the pipeline (the caller falls back to
    `HOLD_DEFAULTS`).

    Raises:
        RlscaleError: as `tuned_value`: ``path`` cannot be read or has no ``ipa-hold`` tuning of the pipeline, or the
            bundled entry is malformed.
    """
    if path is None:
        entry = json.loads(TUNED_PATH.read_text(encoding="utf-8")).get(spec.name) if TUNED_PATH.is_file() else None
        if not isinstance(entry, dict) or "ipa-hold" not in entry:
            return None
    return tuned_value(spec, "ipa-hold", path), tuned_value(spec, "ipa-hold", path, "delta")
