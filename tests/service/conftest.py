"""Fixtures shared by the service tests: a throwaway SQLite job store per test, and throwaway
PostgreSQL databases on the server named by ``RELAXTUNE_TEST_PG_URL``."""

from __future__ import annotations

import functools
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from service.store import JobStore

PG_URL = os.environ.get(
    "RELAXTUNE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


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


@pytest.fixture(scope="session")
def pg_admin(missing: Any) -> Iterator[sa.Engine]:
    """An AUTOCOMMIT engine on the PostgreSQL test server (``missing("PG", …)`` when it is
    unreachable: skip, or fail under ``RELAXTUNE_TEST_REQUIRE_PG=1``)."""
    # pre-ping: tests/reliability/test_faults_db_outage.py restarts the server, which closes
    # the pooled connections of this session-long engine
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    try:
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        missing("PG", f"PostgreSQL unreachable at {PG_URL}: {exc.orig}")
    yield admin
    admin.dispose()


@pytest.fixture(scope="session")
def pg_databases(pg_admin: sa.Engine) -> Callable[..., AbstractContextManager[str]]:
    """Throwaway PostgreSQL databases: ``with pg_databases() as url:`` a new, empty database,
    dropped when the block ends."""
    return functools.partial(_pg_database, pg_admin)


@contextmanager
def _pg_database(admin: sa.Engine, prefix: str = "relaxtune_test") -> Iterator[str]:
    name = f"{prefix}_{secrets.token_hex(4)}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.engine.make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            # FORCE: pooled connections (of Optuna storages, say) may still be open
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def chromium(missing: Any) -> Iterator[Any]:
    """Headless Chromium driven by selenium through Debian's chromedriver, logging the console
    and the network (``goog:loggingPrefs``); skipped or failed (``make test``) without them."""
    try:
        from selenium import webdriver
    except ImportError:  # a dev dependency
        missing("CHROMIUM", "selenium is not installed")
    browser = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    if browser is None or driver_path is None:
        missing(
            "CHROMIUM",
            "chromium or chromium-driver is not installed (scripts/install_system_deps.sh)",
        )
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--window-size=1400,1000",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(driver_path))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
