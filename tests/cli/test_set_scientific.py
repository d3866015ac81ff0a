"""``--set FIELD=VALUE`` with a number in scientific notation (``1e9``): a number, checked by the field's own
bounds, as the same number written out would be. YAML 1.1 reads ``1e9`` as a string, so before this the value was
refused as "must be a number"."""

from __future__ import annotations

import pytest

from rlscale.cli import main
from rlscale.errors import SpecError
from rlscale.spec import load_spec


@pytest.mark.parametrize(
    ("override", "read"),
    [
        ("objective.alpha=1e3", lambda s: s.objective.alpha == 1000.0),
        ("objective.gamma=2E-3", lambda s: s.objective.gamma == 0.002),
        ("sla_s=5e0", lambda s: s.sla_s == 5.0),
        ("stages.0.max_replicas=2e1", lambda s: s.stages[0].max_replicas == 20),  # an integer field takes 2e1
        ("stages.0.cores=[1, 2e0, 4]", lambda s: s.stages[0].cores == (1, 2, 4)),
    ],
)
def test_scientific_notation_is_a_number(override, read):
    assert read(load_spec("video", [override]))


def test_only_number_fields_read_scientific_notation():
    spec = load_spec("video", ["objective.alpha=1e3", "kubernetes.namespace=1e5"])
    assert spec.objective.alpha == 1000.0 and spec.kubernetes.namespace == "1e5"  # a namespace stays text


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("objective.alpha=1e9", "objective.alpha: must be <= 1e+06"),
        ("sla_s=1e300", "sla_s: must be <= 3600, got 1e+300"),
        ("objective.gamma=-1e-3", "objective.gamma: must be >= 0"),
    ],
)
def test_scientific_notation_meets_the_fields_bounds(override, message):
    with pytest.raises(SpecError, match=message.replace("[", r"\[").replace("+", r"\+")) as info:
        load_spec("video", [override])
    assert "must be a number" not in str(info.value)


def test_set_in_scientific_notation_through_the_cli(capfd):
    assert main(["pipelines", "--spec", "video", "--set", "objective.alpha=1e3", "--json"]) == 0
    assert '"alpha": 1000.0' in capfd.readouterr().out
