"""Fixtures shared by the service tests: a throwaway SQLite job store per test."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.store import JobStore


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated database, created once per test module and copied for each test."""
    path = tmp_path_factory.mktemp("db") / "template.db"
    store = JobStore(f"sqlite:///{path}")
    store.upgrade()
    store.close()
    return path


@pytest.fixture
def store(template_db: Path, tmp_path: Path) -> Iterator[JobStore]:
    shutil.copyfile(template_db, tmp_path / "jobs.db")
    s = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    yield s
    s.close()
