"""Documents cited by the code and the docs exist in the repository, and so do the sections
of ``docs/METHOD.md`` they name."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHOD_DOC = ROOT / "docs/METHOD.md"
SOURCES = ("search_spaces", "service", "workers", "bench", "tests", "docs", "scripts")
SUFFIXES = {".py", ".md", ".yaml", ".yml"}

#: a citation of a Markdown document in prose: ``docs/METHOD.md §3``, ``README.md``, a
#: relative path (a quoted name is a path built in code, not a citation)
CITATION = re.compile(r"(?<![\w/.\-\"'])((?:\.\./|[\w.-]+/)*[A-Z][A-Z_]*\.md)(?:\s+§(\d+))?")


def _files() -> list[Path]:
    out = [ROOT / "README.md"]
    for folder in SOURCES:
        out += [p for p in (ROOT / folder).rglob("*") if p.suffix in SUFFIXES and p.is_file()]
    return [p for p in out if p != Path(__file__).resolve()]


def _method_sections() -> set[str]:
    text = METHOD_DOC.read_text("utf-8")
    return set(re.findall(r"^## (\d+)\. ", text, flags=re.MULTILINE))


def test_cited_documents_and_sections_exist() -> None:
    sections = _method_sections()
    assert {"1", "2", "3", "4", "5"} <= sections
    problems = []
    for path in _files():
        for n, line in enumerate(path.read_text("utf-8").splitlines(), 1):
            for name, section in CITATION.findall(line):
                where = f"{path.relative_to(ROOT)}:{n}: {name}"
                # a bare name is a sibling of the citing file, or of the repository root
                target = next(
                    (b / name for b in (path.parent, ROOT) if (b / name).resolve().is_file()),
                    None,
                )
                if target is None or ROOT not in target.resolve().parents:
                    problems.append(f"{where} is not a file of the repository")
                elif section and target.resolve() == METHOD_DOC:
                    if section not in sections:
                        problems.append(f"{where} §{section}: no such section")
    assert not problems, "\n".join(problems)


def test_the_check_catches_a_missing_document() -> None:
    # names of documents that are not in the repository, built here so that this file does
    # not itself cite them
    outside, absent = f"../outside/{METHOD_DOC.name}", "NO_SUCH_DOCUMENT" + ".md"
    found = CITATION.findall(f"see {outside} §3 and {absent}")
    assert found == [(outside, "3"), (absent, "")]
    assert not (ROOT / absent).exists() and not (ROOT.parent / "outside").exists()


def test_the_architecture_names_only_paths_that_exist() -> None:
    """Every module or folder ``docs/ARCHITECTURE.md`` names (in backquotes) is in the
    repository: a module moved or renamed without the document fails here."""
    text = (ROOT / "docs/ARCHITECTURE.md").read_text("utf-8")
    pattern = r"`((?:service|workers|search_spaces|bench|scripts|tests)/[^`*\s]+)`"
    paths = set(re.findall(pattern, text))
    assert len(paths) > 20
    assert not sorted(p for p in paths if not (ROOT / p).exists())
