"""The repository's own docs: every docs/ page the code, tests and README cite exists, and
nothing cites the design notes that live outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted([*REPO.glob("lfsearch/**/*.py"), *REPO.glob("tests/*.py"),
                  *REPO.glob("benchmarks/*"), REPO / "README.md"])


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""


def test_every_cited_docs_page_exists():
    cited = {m for path in SOURCES for m in re.findall(r"docs/[\w-]+\.md", _text(path))}
    assert {"docs/architecture.md", "docs/math.md", "docs/conventions.md"} <= cited
    missing = sorted(c for c in cited if not (REPO / c).is_file())
    assert not missing, missing


def test_nothing_cites_a_design_file_outside_the_repository():
    word = "DESIGN" + ".md"  # split, so this file does not match itself
    citing = [str(p.relative_to(REPO)) for p in SOURCES if word in _text(p)]
    assert not citing, citing


def test_docs_links_between_pages_resolve():
    for page in (REPO / "docs").glob("*.md"):
        for target in re.findall(r"\]\(([\w./-]+\.md)\)", page.read_text()):
            assert (page.parent / target).is_file(), (page.name, target)
