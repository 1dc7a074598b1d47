"""Migrations of the service tables (``service/migrations``), on SQLite and PostgreSQL.

- a database made the way releases before migrations made it (``metadata.create_all`` and
  Optuna's own tables) is recognised, stamped at the initial revision and upgraded: data kept;
- a fresh database upgraded to head has exactly the tables, columns, types, indexes and
  constraints of ``service.store.metadata`` (a migration that drifts from the model fails);
- Alembic's autogenerate finds nothing to add (``alembic check``);
- upgrading twice, or from several processes at once, is a no-op after the first;
- Optuna's tables keep Optuna's own revision (its ``alembic_version``) untouched.

The PostgreSQL half makes a new database per test (``pg_databases``, ``tests/service/conftest.py``).
"""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import optuna.storages._rdb.models as optuna_models
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from service import cli, migrations
from service.errors import StoreError
from service.quotas import set_overrides, tenant_overrides
from service.store import JobStore, create_engine_for, metadata

SPEC = {"name": "demo", "task": "rotated_mnist", "budget": {"trials": 4, "epochs": 2}}
OPTUNA_TABLES = set(optuna_models.BaseModel.metadata.tables) | {"alembic_version"}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a database with no tables at all: a new SQLite file or PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
        return
    with request.getfixturevalue("pg_databases")(prefix="relaxtune_mig") as url:
        yield url


def relaxtune(*argv: str) -> int:
    try:
        return cli.main(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)


def make_release_database(url: str, tables: list[sa.Table] | None = None) -> dict[str, Any]:
    """Make the database as the release before migrations did (``JobStore.upgrade`` was
    ``metadata.create_all`` then Optuna's storage), put a row in each service table, and
    return what was written."""
    engine = create_engine_for(url)
    with engine.begin() as conn:
        metadata.create_all(conn, tables=tables)
    engine.dispose()
    optuna.storages.RDBStorage(url).engine.dispose()  # Optuna's tables, at Optuna's head
    store = JobStore(url)
    job = store.create_job("alice", SPEC, "demo")
    written: dict[str, Any] = {"job": job.id, "token": store.create_token("alice")}
    if tables is None or metadata.tables["relaxtune_quotas"] in tables:
        written["quota"] = set_overrides(store, "alice", {"max_concurrent_jobs": 3})
    if tables is None or metadata.tables["relaxtune_cluster"] in tables:
        store.record_cluster("w1", {"cpus": 4})
        written["cluster"] = "w1"
    store.close()
    return written


def assert_kept(url: str, written: dict[str, Any]) -> None:
    store = JobStore(url)
    try:
        assert store.get_job(written["job"]).spec == SPEC
        assert [j.id for j in store.list_jobs()] == [written["job"]]
        principal = store.authenticate(written["token"])
        assert principal is not None and principal.tenant == "alice"
        if "quota" in written:
            assert tenant_overrides(store, "alice") == written["quota"] != {}
        if "cluster" in written:
            assert store.cluster_states()["w1"]["cpus"] == 4
    finally:
        store.close()


