"""Reading a spec is two steps: the files it names are read (`rlscale.spec.files.read_files`), then the models
validate the document without reading any; a file's error is still reported at the field that names it."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import yaml
from pydantic import TypeAdapter, ValidationError

import rlscale.spec.files as files_module
from rlscale.errors import SpecError
from rlscale.spec import DampingSpec, PipelineSpec, VpaSpec, load_spec, parse_spec
from rlscale.spec.files import read_files


def test_each_profile_is_read_once_before_validation(write_spec, monkeypatch):
    path = write_spec()
    raw, expected = yaml.safe_load(path.read_text()), load_spec(path)
    reads = []
    real = files_module.load_profile
    monkeypatch.setattr(files_module, "load_profile", lambda p: reads.append(p) or real(p))
    files = read_files(raw, path)
    assert reads == [path.parent / "toy.csv"]  # both stages name it: read once
    monkeypatch.setattr(files_module, "load_profile", lambda p: pytest.fail(f"validation read {p}"))
    spec = TypeAdapter(PipelineSpec).validate_python(copy.deepcopy(raw), context={"path": path, "files": files})
    assert spec.stages[0].latency is spec.stages[1].latency is files.profiles[path.parent / "toy.csv"]
    assert spec == expected


def test_the_bandwidth_trace_is_read_with_the_files(write_spec, monkeypatch):
    path = write_spec(lambda d: d.update(request_slo={"payload_kb": 100, "bandwidth": " bw.csv "}))
    (path.parent / "bw.csv").write_text("bandwidth_bytes_per_s\n1000\n2000\n")
    files = read_files(yaml.safe_load(path.read_text()), path)
    assert list(files.bandwidth) == ["bw.csv"]
    assert load_spec(path).request_slo.trace is not None


def test_a_file_that_cannot_be_read_is_reported_where_the_document_names_it(write_spec):
    path = write_spec(lambda d: d["stages"][1].update(profile="gone.csv"))
    files = read_files(yaml.safe_load(path.read_text()), path)
    assert isinstance(files.profiles[path.parent / "gone.csv"], str)  # the error, kept for the validation
    with pytest.raises(SpecError, match=r"toy\.yaml: stages\[1\]\.profile: .*gone\.csv"):
        load_spec(path)


@pytest.mark.parametrize("raw", [None, [], {"stages": "x"}, {"stages": [1, {"profile": 5}, {"task": 7}]}])
def test_the_reading_step_leaves_what_is_not_shaped_as_a_spec_to_the_validation(raw, tmp_path):
    assert read_files(raw, tmp_path / "s.yaml") == files_module.SpecFiles()
    with pytest.raises(SpecError):
        parse_spec(raw, tmp_path / "s.yaml")


def test_what_a_document_may_leave_unset_is_strict_in_code(write_spec):
    """``key:`` with no value takes the default in a document (`Unset`); code passing None is refused."""
    spec = load_spec(write_spec(lambda d: d.update(damping={"min_dwell_s": None}, resize_s=None, vpa={"cores": 1})))
    assert spec.damping == DampingSpec() and spec.resize_s == 0.5 and spec.vpa == VpaSpec(cores=(1,))
    with pytest.raises(ValidationError):
        DampingSpec(min_dwell_s=None)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        dataclasses.replace(spec, resize_s=None)
    with pytest.raises(ValidationError):
        VpaSpec(cores=1)  # type: ignore[arg-type]
