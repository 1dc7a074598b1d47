"""One root for every error relaxtune raises on purpose.

Every exception class defined in ``search_spaces``, ``workers`` or ``service`` derives from
``RelaxtuneError`` (found by reading the source, so a new one cannot be missed), and none of
the packages raises a bare ``RuntimeError``.
"""

from __future__ import annotations

import ast
import builtins
import importlib
from pathlib import Path

import pytest

from search_spaces import RelaxtuneError

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("search_spaces", "workers", "service")
BUILTIN_EXCEPTIONS = {
    name
    for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)
}


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _exception_classes() -> list[tuple[str, str]]:
    """(module, class) of every class whose bases name a builtin exception or an *Error."""
    found = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ClassDef):
                continue
            bases = [
                b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases
            ]
            if any(b in BUILTIN_EXCEPTIONS or b.endswith(("Error", "Failed")) for b in bases):
                found.append((_module(path), node.name))
    return found


def test_the_scan_finds_the_known_errors() -> None:
    names = {name for _, name in _exception_classes()}
    assert {"SpecError", "TrialDivergedError", "CheckpointError", "NotExportableError"} <= names
    assert {"CliError", "SearchFailed", "ExportFailed", "StoreError", "NotFound"} <= names


@pytest.mark.parametrize(("module", "name"), _exception_classes())
def test_every_error_class_derives_from_the_root(module: str, name: str) -> None:
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, RelaxtuneError), f"{module}.{name} does not derive from RelaxtuneError"


def test_no_bare_runtime_error_is_raised() -> None:
    offenders = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                func = node.exc.func
                if isinstance(func, ast.Name) and func.id == "RuntimeError":
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders
