"""Spec loading and every validation rule: each bad spec raises one SpecError naming file and field."""

from __future__ import annotations

import math

import pytest

from rlscale.errors import SpecError
from rlscale.spec import load_spec


def test_valid_spec_loads(write_spec):
    spec = load_spec(write_spec())
    assert spec.name == "toy"
    assert [s.name for s in spec.stages] == ["first", "second"]
    assert spec.stages[0].batch_sizes == (1, 2, 4)
    assert spec.stages[1].min_replicas == 1  # default
    assert spec.objective.sla_penalty == pytest.approx(100.0)  # default 100 * beta
    assert spec.objective.rho_max == 1.0
    assert spec.stages[0].variant("slow").startup_s == 7


def test_rank_normalised_sum_and_product_accuracy(write_spec):
    spec = load_spec(write_spec())
    # stage "first": fast is rank 1 of 2 -> 0.5, slow rank 2 of 2 -> 1.0; stage "second" has one variant -> 1.0
    assert spec.accuracy(["fast", "slow"]) == pytest.approx(1.5)
    assert spec.accuracy(["slow", "slow"]) == pytest.approx(2.0)

    def product(d):
        d["objective"]["accuracy_method"] = "product"

    spec = load_spec(write_spec(product))
    assert spec.accuracy(["fast", "slow"]) == pytest.approx(0.5 * 0.9)
    assert spec.accuracy(["slow", "slow"]) == pytest.approx(0.8 * 0.9)


def _set(path, value):
    def mutate(d):
        node = d
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return mutate


def _delete(path):
    def mutate(d):
        node = d
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return mutate


