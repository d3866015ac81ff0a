"""Traces: bundled windows (IPA's totals), the CSV loader and its errors, the training sampler."""

from __future__ import annotations

import numpy as np
import pytest

from rlscale.errors import TraceError
from rlscale.workload import (
    EVAL_TRACES,
    SECONDS_PER_DAY,
    TRAINING_DAYS,
    TrainingSampler,
    load_csv_trace,
    load_trace,
    training_split,
)

# Totals published with IPA's windows (damped by 8) and InfAdapter's window (undamped); Sponge's static load.
EXPECTED = {
    "bursty": (1200, 14437),
    "steady_low": (1200, 6067),
    "steady_high": (1200, 34606),
    "fluctuating": (1200, 19837),
    "infadapter": (1260, 121697),
    "sponge": (600, 6000),  # 10 rps for 600 s (configs/final/dynainf.yaml)
}


@pytest.mark.parametrize("name", EVAL_TRACES)
def test_bundled_windows_match_published_totals(name):
    trace = load_trace(name)
    assert (trace.duration_s, trace.total_requests) == EXPECTED[name]
    assert np.all(trace.rps >= 0)
    assert np.all(trace.rps == np.floor(trace.rps))


def test_ipa_windows_peak_at_34_rps():
    assert max(load_trace(n).peak_rps for n in ("bursty", "steady_high", "fluctuating")) == 34


def test_training_split_is_days_0_to_13():
    split = training_split()
    assert split.size == TRAINING_DAYS * SECONDS_PER_DAY
    assert 50 < split.mean() < 80  # ~64 rps undamped
    assert not split.flags.writeable


def test_sampler_is_seeded_and_stays_in_the_training_split():
    a = [TrainingSampler(np.random.default_rng(7), window_s=600).sample() for _ in range(2)]
    b = TrainingSampler(np.random.default_rng(7), window_s=600)
    first = b.sample()
    assert first.name == a[0].name and np.array_equal(first.rps, a[0].rps)
    assert b.sample().name != first.name
    for _ in range(50):
        t = b.sample()
        start = int(t.name.split("@")[1])
        assert 0 <= start and start + 600 <= TRAINING_DAYS * SECONDS_PER_DAY
        np.testing.assert_array_equal(t.rps, np.floor(training_split()[start : start + 600] / 8))


def test_sampler_rejects_bad_arguments():
    with pytest.raises(TraceError, match="window_s"):
        TrainingSampler(np.random.default_rng(0), window_s=0)
    with pytest.raises(TraceError, match="damping"):
        TrainingSampler(np.random.default_rng(0), damping=0)