def revisions(url: str) -> tuple[str | None, str | None]:
    """(service revision, Optuna's revision) recorded in the database."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            service = migrations.current_revision(conn)
            optuna_rev = MigrationContext.configure(conn).get_current_revision()
        return service, optuna_rev
    finally:
        engine.dispose()


def reflected_schema(url: str) -> dict[str, Any]:
    """The service tables as the database has them: columns (compiled type, nullable),
    primary key, indexes and unique constraints."""
    engine = sa.create_engine(url)
    try:
        inspector = sa.inspect(engine)
        out: dict[str, Any] = {}
        for name in sorted(inspector.get_table_names()):
            if not name.startswith("relaxtune_") or name == migrations.VERSION_TABLE:
                continue
            out[name] = {
                "columns": {
                    c["name"]: (c["type"].compile(engine.dialect), c["nullable"])
                    for c in inspector.get_columns(name)
                },
                "primary_key": sorted(inspector.get_pk_constraint(name)["constrained_columns"]),
                "indexes": sorted(
                    (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                    for i in inspector.get_indexes(name)
                    if not i.get("duplicates_constraint")
                ),
                "unique": sorted(
                    tuple(u["column_names"]) for u in inspector.get_unique_constraints(name)
                ),
            }
        return out
    finally:
        engine.dispose()


def model_schema(dialect: sa.Dialect) -> dict[str, Any]:
    """The same, from ``service.store.metadata``."""
    out: dict[str, Any] = {}
    for name, table in sorted(metadata.tables.items()):
        unique = [
            tuple(c.name for c in con.columns)
            for con in table.constraints
            if isinstance(con, sa.UniqueConstraint)
        ] + [(c.name,) for c in table.columns if c.unique]
        out[name] = {
            "columns": {c.name: (c.type.compile(dialect), c.nullable) for c in table.columns},
            "primary_key": sorted(c.name for c in table.primary_key.columns),
            "indexes": sorted(
                (i.name, tuple(c.name for c in i.columns), bool(i.unique)) for i in table.indexes
            ),
            "unique": sorted(set(unique)),  # unique=True also makes a UniqueConstraint
        }
    return out


def autogenerate_diff(url: str) -> list[Any]:
    """What ``alembic check`` would find between the database and the model."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={
                    "version_table": migrations.VERSION_TABLE,
                    "include_name": migrations.include_name,
                    "compare_type": True,
                },
            )
            return compare_metadata(context, metadata)
    finally:
        engine.dispose()


# --- a database of the release before migrations ------------------------------------------


@pytest.mark.parametrize("via", ["cli", "store"])
def test_database_made_before_migrations_is_stamped_and_kept(
    empty_url: str, via: str, capsys: pytest.CaptureFixture[str]
) -> None:
    written = make_release_database(empty_url)
    optuna_head = revisions(empty_url)[1]
    assert revisions(empty_url)[0] is None and optuna_head is not None
    before = reflected_schema(empty_url)
    if via == "cli":
        assert relaxtune("db", "upgrade", "--db", empty_url) == 0
        out = capsys.readouterr().out
        assert "service tables: tables made before migrations, stamped at 0001" in out
        assert f"Optuna tables: already at {optuna_head}" in out
    else:
        store = JobStore(empty_url)
        done = store.upgrade()
        store.close()
        assert done.service.adopted and done.service.before is None
        assert done.service.after == migrations.head_revision()
    assert revisions(empty_url) == (migrations.head_revision(), optuna_head)
    assert_kept(empty_url, written)
    assert reflected_schema(empty_url) == before  # nothing dropped or made again
    assert autogenerate_diff(empty_url) == []


def test_database_of_an_older_release_gets_its_missing_tables(empty_url: str) -> None:
    """A release before ``relaxtune_cluster`` existed: the initial revision creates just it."""
    older = [metadata.tables[n] for n in ("relaxtune_jobs", "relaxtune_tokens", "relaxtune_quotas")]
    written = make_release_database(empty_url, tables=older)
    store = JobStore(empty_url)
    done = store.upgrade()
    assert done.service.adopted and done.service.after == migrations.head_revision()
    store.record_cluster("w1", {"cpus": 2})
    store.close()
    assert_kept(empty_url, written)
    assert reflected_schema(empty_url) == model_schema(sa.create_engine(empty_url).dialect)


# --- fresh databases: migrations == model ------------------------------------------------


def test_fresh_database_at_head_has_exactly_the_model_schema(empty_url: str) -> None:
    store = JobStore(empty_url)
    done = store.upgrade()
    dialect = store.engine.dialect
    store.close()
    assert not done.service.adopted and done.service.before is None
    assert done.service.after == migrations.head_revision()
    assert revisions(empty_url)[0] == migrations.head_revision()
    engine = sa.create_engine(empty_url)
    tables = set(sa.inspect(engine).get_table_names())
    engine.dispose()
    assert tables == set(metadata.tables) | {migrations.VERSION_TABLE} | OPTUNA_TABLES
    assert reflected_schema(empty_url) == model_schema(dialect)
    assert autogenerate_diff(empty_url) == []


