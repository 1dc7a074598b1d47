"""What a test needs from the machine, and what happens when it is missing; the fixtures that
reach outside this process (throwaway PostgreSQL databases, a multi-node Ray cluster); and
the order in which ``make test``'s pytest-xdist processes take the files.

A test that needs something outside the Python environment calls ``missing(NAME, why)`` when
it is absent. That skips the test, unless ``RELAXTUNE_TEST_REQUIRE_<NAME>`` is set (to
anything but ``0``): then the test fails, so a run that is meant to cover it cannot pass by
skipping it. ``make test`` sets every switch in :data:`REQUIREMENTS` (see
``docs/RELIABILITY.md``, "Skipped tests").
"""

from __future__ import annotations

import functools
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, NoReturn

import pytest
import sqlalchemy as sa

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


#: the PostgreSQL server of the tests (`make test` starts the local one:
#: scripts/ensure_postgres.sh)
PG_URL = os.environ.get(
    "RELAXTUNE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _pg_engine(url: str) -> sa.Engine:
    """An AUTOCOMMIT engine on the server at ``url``, checked with one query
    (``missing("PG", …)`` when it does not answer: skip, or fail under
    ``RELAXTUNE_TEST_REQUIRE_PG=1``)."""
    # pre-ping: tests/reliability/test_faults_db_outage.py restarts the server, which closes
    # the pooled connections of a session-long engine
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        engine.dispose()
        missing("PG", f"PostgreSQL unreachable at {url}: {exc.orig}")
    return engine


@pytest.fixture(name="pg_engine", scope="session")
def pg_engine_fixture() -> Callable[[str], sa.Engine]:
    """:func:`_pg_engine`, for a test of what happens when the server does not answer."""
    return _pg_engine


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[sa.Engine]:
    """An AUTOCOMMIT engine on the PostgreSQL test server (:func:`_pg_engine`)."""
    admin = _pg_engine(PG_URL)
    yield admin
    admin.dispose()


@pytest.fixture(scope="session")
def pg_databases(pg_admin: sa.Engine) -> Callable[..., AbstractContextManager[str]]:
    """Throwaway PostgreSQL databases: ``with pg_databases() as url:`` (or
    ``pg_databases("prefix")``) a new, empty database, dropped when the block ends."""
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


@pytest.fixture
def cluster() -> Iterator[Any]:
    """A multi-node Ray cluster on this machine (``ray.cluster_utils.Cluster``): a head with no
    CPUs, where nothing is scheduled (as in the compose deployment), and two worker nodes of
    one CPU each. This process's own Ray, if it has one, is shut down first (``run_search``
    would reuse it) and again at the end (the connection a search opened); the cluster is
    always shut down, even on failure."""
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    small = {"object_store_memory": 80 * 1024 * 1024, "include_dashboard": False}
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, **small})
    try:
        for _ in range(2):
            c.add_node(num_cpus=1, **small)
        c.wait_for_nodes()
        yield c
    finally:
        ray.shutdown()
        c.shutdown()  # stops the worker nodes, then the head


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``make test TEST_WORKERS=2`` (pytest-xdist workers handing out whole files in
    collection order: ``--dist loadfile --no-loadscope-reorder``), the files that hold slow
    tests come first, so that the long tests do not meet at the end with one process idle.
    A plain ``pytest`` run keeps pytest's order."""
    if not hasattr(config, "workerinput"):  # not a pytest-xdist worker
        return
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: file order kept