def test_csv_trace_loads(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("t_s,rps\n0,3\n1,4.5\n2,0\n")
    trace = load_trace(path)
    assert trace.duration_s == 3
    np.testing.assert_array_equal(trace.rps, [3, 4.5, 0])


@pytest.mark.parametrize(
    "body,problem",
    [
        ("", "no 'rps' column"),
        ("load\n3\n", "no 'rps' column"),
        ("rps\n3\nabc\n", "line 3: rps is not a number"),
        ("rps\n-1\n", "line 2: rps must be a finite number >= 0"),
        ("rps\nnan\n", "line 2: rps must be a finite number >= 0"),
        ("rps\n", "no rows"),
        ("rps\n3\n\n4\n", "line 3: blank row"),  # a dropped blank row would shift every later second
        ("rps\n1e300\n", "line 2: rps 1e300 is above the limit"),
        ("rps\n99999\n" * 1 + "99999\n" * 250, "requests in all, above the simulator's limit"),
    ],
)
def test_bad_csv_traces(tmp_path, body, problem):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(TraceError) as info:
        load_trace(path)
    assert problem in str(info.value)
    assert "\n" not in str(info.value)


def test_csv_trace_with_a_bom_and_trailing_blank_lines(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffrps\r\n3\r\n4\r\n\r\n\r\n".encode())
    np.testing.assert_array_equal(load_trace(path).rps, [3, 4])


def test_csv_trace_reads_are_bounded(tmp_path):
    with pytest.raises(TraceError, match="is a device, not a regular file"):
        load_trace("/dev/zero")
    big = tmp_path / "big.csv"
    with open(big, "wb") as fh:  # sparse: takes no disk
        fh.truncate((64 << 20) + 1)
    with pytest.raises(TraceError, match="larger than 64 MiB"):
        load_trace(big)
    with pytest.raises(TraceError, match="is a folder"):
        load_csv_trace(tmp_path)
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"rps\n3\n\xff\xfe\n")
    with pytest.raises(TraceError, match="not UTF-8"):
        load_trace(binary)


def test_unknown_trace_name():
    with pytest.raises(TraceError, match="unknown trace 'burst'"):
        load_trace("burst")
    with pytest.raises(TraceError, match="not found"):
        load_trace("missing/file.csv")


def test_validation_windows_lie_in_the_last_days_and_are_fixed():
    from rlscale.workload import SECONDS_PER_DAY, TRAINING_DAYS, validation_windows

    windows = validation_windows(8)
    assert validation_windows(8)[3].name == windows[3].name  # no seed: the same windows every time
    starts = [int(w.name.removeprefix("val@")) for w in windows]
    assert starts == sorted(set(starts)) and len(starts) == 8
    assert all(
        (TRAINING_DAYS - 1) * SECONDS_PER_DAY <= s and s + 1200 <= TRAINING_DAYS * SECONDS_PER_DAY for s in starts
    )
    assert max(w.peak_rps for w in windows) > 0
    two = validation_windows(2, validation_days=2)
    assert int(two[0].name.removeprefix("val@")) < (TRAINING_DAYS - 1) * SECONDS_PER_DAY
    with pytest.raises(TraceError):
        validation_windows(0)
    with pytest.raises(TraceError):
        validation_windows(1, validation_days=15)


def test_sampler_days_bound_its_windows():
    from rlscale.workload import SECONDS_PER_DAY

    sampler = TrainingSampler(np.random.default_rng(3), window_s=600, days=(2, 3))
    for _ in range(30):
        start = int(sampler.sample().name.removeprefix("train@"))
        assert 2 * SECONDS_PER_DAY <= start and start + 600 <= 3 * SECONDS_PER_DAY
    with pytest.raises(TraceError):
        TrainingSampler(np.random.default_rng(0), days=(3, 3))


# ---------------------------------------------------------------------- training on one's own traffic (issue 14)


def _csv(path, rps) -> str:
    path.write_text("rps\n" + "\n".join(str(int(x)) for x in rps) + "\n")
    return str(path)


def test_the_split_alone_draws_the_windows_it_always_drew():
    """Sources came later: with the split alone, a seed gives the windows of the formula used before them."""
    from rlscale.workload import source_validation_windows, training_sources, validation_windows

    for seed in range(4):
        sampler = TrainingSampler(np.random.default_rng(seed), window_s=1200, days=(0, 13))
        rng = np.random.default_rng(seed)
        for _ in range(10):
            start = int(rng.integers(0, 13 * SECONDS_PER_DAY - 1200 + 1))
            t = sampler.sample()
            assert t.name == f"train@{start}"
            np.testing.assert_array_equal(t.rps, np.floor(training_split()[start : start + 1200] / 8))
    legacy = validation_windows(8, 1)
    mine = source_validation_windows(training_sources("twitter", validation_days=1), 8)
    assert [t.name for t in mine] == [t.name for t in legacy] and len(legacy) == 8
    assert all(np.array_equal(a.rps, b.rps) for a, b in zip(mine, legacy, strict=True))


def test_training_windows_never_overlap_the_validation_part(tmp_path):
    from rlscale.workload import source_validation_windows, training_sources

    n = 5000
    ours = _csv(tmp_path / "ours.csv", np.arange(n) % 97)
    sources = training_sources(f"twitter,{ours}", window_s=600, validation_days=1, validation_fraction=0.2)
    mine = sources[1]
    assert mine.validation_s == (4000, 5000) and mine.train_s == (0, 4000) and mine.damping == 1
    sampler = TrainingSampler(np.random.default_rng(3), window_s=600, sources=sources)
    seen = {"train": 0, "ours.csv": 0}
    for _ in range(2000):
        t = sampler.sample()
        label, start = t.name.rsplit("@", 1)
        start = int(start)
        seen[label] += 1
        if label == "ours.csv":
            assert 0 <= start and start + 600 <= 4000  # wholly before the held-out last 20 %
            np.testing.assert_array_equal(t.rps, (np.arange(n) % 97)[start : start + 600])  # used as given
        else:
            assert start + 600 <= 13 * SECONDS_PER_DAY
    assert seen["ours.csv"] > 0 and seen["train"] > seen["ours.csv"]  # by the number of starts each offers
    val = source_validation_windows(sources, 4, window_s=600)
    ours_val = [t for t in val if t.name.startswith("val:ours.csv@")]
    assert len(ours_val) == 4
    for t in ours_val:
        start = int(t.name.rsplit("@", 1)[1])
        assert 4000 <= start and start + 600 <= 5000


def test_a_validation_part_holds_at_least_one_window_and_its_windows_once(tmp_path):
    from rlscale.workload import source_validation_windows, training_sources

    ours = _csv(tmp_path / "two-hours.csv", np.ones(7200))
    (src,) = training_sources(ours, window_s=1200, validation_fraction=0.15)  # 15 % is 1080 s < one window
    assert src.validation_s == (6000, 7200)
    assert [t.name for t in source_validation_windows([src], 8, 1200)] == ["val:two-hours.csv@6000"]
    (none,) = training_sources(ours, window_s=1200, validation_fraction=0)
    assert none.train_s == (0, 7200) and source_validation_windows([none], 8, 1200) == []


@pytest.mark.parametrize(
    "traces,problem",
    [
        ("{short}", "shorter than one training window"),
        ("bursty", "never trained"),
        ("twitter,twitter", "listed twice"),
        (" , ", "comma-separated"),
        ("{missing}", "not found"),
    ],
)
def test_bad_training_traces_are_one_clear_error(tmp_path, traces, problem):
    from rlscale.workload import training_sources

    short = _csv(tmp_path / "short.csv", np.ones(1500))
    with pytest.raises(TraceError, match=problem):
        training_sources(traces.format(short=short, missing=tmp_path / "missing.csv"), window_s=1200)


def test_per_second_csvs_stop_at_the_row_limit(tmp_path, monkeypatch):
    """Traces and bandwidth traces share one reader (`rlscale.inputs.per_second_column`) and its row limit."""
    import rlscale.inputs
    from rlscale.bandwidth import load_bandwidth

    monkeypatch.setattr(rlscale.inputs, "MAX_TRACE_SECONDS", 3)
    (tmp_path / "ok.csv").write_text("rps\n1\n2\n3\n")
    (tmp_path / "long.csv").write_text("rps\n1\n2\n3\n4\n")
    (tmp_path / "bw.csv").write_text("bandwidth_bytes_per_s\n1000\n1000\n1000\n1000\n")
    assert load_csv_trace(tmp_path / "ok.csv").rps.tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(TraceError, match="more than 3 rows"):
        load_csv_trace(tmp_path / "long.csv")
    with pytest.raises(TraceError, match="more than 3 rows"):
        load_bandwidth(str(tmp_path / "bw.csv"))