def test_service_migrations_alone_make_only_the_service_tables(empty_url: str) -> None:
    engine = create_engine_for(empty_url)
    with migrations.schema_transaction(engine) as conn:
        change = migrations.upgrade(conn)
    tables = set(sa.inspect(engine).get_table_names())
    engine.dispose()
    assert change.before is None and change.after == migrations.head_revision()
    assert tables == set(metadata.tables) | {migrations.VERSION_TABLE}


def test_upgrading_twice_is_a_no_op(empty_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert relaxtune("db", "upgrade", "--db", empty_url) == 0
    first = capsys.readouterr().out
    assert f"service tables: empty -> {migrations.head_revision()}" in first
    assert "Optuna tables: empty -> " in first
    schema = reflected_schema(empty_url)
    written = {"job": JobStore(empty_url).create_job("alice", SPEC).id}
    assert relaxtune("db", "upgrade", "--db", empty_url) == 0
    second = capsys.readouterr().out
    assert f"service tables: already at {migrations.head_revision()}" in second
    assert "Optuna tables: already at " in second
    store = JobStore(empty_url)
    done = store.upgrade()
    assert not done.service.changed and done.optuna_before == done.optuna_after
    assert store.get_job(written["job"]).spec == SPEC
    store.close()
    assert reflected_schema(empty_url) == schema


def _upgrade_in_process(url: str, go: Any, queue: multiprocessing.Queue) -> None:
    store = JobStore(url)
    go.wait(60)
    try:
        change = store._upgrade_service()
        queue.put(json.dumps([change.before, change.after]))
    except Exception as exc:  # reported to the test
        queue.put(json.dumps(["error", repr(exc)]))
    finally:
        store.close()


def test_concurrent_upgrades_of_a_fresh_database(empty_url: str) -> None:
    """Processes opening a new database at once: one creates the tables, the others wait for
    the schema lock and find them at head."""
    ctx = multiprocessing.get_context("spawn")
    go, queue = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_upgrade_in_process, args=(empty_url, go, queue)) for _ in range(3)]
    for p in procs:
        p.start()
    go.set()
    results = [json.loads(queue.get(timeout=120)) for _ in procs]
    for p in procs:
        p.join(30)
    head = migrations.head_revision()
    assert sorted(results, key=str) == sorted([[None, head], [head, head], [head, head]], key=str)
    assert revisions(empty_url)[0] == head
    engine = sa.create_engine(empty_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT * FROM {migrations.VERSION_TABLE}")).all()
    engine.dispose()
    assert len(rows) == 1


# --- unknown revisions, the migration scripts ---------------------------------------------


def test_a_revision_this_code_does_not_know_is_a_store_error(
    empty_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A database a newer release migrated: refused, not "repaired"."""
    JobStore(empty_url).upgrade()
    engine = sa.create_engine(empty_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {migrations.VERSION_TABLE} SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(StoreError, match="migrating the service tables"):
        JobStore(empty_url).upgrade()
    assert relaxtune("db", "upgrade", "--db", empty_url) == 1
    assert "migrating the service tables" in capsys.readouterr().err


def test_one_linear_history_starting_at_the_initial_revision() -> None:
    script = ScriptDirectory.from_config(migrations.alembic_config())
    assert len(script.get_heads()) == 1
    chain = list(script.walk_revisions())
    assert chain[-1].revision == migrations.INITIAL_REVISION and chain[-1].down_revision is None
    assert (migrations.SCRIPT_LOCATION / "script.py.mako").is_file()  # `revision` needs it


def test_the_alembic_command_line_helper(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from service.migrations.__main__ import main

    url = f"sqlite:///{tmp_path / 'scratch.db'}"
    main(["-x", f"db={url}", "upgrade", "head"])
    main(["-x", f"db={url}", "check"])  # raises when autogenerate finds differences
    capsys.readouterr()
    main(["-x", f"db={url}", "current"])
    assert migrations.head_revision() in capsys.readouterr().out
    assert set(reflected_schema(url)) == set(metadata.tables)
