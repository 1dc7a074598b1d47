"""Alembic environment of the service tables (see ``service/migrations/__init__.py``).

The store passes its own connection (``config.attributes["connection"]``), already inside a
:func:`~service.migrations.schema_transaction`; Alembic then runs in that transaction. From
the command line (``python -m service.migrations``) this opens one itself.
"""

from __future__ import annotations

from typing import Any

from alembic import context

from service.migrations import VERSION_TABLE, database_url, include_name, schema_transaction
from service.store import create_engine_for, metadata

config = context.config


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        include_name=include_name,
        compare_type=True,
        render_as_batch=True,  # SQLite cannot ALTER most things: copy-and-move instead
        **kwargs,
    )


def run_migrations_offline() -> None:
    """``--sql``: print the SQL instead of running it."""
    url = database_url(config, context.get_x_argument(as_dictionary=True))
    _configure(url=url, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine_for(database_url(config, context.get_x_argument(as_dictionary=True)))
    try:
        with schema_transaction(engine) as conn:
            _configure(connection=conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
