"""Fixtures shared by the service tests: a throwaway SQLite job store per test, and a headless
browser (the throwaway PostgreSQL databases are in ``tests/conftest.py``)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
