"""`rlscale.inputs`: the one bounded reader of user files, YAML measured before it is built, JSON of bounded depth."""

from __future__ import annotations

import os
import re
import socket
import time

import pytest

from rlscale.errors import SpecError
from rlscale.inputs import (
    MAX_YAML_NODES,
    load_yaml,
    loads_json,
    read_bytes_limited,
    read_json_limited,
    read_text_limited,
    special_file_kind,
)
from rlscale.spec import load_spec
from tests.test_hostile_inputs_files import BOMB, BOMB_FLOW, DEEP_JSON

HANG_S = 30.0
"""A bound that only a hang passes (expanding the bomb takes minutes and gigabytes); not a speed target: the
machines are noisy, and speed lives in benchmarks."""


def test_an_alias_bomb_is_refused_before_it_is_expanded():
    started = time.perf_counter()
    for text in (BOMB, BOMB_FLOW):
        with pytest.raises(SpecError, match=f"more than {MAX_YAML_NODES:,} values with its aliases expanded"):
            load_yaml(text, "bomb.yaml", SpecError)
    assert time.perf_counter() - started < HANG_S


def test_aliases_that_stay_small_are_a_spec_authors_tool():
    data = load_yaml("base: &b {cores: [1, 2]}\nfirst: *b\nsecond: *b\n", "ok.yaml", SpecError)
    assert data == {"base": {"cores": [1, 2]}, "first": {"cores": [1, 2]}, "second": {"cores": [1, 2]}}


def test_deep_nesting_through_aliases_is_measured_as_expanded():
    # every line 2 levels deep as written; each alias adds the depth of what it names: 61 levels once expanded
    lines = ["a0: &a0 [1]"] + [f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, 60)]
    with pytest.raises(SpecError, match="nested too deeply"):
        load_yaml("\n".join(lines), "deep.yaml", SpecError)


@pytest.mark.slow
def test_a_recursive_alias_and_100000_levels_are_one_line():
    with pytest.raises(SpecError, match="recursive structure"):
        load_yaml("a: &a [1, *a]\n", "r.yaml", SpecError)
    with pytest.raises(SpecError, match="nested too deeply"):
        load_yaml("[" * 100_000 + "]" * 100_000, "d.yaml", SpecError)


def test_the_set_flag_measures_aliases_too():
    started = time.perf_counter()
    with pytest.raises(SpecError, match="--set objective.alpha=.*aliases expanded"):
        load_spec("video", [f"objective.alpha={BOMB_FLOW}"])
    assert time.perf_counter() - started < HANG_S


@pytest.mark.parametrize("kind", ["fifo", "socket", "device"])
def test_only_regular_files_are_opened(tmp_path, kind):
    """A FIFO would block the open, a device never end the read: refused from its stat, before any open."""
    if kind == "fifo":
        path = tmp_path / "spec.yaml"
        os.mkfifo(path)
        expected = "a FIFO (named pipe)"
    elif kind == "socket":
        path = tmp_path / "s.sock"
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
        expected = "a socket"
    else:
        path, expected = "/dev/zero", "a device"
    try:
        assert special_file_kind(path) == expected
        started = time.perf_counter()
        for read in (read_bytes_limited, read_text_limited):
            with pytest.raises(SpecError, match=re.escape(f"is {expected}, not a regular file; pass a spec file")):
                read(path, 1 << 20, SpecError, "spec")
        assert time.perf_counter() - started < HANG_S
    finally:
        if kind == "socket":
            server.close()


def test_a_regular_file_past_the_limit_is_refused_without_reading_it(tmp_path):
    big = tmp_path / "big.json"
    with open(big, "wb") as fh:
        fh.truncate(1 << 30)  # sparse: a gibibyte that takes no disk, never read
    with pytest.raises(SpecError, match="larger than 16 MiB"):
        read_bytes_limited(big, 16 << 20, SpecError, "settings")


def test_json_is_bounded_in_depth_and_names_what_is_wrong(tmp_path):
    with pytest.raises(SpecError, match="x.json: settings is nested deeper than 100 levels"):
        loads_json(DEEP_JSON, "x.json", SpecError, "settings")
    with pytest.raises(SpecError, match="nested deeper than 100 levels"):
        loads_json("[" * 150 + "]" * 150, "x.json", SpecError, "settings")  # under Python's limit, over ours
    assert loads_json('{"a": [1, {"b": 2}]}', "x.json", SpecError, "settings") == {"a": [1, {"b": 2}]}
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"name": "caf\xe9"}')
    with pytest.raises(SpecError, match=r"settings is not JSON: not UTF-8 text \(byte 13\)"):
        read_json_limited(path, 1 << 20, SpecError, "settings")
    path.write_text("{not json")
    with pytest.raises(SpecError, match="settings is not JSON"):
        read_json_limited(path, 1 << 20, SpecError, "settings")