BAD = [
    # (id, mutation, substring of the field in the message, substring of the problem)
    ("negative sla", _set(["sla_s"], -1), "sla_s", "must be > 0"),
    ("zero sla", _set(["sla_s"], 0), "sla_s", "must be > 0"),
    ("sla not a number", _set(["sla_s"], "fast"), "sla_s", "must be a number"),
    ("missing sla", _delete(["sla_s"]), "sla_s", "required"),
    ("drop limit below sla", _set(["drop_limit_s"], 0.5), "drop_limit_s", "must be >= sla_s"),
    ("zero interval", _set(["interval_s"], 0), "interval_s", "must be >= 1"),
    ("sub-second interval", _set(["interval_s"], 1e-9), "interval_s", "must be >= 1"),
    ("huge cores", _set(["stages", 0, "cores"], [1, 2, 4, 8, 10**9]), "stages[0].cores", "<= 1024"),
    ("huge budget", _set(["core_budget"], 10**12), "core_budget", "<= 1000000"),
    ("huge sla", _set(["sla_s"], 1e300), "sla_s", "<= 3600"),
    ("negative batch timeout", _set(["batch_timeout_s"], -0.1), "batch_timeout_s", "must be >= 0"),
    ("fractional core budget", _set(["core_budget"], 2.5), "core_budget", "must be an integer"),
    ("zero core budget", _set(["core_budget"], 0), "core_budget", "must be >= 1"),
    ("budget below minimum", _set(["core_budget"], 1), "core_budget", "cannot hold the smallest"),
    ("unknown top-level field", _set(["sla"], 1), "sla", "unknown field"),
    ("missing name", _delete(["name"]), "name", "required"),
    ("empty name", _set(["name"], " "), "name", "non-empty string"),
    ("negative alpha", _set(["objective", "alpha"], -1), "objective.alpha", "must be >= 0"),
    (
        "bad accuracy method",
        _set(["objective", "accuracy_method"], "mean"),
        "objective.accuracy_method",
        "one of",
    ),
    ("rho_max above one", _set(["objective", "rho_max"], 1.5), "objective.rho_max", "must be <= 1"),
    ("negative sla penalty", _set(["objective", "sla_penalty"], -3), "objective.sla_penalty", "must be >= 0"),
    ("objective not a mapping", _set(["objective"], [1, 2]), "objective", "must be a mapping"),
    ("unknown objective field", _set(["objective", "delta"], 1), "objective.delta", "unknown field"),
    ("no stages", _set(["stages"], []), "stages", "no stages"),
    ("stages not a list", _set(["stages"], {"a": 1}), "stages", "no stages"),
    ("empty stage", _set(["stages", 0, "variants"], []), "stages[0].variants", "no variants"),
    ("duplicate stage", _set(["stages", 1, "name"], "first"), "stages[1].name", "duplicate stage"),
    (
        "unknown variant",
        _set(["stages", 1, "variants", 0, "name"], "medium"),
        "stages[1].variants[0].name",
        "unknown variant 'medium'",
    ),
    (
        "duplicate variant",
        _set(["stages", 0, "variants", 1, "name"], "fast"),
        "stages[0].variants[1].name",
        "duplicate variant",
    ),
    ("accuracy above one", _set(["stages", 0, "variants", 0, "accuracy"], 45.7), "accuracy", "must be <= 1"),
    ("negative startup", _set(["stages", 0, "variants", 0, "startup_s"], -2), "startup_s", "must be >= 0"),
    ("missing startup", _delete(["stages", 0, "variants", 0, "startup_s"]), "startup_s", "required"),
    ("batch without profile", _set(["stages", 0, "batch_sizes"], [1, 2, 8]), "batch_sizes", "batch size 8"),
    ("zero batch size", _set(["stages", 0, "batch_sizes"], [0, 1]), "batch_sizes", "positive integers"),
    ("duplicate batch size", _set(["stages", 0, "batch_sizes"], [1, 1]), "batch_sizes", "duplicates"),
    ("empty cores", _set(["stages", 0, "cores"], []), "stages[0].cores", "non-empty list"),
    (
        "max below min replicas",
        _set(["stages", 0, "min_replicas"], 5),
        "max_replicas",
        "must be >= min_replicas",
    ),
    ("zero min replicas", _set(["stages", 0, "min_replicas"], 0), "min_replicas", "must be >= 1"),
    ("zero max pools", _set(["stages", 0, "max_pools"], 0), "stages[0].max_pools", "must be >= 1"),
    ("max pools as text", _set(["stages", 0, "max_pools"], "two"), "stages[0].max_pools", "must be an integer"),
    ("more pools than variants", _set(["stages", 0, "max_pools"], 3), "stages[0].max_pools", "number of variants"),
    ("missing profile file", _set(["stages", 0, "profile"], "nope.csv"), "stages[0].profile", "not found"),
    (
        "unknown task",
        lambda d: (d["stages"][0].pop("profile"), d["stages"][0].update(task="telepathy")),
        "task",
        "no bundled profile",
    ),
    ("unknown stage field", _set(["stages", 0, "replicas"], 3), "stages[0].replicas", "unknown field"),
    ("variant not a mapping", _set(["stages", 0, "variants", 0], "fast"), "stages[0].variants[0]", "mapping"),
    ("kubernetes unknown field", _set(["kubernetes"], {"replicas": 3}), "kubernetes.replicas", "unknown field"),
    ("kubernetes bad namespace", _set(["kubernetes"], {"namespace": "Prod_NS"}), "kubernetes.namespace", "name"),
    ("kubernetes bad env", _set(["kubernetes"], {"variant_env": "MODEL-VARIANT"}), "variant_env", "variable name"),
    (
        "kubernetes unknown stage",
        _set(["kubernetes"], {"deployments": {"third": "x"}}),
        "kubernetes.deployments.third",
        "unknown field",
    ),
    (
        "kubernetes one deployment for two stages",
        _set(["kubernetes"], {"deployments": {"first": "x", "second": "x"}}),
        "kubernetes.deployments.second",
        "already another stage's",
    ),
    (
        "kubernetes same env twice",
        _set(["kubernetes"], {"variant_env": "MAX_BATCH_SIZE"}),
        "kubernetes.batch_env",
        "two different env vars",
    ),
    (
        "kubernetes unknown template",
        _set(["kubernetes"], {"promql": {"cpu": "up"}}),
        "kubernetes.promql.cpu",
        "unknown field",
    ),
    (
        "kubernetes template field",
        _set(["kubernetes"], {"promql": {"queue_length": "max(q{{stage='{stge}'}})"}}),
        "kubernetes.promql.queue_length",
        "unknown field {stge}",
    ),
    (
        "kubernetes raw braces",
        _set(["kubernetes"], {"promql": {"queue_length": 'max(q{stage="x"})'}}),
        "kubernetes.promql.queue_length",
        "{{ }}",
    ),
]


@pytest.mark.parametrize("mutate,field,problem", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_spec_names_file_field_and_problem(write_spec, mutate, field, problem):
    path = write_spec(mutate)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path)), message
    assert field in message, message
    assert problem in message, message


def test_not_yaml(toy_dir):
    path = toy_dir / "broken.yaml"
    path.write_text("name: [unclosed\nsla_s: 1\n")
    with pytest.raises(SpecError, match=r"broken\.yaml: line \d+: not valid YAML"):
        load_spec(path)


