"""Documentation invariants of the source tree.

- Module docstrings say what a module owns in a screenful: design reasoning with its figures lives
  in docs/design/ (issue 15), so no module docstring is over ``MAX_DOCSTRING_LINES`` lines.
- Every section the code cites as ``official \u00a7N`` (and a bare ``\u00a7N`` beside it) has a heading in
  docs/official-behaviour.md; a citation of another document names it (``<name>.md \u00a7N``).
- Every design memo the code points to exists, and docs/design/README.md indexes every memo.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("reference", "kernels", "lnca_fast", "bench")
CITING_DIRS = (*SOURCE_DIRS, "tests")
MAX_DOCSTRING_LINES = 40
OFFICIAL = ROOT / "docs" / "official-behaviour.md"
DESIGN = ROOT / "docs" / "design"

SECTION = "\u00a7"
# A cited section, optionally a range of whole sections ("1-2"), and the word before it.
CITATION = re.compile(r"(\S*)\s*" + SECTION + r"(\d+(?:\.\d+)?)(?:-(\d+)(?![.\d]))?")
HEADING = re.compile(r"^#{2,}\s+" + SECTION + r"(\d+(?:\.\d+)?)\b", re.M)
MEMO_LINK = re.compile(r"docs/design/[\w.-]+\.md")


def _python_files(dirs: tuple[str, ...]) -> list[Path]:
    return sorted(p for d in dirs for p in (ROOT / d).rglob("*.py") if "__pycache__" not in p.parts)


def _docstring_lines(path: Path) -> int:
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")), clean=False)
    return len(doc.splitlines()) if doc else 0


def cited_sections(text: str) -> set[str]:
    """Sections of docs/official-behaviour.md that ``text`` cites: every section number not
    preceded by another document's name (``<name>.md``); ``1-2`` cites 1 and 2."""
    out = set()
    for before, first, last in CITATION.findall(text):
        if before.rstrip("`'\")*").endswith(".md"):
            continue
        if last:
            out.update(str(n) for n in range(int(first), int(last) + 1))
        else:
            out.add(first)
    return out


def test_citation_parser():
    s = SECTION
    assert cited_sections(f"(official {s}4, {s}8.5) and official {s}1-2; kernels-and-anchors.md {s}6.2") == {
        "4", "8.5", "1", "2"}  # fmt: skip
    assert cited_sections(f"official-code.md {s}4, ``occupancy.md`` {s}6.3") == set()


def test_no_module_docstring_over_40_lines():
    files = _python_files(SOURCE_DIRS)
    assert len(files) > 50  # the tree was found
    long = {str(p.relative_to(ROOT)): n for p in files if (n := _docstring_lines(p)) > MAX_DOCSTRING_LINES}
    assert not long, f"module docstrings over {MAX_DOCSTRING_LINES} lines (move the reasoning to docs/design/): {long}"


def test_every_cited_official_section_has_a_heading():
    headings = set(HEADING.findall(OFFICIAL.read_text(encoding="utf-8")))
    missing = {}
    for path in _python_files(CITING_DIRS):
        for section in cited_sections(path.read_text(encoding="utf-8")) - headings:
            missing.setdefault(section, []).append(str(path.relative_to(ROOT)))
    assert "4" in headings and "8.15" in headings
    assert not missing, f"sections cited in the code with no heading in docs/official-behaviour.md: {missing}"


def test_design_memos_resolve_and_are_indexed():
    memos = {p.name for p in DESIGN.glob("*.md")} - {"README.md"}
    assert {"halo-vs-split.md", "weight-gradient-gemm.md", "occupancy-model.md"} <= memos
    index = (DESIGN / "README.md").read_text(encoding="utf-8")
    assert not [m for m in memos if f"({m})" not in index], "docs/design/README.md must link every memo"
    cited = {link for path in _python_files(CITING_DIRS) for link in MEMO_LINK.findall(path.read_text(encoding="utf-8"))}
    assert cited, "the code points to no design memo"
    assert not [c for c in cited if not (ROOT / c).is_file()]


@pytest.mark.parametrize("memo", sorted(p.name for p in DESIGN.glob("*.md")))
def test_memo_links_resolve(memo):
    text = (DESIGN / memo).read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#]+\.md)\)", text):
        assert (DESIGN / target).resolve().is_file(), f"{memo} links {target}"
