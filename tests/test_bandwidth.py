"""Bandwidth traces and per-request budgets (`rlscale.bandwidth`)."""

from __future__ import annotations

import numpy as np
import pytest

from rlscale.bandwidth import bundled_bandwidths, load_bandwidth, remaining_budget_s
from rlscale.errors import TraceError


def test_bundled_lte_trace_is_sponges():
    assert "lte-bus" in bundled_bandwidths()
    trace = load_bandwidth("lte-bus")
    assert trace.bytes_per_s.size == 607
    assert (trace.bytes_per_s.min(), trace.bytes_per_s.max()) == (432_000, 6_998_000)  # 0.41-6.67 MiB/s
    assert trace.bytes_per_s[0] == 4_501_000  # int(3263799 B / 725 ms) x 1000


def test_sponges_remaining_budget_at_284_kb():
    """Sponge's derived table: 935 ms left of 1 s at 4501 B/ms for 284 KB (int of 935.38)."""
    budget = remaining_budget_s(1.0, 284, load_bandwidth("lte-bus"), np.array([0.0, 0.99]))
    assert budget == pytest.approx([1 - 284 * 1024 / 4_501_000] * 2)
    assert int(budget[0] * 1000) == 935


def test_the_trace_repeats_cyclically(tmp_path):
    (tmp_path / "bw.csv").write_text("t_s,bandwidth_bytes_per_s\n0,100\n1,200\n2,300\n")
    trace = load_bandwidth("bw.csv", tmp_path)
    assert trace.at(np.array([0.5, 1.0, 2.9, 3.0, 7.2])).tolist() == [100, 200, 300, 100, 200]


@pytest.mark.parametrize(
    "text, problem",
    [
        ("t_s,bandwidth_mbps\n0,5\n", "no 'bandwidth_bytes_per_s' column"),
        ("bandwidth_bytes_per_s\n100\n\n200\n", "line 3: blank row"),
        ("bandwidth_bytes_per_s\nfast\n", "line 2: bandwidth_bytes_per_s is not a number: 'fast'"),
        ("bandwidth_bytes_per_s\n0\n", "line 2: bandwidth_bytes_per_s must be a finite number > 0, got 0"),
        ("bandwidth_bytes_per_s\n-5\n", "must be a finite number > 0, got -5"),
        ("bandwidth_bytes_per_s\nnan\n", "must be a finite number > 0"),
        ("bandwidth_bytes_per_s\n", "has no rows"),
    ],
)
def test_a_bad_csv_is_one_clear_line(tmp_path, text, problem):
    (tmp_path / "bw.csv").write_text(text)
    with pytest.raises(TraceError) as err:
        load_bandwidth(str(tmp_path / "bw.csv"))
    assert problem in str(err.value) and "\n" not in str(err.value) and "bw.csv" in str(err.value)


def test_unknown_names_and_missing_files():
    with pytest.raises(TraceError, match="not a bundled name \\(lte-bus\\)"):
        load_bandwidth("wifi")
    with pytest.raises(TraceError, match="file not found"):
        load_bandwidth("missing.csv")
