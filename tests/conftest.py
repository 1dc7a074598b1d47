"""What a test needs from the machine, and what happens when it is missing.

A test that needs something outside the Python environment calls ``missing(NAME, why)`` when
it is absent. That skips the test, unless ``RELAXTUNE_TEST_REQUIRE_<NAME>`` is set (to
anything but ``0``): then the test fails, so a run that is meant to cover it cannot pass by
skipping it. ``make test`` sets every switch in :data:`REQUIREMENTS` (see
``docs/RELIABILITY.md``, "Skipped tests").
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import NoReturn

import pytest

#: switch name → what the tests behind it need
REQUIREMENTS = {
    "PG": "a PostgreSQL server at RELAXTUNE_TEST_PG_URL, and pg_ctlcluster to stop and start it",
    "COMPOSE": "docker-compose (validating docker-compose.yml; no container engine)",
    "CHROMIUM": "Chromium with Playwright, and chromium-driver with selenium (the browser tests)",
    "TMPFS": "mounting a tmpfs (root with CAP_SYS_ADMIN): the disk-full fault test",
    "PYPI": "PyPI reachable through pip (downloading the GPU bundle's wheels)",
}


def required(name: str) -> bool:
    """Whether ``RELAXTUNE_TEST_REQUIRE_<name>`` asks for ``name`` to be present."""
    if name not in REQUIREMENTS:
        raise KeyError(f"unknown requirement {name!r}; known: {', '.join(REQUIREMENTS)}")
    return os.environ.get(f"RELAXTUNE_TEST_REQUIRE_{name}", "") not in ("", "0")


def missing(name: str, why: str) -> NoReturn:
    """``name`` is not available here: skip the test, or fail it when it is required."""
    if required(name):
        pytest.fail(f"{why} (RELAXTUNE_TEST_REQUIRE_{name} is set)", pytrace=False)
    pytest.skip(f"{why} (set RELAXTUNE_TEST_REQUIRE_{name}=1 to fail instead)")


@pytest.fixture(name="missing", scope="session")
def missing_fixture() -> Callable[[str, str], NoReturn]:
    """:func:`missing`, for tests and fixtures of any scope."""
    return missing


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``make test TEST_WORKERS=2`` (pytest-xdist workers handing out whole files in
    collection order: ``--dist loadfile --no-loadscope-reorder``), the files that hold slow
    tests come first, so that the long tests do not meet at the end with one process idle.
    A plain ``pytest`` run keeps pytest's order."""
    if not hasattr(config, "workerinput"):  # not a pytest-xdist worker
        return
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: file order kept
