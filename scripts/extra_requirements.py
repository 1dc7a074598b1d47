#!/usr/bin/env python3
"""Print the requirements of one optional-dependency group of pyproject.toml, one a line:
what a role-only install (``pip install --no-deps .``) needs besides the project, e.g.

    python scripts/extra_requirements.py api > /tmp/api.txt && pip install -r /tmp/api.txt
"""

from __future__ import annotations

import sys
from pathlib import Path

import tomllib

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def extra_requirements(name: str, pyproject: Path = PYPROJECT) -> list[str]:
    """The requirement strings of the extra ``name`` (``KeyError``: no such extra)."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    return list(project["optional-dependencies"][name])


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: extra_requirements.py EXTRA", file=sys.stderr)
        return 2
    try:
        lines = extra_requirements(argv[0])
    except KeyError:
        print(f"pyproject.toml has no extra {argv[0]!r}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
