"""The README and docs/ link only to files in the repository, and every such link resolves."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "rlscale" / "data" / "PROVENANCE.md"]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_the_pages_exist():
    assert {p.name for p in PAGES} >= {"README.md", "model.md", "operations.md", "walkthrough.md"}


def test_relative_links_resolve_inside_the_repository():
    checked = 0
    for page in PAGES:
        text = page.read_text()
        if page.name != "PROVENANCE.md":  # that one cites the team's reference copies it was derived from
            assert "../shared" not in text, f"{page.name} points outside the repository"
        for target in LINK.findall(text):
            if re.match(r"^[a-z]+://", target):
                continue
            resolved = (page.parent / target).resolve()
            assert resolved.exists(), f"{page.relative_to(ROOT)}: broken link {target}"
            assert ROOT in resolved.parents or resolved == ROOT, f"{page.name}: {target} leaves the repository"
            checked += 1
    assert checked >= 8
