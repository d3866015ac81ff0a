"""``simulate --plot FILE.png`` / ``--timeline FILE.csv`` replace rlscale's own earlier output (people rerun commands)
and refuse, before the episode runs, any other file that is in the way: it is the user's, and is kept byte for byte.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rlscale.cli import main
from rlscale.timeline import HEAD


@pytest.fixture
def short_trace(tmp_path) -> Path:
    trace = tmp_path / "short.csv"
    trace.write_text("rps\n" + "5\n" * 40)
    return trace


def _simulate(trace: Path, *extra: str) -> int:
    return main(["simulate", "--pipeline", "video", "--trace", str(trace), "--policy", "static-min", *extra])


def test_a_rerun_replaces_its_timeline_and_a_users_csv_is_kept(tmp_path, short_trace, capsys):
    timeline = tmp_path / "t.csv"
    assert _simulate(short_trace, "--timeline", str(timeline)) == 0
    first = timeline.read_bytes()
    assert first.startswith(",".join(HEAD).encode())
    timeline.write_bytes(first + b"a row from last time\n")
    assert _simulate(short_trace, "--timeline", str(timeline)) == 0  # rlscale's own file: replaced
    assert timeline.read_bytes() == first
    capsys.readouterr()

    mine = tmp_path / "mine.csv"
    mine.write_bytes(b"rps\n3\n4\n")
    assert _simulate(short_trace, "--timeline", str(mine)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a timeline rlscale wrote" in err[0] and str(mine) in err[0], err
    assert mine.read_bytes() == b"rps\n3\n4\n"


@pytest.mark.slow
def test_a_rerun_replaces_its_plot_and_a_users_png_is_kept(tmp_path, short_trace, capsys):
    plot = tmp_path / "p.png"
    assert _simulate(short_trace, "--plot", str(plot)) == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plot.write_bytes(plot.read_bytes() + b"trailing bytes")
    assert _simulate(short_trace, "--plot", str(plot)) == 0  # rlscale's own plot: replaced
    assert not plot.read_bytes().endswith(b"trailing bytes")
    capsys.readouterr()

    for name, data in (("notes.png", b"my notes\n"), ("photo.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 64)):
        mine = tmp_path / name
        mine.write_bytes(data)
        assert _simulate(short_trace, "--plot", str(mine), "--timeline", str(tmp_path / "new.csv")) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "not a plot rlscale wrote" in err[0], err
        assert mine.read_bytes() == data
        assert not (tmp_path / "new.csv").exists()  # refused before the run: nothing written
