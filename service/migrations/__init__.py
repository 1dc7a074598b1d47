"""Schema migrations of the service's own tables (Alembic), shipped inside the package.

The service tables (``service.store.metadata``: ``relaxtune_jobs``, ``relaxtune_tokens``,
``relaxtune_quotas``, ``relaxtune_cluster``) evolve through the revisions in ``versions/``;
their revision is kept in :data:`VERSION_TABLE`. Optuna's tables share the database but not
these migrations: Optuna upgrades them itself (``RDBStorage.upgrade()``, what
``optuna storage upgrade`` runs) and keeps its revision in its own ``alembic_version`` table,
which is why ours has another name.

No ``alembic.ini`` is needed: :func:`alembic_config` builds the configuration in code. To add
a migration, change ``service/store.py`` and run (see ``docs/ARCHITECTURE.md``, "Storage
layout")::

    python -m service.migrations -x db=sqlite:///scratch.db upgrade head
    python -m service.migrations -x db=sqlite:///scratch.db revision --autogenerate \\
        --rev-id 0002 -m "what changes"

``python -m service.migrations`` is Alembic's own command line (``history``, ``current``,
``check``, ``upgrade``, …) on this configuration; the database comes from ``-x db=URL`` or
``RELAXTUNE_DB``.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine import Connection, Engine

__all__ = [
    "INITIAL_REVISION",
    "INITIAL_TABLES",
    "VERSION_TABLE",
    "SchemaChange",
    "alembic_config",
    "current_revision",
    "head_revision",
    "include_name",
    "schema_transaction",
    "upgrade",
]

#: Where the service's revision is kept (Optuna's own migrations use ``alembic_version``).
VERSION_TABLE = "relaxtune_alembic_version"
#: The first revision: the tables ``metadata.create_all`` made before migrations existed.
INITIAL_REVISION = "0001"
INITIAL_TABLES = frozenset(
    {"relaxtune_jobs", "relaxtune_tokens", "relaxtune_quotas", "relaxtune_cluster"}
)

SCRIPT_LOCATION = Path(__file__).resolve().parent
_SCHEMA_LOCK_KEY = "relaxtune-schema"
# Alembic's command API keeps its environment in module globals (``alembic.context``): one
# command at a time per process.
_alembic_lock = threading.Lock()


@dataclass(frozen=True)
class SchemaChange:
    """What an upgrade of the service tables did: revision before (``None``: no revision
    recorded) and after; ``adopted``: the tables were made by ``create_all`` before migrations
    existed and were recognised as the initial revision instead of being created again."""

    before: str | None
    after: str | None
    adopted: bool = False

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def describe(self) -> str:
        if not self.changed:
            return f"already at {self.after}"
        if self.adopted:
            return f"tables made before migrations, stamped at {INITIAL_REVISION}" + (
                f", upgraded to {self.after}" if self.after != INITIAL_REVISION else ""
            )
        return f"{self.before or 'empty'} -> {self.after}"


def _escape(value: str) -> str:
    return value.replace("%", "%%")  # Config values go through ConfigParser interpolation


def alembic_config(url: str | None = None, connection: Connection | None = None) -> Config:
    """Alembic configuration of the service migrations, without an ``alembic.ini``.

    ``connection``: run on this connection (inside the caller's transaction) instead of
    opening one from ``url``.
    """
    from alembic.config import Config

    cfg = Config(stdout=sys.stdout)  # the default is the sys.stdout of alembic's import
    cfg.set_main_option("script_location", _escape(str(SCRIPT_LOCATION)))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", _escape(url))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Autogenerate looks at the service tables only (not Optuna's, which share the
    database)."""
    if type_ == "table":
        return name is not None and name.startswith("relaxtune_") and name != VERSION_TABLE
    return True


@contextmanager
def schema_transaction(engine: Engine) -> Iterator[Connection]:
    """A write transaction that holds the schema lock: processes opening the store at once
    upgrade one after the other, and the later ones find the schema at head.

    SQLite: ``BEGIN IMMEDIATE`` (the engine of ``service.store.create_engine_for``) takes the
    database's write lock up front. PostgreSQL: a transaction-scoped advisory lock. DDL is
    transactional on both, so a failed migration leaves nothing half-done.
    """
    with engine.connect() as conn:
        conn.execution_options(relaxtune_write=True)
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                    {"key": _SCHEMA_LOCK_KEY},
                )
            yield conn


def current_revision(connection: Connection) -> str | None:
    """The service tables' revision (``None`` when none is recorded)."""
    from alembic.migration import MigrationContext

    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def head_revision() -> str | None:
    """The newest revision in ``versions/``."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def upgrade(connection: Connection, revision: str = "head") -> SchemaChange:
    """Upgrade the service tables on ``connection``, which should be in a
    :func:`schema_transaction`.

    A database made before migrations existed (service tables, no :data:`VERSION_TABLE`) is
    stamped at :data:`INITIAL_REVISION` rather than created again; if it lacks some of the
    initial tables (made by an older release), the initial revision creates just those.
    """
    from alembic import command

    cfg = alembic_config(connection=connection)
    alembic_logger = logging.getLogger("alembic")
    if alembic_logger.level == logging.NOTSET:  # its INFO lines on every store start are noise
        alembic_logger.setLevel(logging.WARNING)  # (the store logs what changed)
    with _alembic_lock:
        before = current_revision(connection)
        adopted = False
        if before is None:
            present = INITIAL_TABLES & set(sa.inspect(connection).get_table_names())
            adopted = bool(present)
            if present == INITIAL_TABLES:
                command.stamp(cfg, INITIAL_REVISION)
        command.upgrade(cfg, revision)
        after = current_revision(connection)
    return SchemaChange(before, after, adopted)


def database_url(cfg: Config, x_args: dict[str, str]) -> str:
    """The URL for commands run without a connection: ``-x db=URL``, the config's
    ``sqlalchemy.url``, or ``RELAXTUNE_DB``."""
    url = (
        x_args.get("db") or cfg.get_main_option("sqlalchemy.url") or os.environ.get("RELAXTUNE_DB")
    )
    if not url:
        raise SystemExit("which database? pass -x db=URL or set RELAXTUNE_DB")
    return url