def test_empty_and_non_mapping_files(toy_dir):
    (toy_dir / "empty.yaml").write_text("")
    with pytest.raises(SpecError, match="empty"):
        load_spec(toy_dir / "empty.yaml")
    (toy_dir / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(SpecError, match="must be a mapping"):
        load_spec(toy_dir / "list.yaml")


def test_missing_file_and_unknown_name(tmp_path):
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(tmp_path / "nothing.yaml")
    with pytest.raises(SpecError, match="unknown pipeline 'nosuchpipeline'"):
        load_spec("nosuchpipeline")


def test_bad_profile_is_reported_through_the_spec(write_spec, toy_dir):
    (toy_dir / "toy.csv").write_text("variant,batch,cores,latency_s\nfast,1,1,-0.5\n")
    with pytest.raises(SpecError, match=r"stages\[0\]\.profile: .*latency_s.*positive"):
        load_spec(write_spec())


def test_to_dict_round_trips_key_fields(write_spec):
    d = load_spec(write_spec()).to_dict()
    assert d["sla_s"] == 1.0
    assert d["stages"][0]["variants"][1] == {
        "name": "slow",
        "accuracy": 0.8,
        "metric_value": None,
        "startup_s": 7.0,
    }
    assert math.isclose(d["objective"]["sla_penalty"], 100.0)


def test_kubernetes_section_defaults_and_overrides(write_spec):
    from rlscale.kube.prometheus import DEFAULT_TEMPLATES

    spec = load_spec(write_spec())
    assert spec.kubernetes.variant_env == "MODEL_VARIANT" and spec.kubernetes.batch_env == "MAX_BATCH_SIZE"
    assert spec.kubernetes.deployments == {} and spec.kubernetes.namespace is None

    custom = 'max(my_queue{{job="{pipeline}-{stage}"}})'
    spec = load_spec(
        write_spec(
            lambda d: d.update(
                kubernetes={
                    "namespace": "ml",
                    "container": "triton",
                    "variant_env": "MODEL",
                    "deployments": {"first": "det"},
                    "promql": {"queue_length": custom},
                }
            )
        )
    )
    k = spec.kubernetes
    assert (k.namespace, k.container, k.variant_env, k.batch_env) == ("ml", "triton", "MODEL", "MAX_BATCH_SIZE")
    assert k.deployments == {"first": "det"} and k.promql == {"queue_length": custom}
    assert custom != DEFAULT_TEMPLATES["queue_length"]
    assert spec.to_dict()["kubernetes"]["deployments"] == {"first": "det"}


def test_spec_reads_are_bounded(tmp_path):
    with pytest.raises(SpecError, match="is a device, not a regular file"):
        load_spec("/dev/zero")
    big = tmp_path / "big.yaml"
    with open(big, "wb") as fh:  # sparse: takes no disk
        fh.truncate((1 << 20) + 1)
    with pytest.raises(SpecError, match="larger than 1 MiB"):
        load_spec(big)
    deep = tmp_path / "deep.yaml"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(SpecError, match="nested too deeply"):
        load_spec(deep)
    nested = tmp_path / "nested.yaml"
    nested.write_text("name: " + "[" * 60 + "]" * 60 + "\n")
    with pytest.raises(SpecError, match="deeper than 50"):
        load_spec(nested)
    bom = tmp_path / "bom.yaml"
    bom.write_bytes(b"\xef\xbb\xbf" + b"\xff: 1\n")
    with pytest.raises(SpecError, match="not UTF-8"):
        load_spec(bom)


def test_vpa_section_reads_checks_and_round_trips(write_spec, tmp_path):
    import yaml

    assert load_spec(write_spec()).vpa is None
    spec = load_spec(write_spec(lambda d: d.update(vpa={"updater": "infadapter", "variant": "slow", "cores": [2, 1]})))
    assert (spec.vpa.updater, spec.vpa.variant, spec.vpa.cores) == ("infadapter", ("slow",), (2, 1))
    back = tmp_path / "back.yaml"
    back.write_text(yaml.safe_dump(spec.to_document(), sort_keys=False))
    assert load_spec(back).vpa == spec.vpa and load_spec(back).to_dict() == spec.to_dict()
    assert load_spec(write_spec(lambda d: d.update(vpa={}))).vpa.updater == "kubernetes"
    assert load_spec("infadapter").vpa.variant == ("resnet152",)


@pytest.mark.parametrize(
    ("section", "field", "problem"),
    [
        ({"updater": "keda"}, "vpa.updater", "kubernetes"),
        ({"variant": ["nope"]}, "vpa.variant[0]", "no stage offers it"),
        ({"variant": ["fast", "fast"]}, "vpa.variant[1]", "stage 'second' lacks it"),
        ({"cores": [1, 2, 1]}, "vpa.cores", "one per stage (2)"),
        ({"cores": [2]}, "vpa.cores[0]", "stage 'second' offers no 2 cores"),
        ({"cores": [0]}, "vpa.cores", "1"),
        ({"replicas": 3}, "vpa.replicas", "unknown field"),
    ],
)
def test_vpa_section_errors_name_the_field(write_spec, section, field, problem):
    with pytest.raises(SpecError) as err:
        load_spec(write_spec(lambda d: d.update(vpa=section)))
    assert field in str(err.value) and problem in str(err.value)
