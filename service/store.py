"""The job store: job rows and API tokens on SQLAlchemy (SQLite or PostgreSQL).

The store is the only shared state between the API process and the controller: the API writes
a ``queued`` row, a controller claims it (``queued`` → ``running``), reports progress and
heartbeats on it, and finishes it. Optuna's tables live in the same database (one study per
job, ``job-<id>``); :meth:`JobStore.upgrade` creates or upgrades both schemas: the service
tables through the Alembic migrations in ``service/migrations``, Optuna's through Optuna.

Contract (what every backend must guarantee, checked by ``tests/service/test_store_contract.py``
on SQLite and PostgreSQL):

- job ids are random and unguessable; malformed ids never reach a query;
- a job is claimed by at most one worker, however many claim concurrently;
- a tenant never sees another tenant's job (it is :class:`~service.errors.NotFound`);
- token plaintext is never stored, only its SHA-256; revoked tokens do not authenticate.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from service.artifacts import study_name
from service.errors import Conflict, LimitExceeded, NotFound, StoreError
from service.migrations import SchemaChange
from service.progress import Progress

__all__ = [
    "ACTIVE_STATUSES",
    "JOB_ID_PATTERN",
    "TERMINAL_STATUSES",
    "Job",
    "JobStatus",
    "JobStore",
    "Principal",
    "SchemaUpgrade",
    "validate_job_id",
]

logger = logging.getLogger(__name__)

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
ACTIVE_STATUSES: tuple[str, ...] = ("queued", "running")
TERMINAL_STATUSES: tuple[str, ...] = ("succeeded", "failed", "cancelled")

#: ``secrets.token_hex(8)``: 64 random bits, lowercase hex.
JOB_ID_PATTERN = re.compile(r"^[0-9a-f]{16}$")
_TOKEN_ID_PATTERN = re.compile(r"^[0-9a-f]{16}$")
_TOKEN_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_TOKEN_PREFIX = "rt"

metadata = sa.MetaData()

jobs_table = sa.Table(
    "relaxtune_jobs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("tenant", sa.String(64), nullable=False, index=True),
    sa.Column("name", sa.String(200), nullable=False, default=""),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, default=False),
    sa.Column("progress", sa.Text, nullable=False),
    sa.Column("best", sa.Text, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("claimed_by", sa.String(200), nullable=True),
    sa.Index("ix_relaxtune_jobs_queue", "status", "created_at"),
)

tokens_table = sa.Table(
    "relaxtune_tokens",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False),
    sa.Column("admin", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
)

#: Per-tenant overrides of the limits in ``Settings`` (JSON object; see ``service/quotas.py``).
quotas_table = sa.Table(
    "relaxtune_quotas",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("limits", sa.Text, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)


#: What each scheduling controller last saw (JSON; written by ``service.pool``, read by the
#: API's ``GET /v1/cluster`` and the queue position of a job): its cluster's capacity, what
#: the running jobs use, and the queue in the order it will claim from it.
cluster_table = sa.Table(
    "relaxtune_cluster",
    metadata,
    sa.Column("worker_id", sa.String(200), primary_key=True),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _utc(value: datetime | None) -> datetime | None:
    # SQLite keeps no time zone; every timestamp the store writes is UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=timezone.utc)


def _iso(value: datetime | None) -> str | None:
    utc = _utc(value)
    return None if utc is None else utc.isoformat()


def validate_job_id(job_id: str) -> str:
    """Return ``job_id`` if it is well formed, else raise :class:`NotFound`.

    A malformed id cannot name an existing job, so it is reported like a missing one; the check
    also keeps arbitrary user text out of queries and file paths (``<artifacts>/jobs/<id>``).
    """
    if not isinstance(job_id, str) or not JOB_ID_PATTERN.fullmatch(job_id):
        raise NotFound("job not found")
    return job_id


def _running_values(worker_id: str) -> dict[str, Any]:
    """The columns a claim sets: the job runs from now, held by ``worker_id``, with no error
    or end time left from an earlier run."""
    now = _now()
    return {
        "status": "running",
        "claimed_by": worker_id,
        "started_at": now,
        "heartbeat_at": now,
        "error": None,
        "finished_at": None,
    }


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's name, its tenant, and whether it may see every tenant."""

    name: str
    tenant: str
    admin: bool = False

    @property
    def tenant_filter(self) -> str | None:
        """The tenant to restrict queries to: ``None`` (every tenant) for an admin."""
        return None if self.admin else self.tenant


@dataclass(frozen=True)
class Job:
    """One search job as stored (a snapshot; the row may have moved on)."""

    id: str
    tenant: str
    name: str
    spec: dict[str, Any]
    status: str
    cancel_requested: bool
    progress: dict[str, Any]
    best: dict[str, Any] | None
    error: str | None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None
    claimed_by: str | None = None

    @property
    def study_name(self) -> str:
        """Name of the job's Optuna study."""
        return study_name(self.id)

    @property
    def progress_info(self) -> Progress:
        """The progress as its typed model (:class:`~service.progress.Progress`)."""
        return Progress.read(self.progress)

    @property
    def finished(self) -> bool:
        """True once the job reached a terminal status."""
        return self.status in TERMINAL_STATUSES

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (timestamps as ISO 8601)."""
        out: dict[str, Any] = {}
        for key in (
            "id",
            "tenant",
            "name",
            "spec",
            "status",
            "cancel_requested",
            "progress",
            "best",
            "error",
            "created_at",
            "started_at",
            "finished_at",
            "heartbeat_at",
            "claimed_by",
        ):
            value = getattr(self, key)
            out[key] = value.isoformat() if isinstance(value, datetime) else value
        return out

    @classmethod
    def _from_row(cls, row: sa.Row[Any]) -> Job:
        m = row._mapping
        return cls(
            id=m["id"],
            tenant=m["tenant"],
            name=m["name"],
            spec=json.loads(m["spec"]),
            status=m["status"],
            cancel_requested=bool(m["cancel_requested"]),
            progress=json.loads(m["progress"]) if m["progress"] else {},
            best=json.loads(m["best"]) if m["best"] else None,
            error=m["error"],
            created_at=_utc(m["created_at"]),  # type: ignore[arg-type]
            started_at=_utc(m["started_at"]),
            finished_at=_utc(m["finished_at"]),
            heartbeat_at=_utc(m["heartbeat_at"]),
            claimed_by=m["claimed_by"],
        )


def _report_refusal(job: Job) -> str:
    if job.status == "running":
        return (
            f"job {job.id} is running; ask for its report when it has finished (or put "
            "report: {seeds: K} in the spec of a new job)"
        )
    if job.status == "failed":
        return f"job {job.id} failed, so it has no best configuration to report on"
    return f"job {job.id} was cancelled during its search: there is no finished search to report on"


def _initial_progress(spec: dict[str, Any]) -> dict[str, Any]:
    budget = spec.get("budget") if isinstance(spec.get("budget"), dict) else {}
    total = budget.get("trials") if isinstance(budget, dict) else None
    return Progress(total=total if isinstance(total, int) else None).to_dict()


@dataclass(frozen=True)
class SchemaUpgrade:
    """What :meth:`JobStore.upgrade` did: the service tables' change
    (:class:`service.migrations.SchemaChange`) and Optuna's schema revision before (``None``:
    no Optuna tables yet) and after."""

    service: SchemaChange
    optuna_before: str | None
    optuna_after: str

    def describe(self) -> list[str]:
        """One line per schema, for people."""
        if self.optuna_before == self.optuna_after:
            optuna = f"already at {self.optuna_after}"
        else:
            optuna = f"{self.optuna_before or 'empty'} -> {self.optuna_after}"
        return [f"service tables: {self.service.describe()}", f"Optuna tables: {optuna}"]


def create_engine_for(url: str) -> Engine:
    """Engine with the pool and connection settings the store relies on.

    SQLite: WAL (readers never block the writer), a busy timeout instead of immediate
    "database is locked", and SQLAlchemy-controlled ``BEGIN`` so that write transactions can
    take the write lock up front (``BEGIN IMMEDIATE``) and cannot fail half-way on a stale
    snapshot. PostgreSQL: a bounded pool, pre-ping to survive server restarts (SQLite has no
    server to lose, so no pre-ping there).
    """
    sa_url = sa.engine.make_url(url)
    if sa_url.get_backend_name() == "sqlite":
        if sa_url.database in (None, "", ":memory:"):
            raise ValueError("the job store needs a SQLite file (sqlite:///path.db), not memory")
        engine = sa.create_engine(
            sa_url,
            # no pre-ping: a file connection has no server to lose, and a ping per checkout
            # is a round trip on every API request
            pool_size=5,
            max_overflow=10,
            connect_args={"timeout": 30, "check_same_thread": False},
        )

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (see below)
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Connection) -> None:
            if conn.get_execution_options().get("relaxtune_write"):
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.exec_driver_sql("BEGIN")

        return engine
    return sa.create_engine(
        sa_url,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=10,
        pool_recycle=1800,
    )


class JobStore:
    """Jobs and API tokens in one SQL database (see the module docstring for the contract).

    ``url`` is a SQLAlchemy URL (``sqlite:///relaxtune.db``, ``postgresql+psycopg://…``);
    a malformed one raises :class:`ValueError`.

    Methods are thread-safe (each uses its own pooled connection) and may be called from
    several processes on the same database.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self.engine = create_engine_for(url)
        except sa.exc.ArgumentError as exc:  # malformed URL or unknown dialect/driver
            raise ValueError(f"invalid database URL: {exc}") from exc
        self.dialect = self.engine.dialect.name
        self._optuna_storage: Any = None

    def __repr__(self) -> str:
        return f"JobStore({self.engine.url.render_as_string(hide_password=True)!r})"

    def close(self) -> None:
        """Release pooled connections."""
        if self._optuna_storage is not None:
            self._optuna_storage.engine.dispose()
        self.engine.dispose()

    # --- plumbing -------------------------------------------------------------------------

    @contextmanager
    def _read(self, operation: str) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StoreError(operation, exc) from exc

    @contextmanager
    def _write(self, operation: str) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                conn.execution_options(relaxtune_write=True)
                with conn.begin():
                    yield conn
        except IntegrityError as exc:
            raise Conflict(f"{operation}: conflicts with an existing row") from exc
        except SQLAlchemyError as exc:
            raise StoreError(operation, exc) from exc

    def ping(self) -> None:
        """Raise :class:`StoreError` unless the database answers."""
        with self._read("pinging the database") as conn:
            conn.execute(sa.text("SELECT 1"))

    # --- schema ---------------------------------------------------------------------------

    def upgrade(self) -> SchemaUpgrade:
        """Upgrade the service tables (Alembic, ``service/migrations``) and create or upgrade
        Optuna's (Optuna's own migrations); idempotent. Returns what changed.

        Processes opening the store at once upgrade one after the other (see
        :func:`service.migrations.schema_transaction`). A database whose service tables were
        made by ``create_all`` before migrations existed is stamped at the initial revision.
        """
        service = self._upgrade_service()
        before, after = self._upgrade_optuna()
        return SchemaUpgrade(service=service, optuna_before=before, optuna_after=after)

    def _upgrade_service(self) -> SchemaChange:
        # Imported here: Alembic is only needed when the schema is touched.
        from alembic.util import CommandError

        from service import migrations

        try:
            with migrations.schema_transaction(self.engine) as conn:
                change = migrations.upgrade(conn)
        except (SQLAlchemyError, CommandError) as exc:
            # CommandError: e.g. a revision this code does not know (a newer release's)
            raise StoreError("migrating the service tables", exc) from exc
        if change.changed:
            logger.info("service tables: %s", change.describe())
        return change

    def _upgrade_optuna(self) -> tuple[str | None, str]:
        # Imported here: optuna is heavy and only the schema commands and trial reads need it.
        from optuna.storages import RDBStorage

        try:
            before = self._optuna_revision()
            # Creating the storage creates Optuna's tables when missing; a database made by an
            # older Optuna fails the compatibility check, so skip it and migrate explicitly.
            storage = RDBStorage(self.url, skip_compatibility_check=True)
            try:
                if storage.get_current_version() != storage.get_head_version():
                    logger.info("upgrading the Optuna schema to %s", storage.get_head_version())
                    storage.upgrade()
                return before, storage.get_current_version()
            finally:
                storage.engine.dispose()
        except SQLAlchemyError as exc:
            raise StoreError("creating or upgrading Optuna's tables", exc) from exc

    def _optuna_revision(self) -> str | None:
        """Optuna's schema revision (its own ``alembic_version`` table); ``None`` if absent."""
        from alembic.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def optuna_storage(self) -> Any:
        """A cached ``optuna.storages.RDBStorage`` on this database (for reading studies).

        It neither creates nor migrates tables: that is :meth:`upgrade`'s job.
        """
        if self._optuna_storage is None:
            from optuna.storages import RDBStorage

            try:
                self._optuna_storage = RDBStorage(
                    self.url,
                    engine_kwargs={"pool_pre_ping": True},
                    skip_compatibility_check=True,
                    skip_table_creation=True,
                )
            except SQLAlchemyError as exc:
                raise StoreError("opening the Optuna storage", exc) from exc
        return self._optuna_storage

    # --- jobs -----------------------------------------------------------------------------

    def create_job(
        self,
        tenant: str,
        spec: dict[str, Any],
        name: str = "",
        *,
        max_active: int | None = None,
    ) -> Job:
        """Insert a ``queued`` job and return it.

        With ``max_active``, fail with :class:`~service.errors.LimitExceeded` instead when the
        tenant already has that many queued or running jobs; the count and the insert happen in
        one transaction serialised per tenant, so concurrent submissions cannot overshoot.
        """
        now = _now()
        job_id = secrets.token_hex(8)
        values = {
            "id": job_id,
            "tenant": tenant,
            "name": (name or "")[:200],
            "spec": json.dumps(spec, sort_keys=True),
            "status": "queued",
            "cancel_requested": False,
            "progress": json.dumps(_initial_progress(spec)),
            "best": None,
            "error": None,
            "created_at": now,
        }
        with self._write("creating a job") as conn:
            if max_active is not None:
                if self.dialect == "postgresql":
                    # Serialise submissions of one tenant (READ COMMITTED would let two
                    # concurrent transactions both see room for one more job).
                    conn.execute(
                        sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                        {"key": f"relaxtune-tenant:{tenant}"},
                    )
                active = self._count_active(conn, tenant)
                if active >= max_active:
                    raise LimitExceeded(
                        f"tenant {tenant!r} already has {active} queued or running jobs "
                        f"(limit {max_active}); wait for one to finish or cancel one"
                    )
            conn.execute(jobs_table.insert().values(**values))
            row = conn.execute(jobs_table.select().where(jobs_table.c.id == job_id)).one()
        return Job._from_row(row)

    def get_job(self, job_id: str, tenant: str | None = None) -> Job:
        """The job with this id; with ``tenant``, another tenant's job is :class:`NotFound`."""
        validate_job_id(job_id)
        query = jobs_table.select().where(jobs_table.c.id == job_id)
        if tenant is not None:
            query = query.where(jobs_table.c.tenant == tenant)
        with self._read("reading a job") as conn:
            row = conn.execute(query).first()
        if row is None:
            raise NotFound(f"job {job_id} not found")
        return Job._from_row(row)

    def list_jobs(
        self, tenant: str | None = None, *, status: str | None = None, limit: int = 1000
    ) -> list[Job]:
        """Jobs, newest first; only ``tenant``'s when given."""
        query = (
            jobs_table.select()
            .order_by(jobs_table.c.created_at.desc(), jobs_table.c.id.desc())
            .limit(limit)
        )
        if tenant is not None:
            query = query.where(jobs_table.c.tenant == tenant)
        if status is not None:
            query = query.where(jobs_table.c.status == status)
        with self._read("listing jobs") as conn:
            rows = conn.execute(query).all()
        return [Job._from_row(r) for r in rows]

    @staticmethod
    def _count_active(conn: Connection, tenant: str) -> int:
        query = (
            sa.select(sa.func.count())
            .select_from(jobs_table)
            .where(jobs_table.c.tenant == tenant, jobs_table.c.status.in_(ACTIVE_STATUSES))
        )
        return int(conn.execute(query).scalar_one())

    def count_active_jobs(self, tenant: str) -> int:
        """Number of the tenant's queued or running jobs."""
        with self._read("counting jobs") as conn:
            return self._count_active(conn, tenant)

    def claim_next(self, worker_id: str) -> Job | None:
        """Atomically move the oldest queued job to ``running`` for ``worker_id``.

        One statement does both: ``UPDATE … WHERE id = (oldest queued) AND status = 'queued'``.
        On PostgreSQL the subquery locks with ``FOR UPDATE SKIP LOCKED`` so concurrent claimers
        take different jobs instead of queueing on the same row; on SQLite the write
        transaction (``BEGIN IMMEDIATE``) serialises claimers. Returns ``None`` when the queue
        is empty.
        """
        candidate = (
            sa.select(jobs_table.c.id)
            .where(jobs_table.c.status == "queued", jobs_table.c.cancel_requested.is_(False))
            .order_by(jobs_table.c.created_at, jobs_table.c.id)
            .limit(1)
        )
        if self.dialect == "postgresql":
            candidate = candidate.with_for_update(skip_locked=True)
        update = (
            jobs_table.update()
            .where(jobs_table.c.id == candidate.scalar_subquery(), jobs_table.c.status == "queued")
            .values(**_running_values(worker_id))
            .returning(*jobs_table.c)
        )
        with self._write("claiming a job") as conn:
            row = conn.execute(update).first()
        return Job._from_row(row) if row is not None else None

    def claim(self, job_id: str, worker_id: str, *, allow_running: bool = False) -> Job:
        """Claim one given job (``relaxtune run --job`` resuming it).

        A ``queued`` or ``failed`` job can be claimed; a ``running`` one only with
        ``allow_running`` (its previous driver is known to be dead: the caller takes over).
        Raises :class:`Conflict` otherwise.
        """
        validate_job_id(job_id)
        allowed = ["queued", "failed"] + (["running"] if allow_running else [])
        update = (
            jobs_table.update()
            .where(
                jobs_table.c.id == job_id,
                jobs_table.c.status.in_(allowed),
                # a running job someone asked to cancel is stopping: taking it over would
                # clear the cancel and run it on
                sa.not_(
                    sa.and_(
                        jobs_table.c.status == "running", jobs_table.c.cancel_requested.is_(True)
                    )
                ),
            )
            .values(**_running_values(worker_id), cancel_requested=False)
            .returning(*jobs_table.c)
        )
        with self._write("claiming a job") as conn:
            row = conn.execute(update).first()
            if row is None:
                current = conn.execute(
                    sa.select(jobs_table.c.status, jobs_table.c.cancel_requested).where(
                        jobs_table.c.id == job_id
                    )
                ).first()
        if row is None:
            if current is None:
                raise NotFound(f"job {job_id} not found")
            if current.status == "running" and current.cancel_requested:
                raise Conflict(
                    f"job {job_id} has a pending cancel; it cannot be resumed "
                    "(it ends cancelled once its driver stops)"
                )
            raise Conflict(f"job {job_id} is {current.status}; it cannot be claimed")
        return Job._from_row(row)

    def _update_running(
        self, job_id: str, operation: str, worker_id: str | None = None, **values: Any
    ) -> None:
        validate_job_id(job_id)
        conditions = [jobs_table.c.id == job_id]
        if worker_id is not None:
            conditions += [jobs_table.c.status == "running", jobs_table.c.claimed_by == worker_id]
        with self._write(operation) as conn:
            result = conn.execute(jobs_table.update().where(*conditions).values(**values))
            if result.rowcount == 0 and worker_id is not None:
                exists = conn.execute(
                    sa.select(jobs_table.c.id).where(jobs_table.c.id == job_id)
                ).first()
                if exists is not None:
                    raise Conflict(f"job {job_id} is no longer running under {worker_id}")
        if result.rowcount == 0:
            raise NotFound(f"job {job_id} not found")

    def update_progress(
        self, job_id: str, progress: Progress | dict[str, Any], worker_id: str | None = None
    ) -> None:
        """Replace the job's progress summary (and count it as a heartbeat). With
        ``worker_id``, only while that worker holds the running job (else :class:`Conflict`).
        The summary is validated as a :class:`~service.progress.Progress` (a ``ValueError``
        when it is not one): every reader gets that one shape."""
        typed = progress if isinstance(progress, Progress) else Progress.model_validate(progress)
        self._update_running(
            job_id,
            "updating progress",
            worker_id,
            progress=json.dumps(typed.to_dict(), default=str),
            heartbeat_at=_now(),
        )

    def heartbeat(self, job_id: str, worker_id: str | None = None) -> None:
        """Record that the job's driver is alive. With ``worker_id``, only while that worker
        holds the running job (else :class:`Conflict`: the job was cancelled, requeued or
        taken over, and the driver should stop)."""
        self._update_running(job_id, "recording a heartbeat", worker_id, heartbeat_at=_now())

    def finish(
        self,
        job_id: str,
        status: str,
        best: dict[str, Any] | None = None,
        error: str | None = None,
        *,
        worker_id: str | None = None,
        from_statuses: tuple[str, ...] = ("running",),
    ) -> Job:
        """Move the job to a terminal status, recording the best trial or the error text.

        Terminal states are final: only a job in one of ``from_statuses`` (a ``running`` one
        by default) moves, and with ``worker_id`` only while that worker holds it. Anything
        else raises :class:`Conflict` and changes nothing, so a driver that lost its job
        (cancelled, taken over by another controller) cannot overwrite how it ended. The
        explicit re-export of a job (``relaxtune export``) passes ``("failed", "succeeded")``.
        """
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"finish() needs one of {TERMINAL_STATUSES}, not {status!r}")
        validate_job_id(job_id)
        now = _now()
        values: dict[str, Any] = {
            "status": status,
            "finished_at": now,
            "heartbeat_at": now,
            "error": error,
        }
        if best is not None:
            values["best"] = json.dumps(best, default=str)
        conditions = [jobs_table.c.id == job_id, jobs_table.c.status.in_(from_statuses)]
        if worker_id is not None:
            conditions.append(jobs_table.c.claimed_by == worker_id)
        with self._write("finishing a job") as conn:
            changed = conn.execute(jobs_table.update().where(*conditions).values(**values))
            current = None
            if changed.rowcount == 0:
                current = conn.execute(
                    sa.select(jobs_table.c.status, jobs_table.c.claimed_by).where(
                        jobs_table.c.id == job_id
                    )
                ).first()
        if changed.rowcount == 0:
            if current is None:
                raise NotFound(f"job {job_id} not found")
            if current.status in from_statuses:
                raise Conflict(
                    f"job {job_id} is now held by another driver ({current.claimed_by}); "
                    f"its end ({status}) was not recorded"
                )
            if current.status in TERMINAL_STATUSES:
                raise Conflict(
                    f"job {job_id} already ended {current.status}, which is final "
                    f"({status} not recorded)"
                )
            raise Conflict(f"job {job_id} is {current.status}; {status} not recorded")
        return self.get_job(job_id)

    def request_cancel(self, job_id: str, tenant: str | None = None) -> Job:
        """Ask for a job to stop.

        A queued job is cancelled at once (no driver holds it); a running one is flagged and its
        driver stops at the next check. Cancelling a finished job is a :class:`Conflict`.
        """
        self.get_job(job_id, tenant)  # NotFound for another tenant's job
        now = _now()
        with self._write("cancelling a job") as conn:
            queued = conn.execute(
                jobs_table.update()
                .where(jobs_table.c.id == job_id, jobs_table.c.status == "queued")
                .values(status="cancelled", cancel_requested=True, finished_at=now)
            ).rowcount
            running = 0
            if not queued:
                running = conn.execute(
                    jobs_table.update()
                    .where(jobs_table.c.id == job_id, jobs_table.c.status == "running")
                    .values(cancel_requested=True)
                ).rowcount
        if not queued and not running:
            raise Conflict(f"job {job_id} already {self.get_job(job_id).status}")
        return self.get_job(job_id)

    def request_report(
        self,
        job_id: str,
        seeds: int,
        tenant: str | None = None,
        *,
        max_active: int | None = None,
    ) -> Job:
        """Ask for a gain report on ``seeds`` seeds (``service/gain.py``): the job's spec gets
        ``report: {seeds: K}`` and the job goes back to the queue, where a controller runs
        the report (its search is done: only the report runs).

        Allowed for a ``succeeded`` job, a ``cancelled`` one whose report had started (it
        resumes) and a ``queued`` one (it only records the seeds). A ``running`` or ``failed``
        job is a :class:`Conflict`; ``max_active`` limits the tenant's queued or running jobs
        as in :meth:`create_job`.
        """
        from search_spaces import MAX_REPORT_SEEDS, MIN_REPORT_SEEDS

        if isinstance(seeds, bool) or not isinstance(seeds, int):
            raise ValueError(f"report seeds must be an integer, got {seeds!r}")
        if not MIN_REPORT_SEEDS <= seeds <= MAX_REPORT_SEEDS:
            # the stored spec must stay valid: the controller parses it again
            raise ValueError(
                f"report seeds must lie in [{MIN_REPORT_SEEDS}, {MAX_REPORT_SEEDS}], got {seeds}"
            )
        current = self.get_job(job_id, tenant)  # NotFound for another tenant's job
        reopen = current.status == "succeeded" or (
            current.status == "cancelled" and "report" in current.progress
        )
        if current.status != "queued" and not reopen:
            raise Conflict(_report_refusal(current))
        spec = {**current.spec, "report": {"seeds": seeds}}
        values: dict[str, Any] = {"spec": json.dumps(spec, sort_keys=True)}
        if reopen:
            values.update(
                status="queued",
                cancel_requested=False,
                claimed_by=None,
                started_at=None,
                finished_at=None,
                error=None,
            )
        with self._write("requesting a gain report") as conn:
            if reopen and max_active is not None:
                if self.dialect == "postgresql":
                    conn.execute(
                        sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                        {"key": f"relaxtune-tenant:{current.tenant}"},
                    )
                active = self._count_active(conn, current.tenant)
                if active >= max_active:
                    raise LimitExceeded(
                        f"tenant {current.tenant!r} already has {active} queued or running "
                        f"jobs (limit {max_active}); a report runs as the job again"
                    )
            changed = conn.execute(
                jobs_table.update()
                .where(jobs_table.c.id == job_id, jobs_table.c.status == current.status)
                .values(**values)
            ).rowcount
        if not changed:  # the job moved on meanwhile (claimed, finished): look again
            return self.request_report(job_id, seeds, tenant, max_active=max_active)
        return self.get_job(job_id)

    def is_cancel_requested(self, job_id: str) -> bool:
        """Whether someone asked the job to stop."""
        validate_job_id(job_id)
        with self._read("reading a cancel flag") as conn:
            value = conn.execute(
                sa.select(jobs_table.c.cancel_requested).where(jobs_table.c.id == job_id)
            ).scalar_one_or_none()
        if value is None:
            raise NotFound(f"job {job_id} not found")
        return bool(value)

    def requeue_running(
        self, worker_id: str | None = None, *, stale_after_s: float | None = None
    ) -> list[str]:
        """Put jobs left ``running`` by a dead driver back in the queue; return their ids.

        ``worker_id`` limits this to that worker's jobs (a controller restarting); with
        ``stale_after_s`` only jobs whose last heartbeat is older are touched (any worker's).
        A job whose cancellation had been requested is cancelled instead of requeued.
        """
        conditions = [jobs_table.c.status == "running"]
        if worker_id is not None:
            conditions.append(jobs_table.c.claimed_by == worker_id)
        if stale_after_s is not None:
            cutoff = _now() - timedelta(seconds=stale_after_s)
            conditions.append(
                sa.or_(jobs_table.c.heartbeat_at.is_(None), jobs_table.c.heartbeat_at < cutoff)
            )
        now = _now()
        with self._write("requeueing jobs") as conn:
            conn.execute(
                jobs_table.update()
                .where(*conditions, jobs_table.c.cancel_requested.is_(True))
                .values(status="cancelled", finished_at=now)
            )
            rows = conn.execute(
                jobs_table.update()
                .where(*conditions)
                .values(status="queued", claimed_by=None, started_at=None)
                .returning(jobs_table.c.id)
            ).all()
        ids = [r[0] for r in rows]
        if ids:
            logger.info("requeued %d job(s) left running: %s", len(ids), ", ".join(ids))
        return ids

    def requeue_job(self, job_id: str, worker_id: str) -> bool:
        """Put one job that ``worker_id`` holds ``running`` back in the queue (its driver
        process died or was stopped); a job whose cancel was requested is cancelled instead.
        Returns whether the job was requeued (``False``: it had moved on, or was cancelled)."""
        validate_job_id(job_id)
        conditions = [
            jobs_table.c.id == job_id,
            jobs_table.c.status == "running",
            jobs_table.c.claimed_by == worker_id,
        ]
        with self._write("requeueing a job") as conn:
            conn.execute(
                jobs_table.update()
                .where(*conditions, jobs_table.c.cancel_requested.is_(True))
                .values(status="cancelled", finished_at=_now())
            )
            changed = conn.execute(
                jobs_table.update()
                .where(*conditions)
                .values(status="queued", claimed_by=None, started_at=None)
            ).rowcount
        if changed:
            logger.info("requeued job %s (its driver stopped)", job_id)
        return bool(changed)

    def queued_jobs(self, limit: int = 10000) -> list[Job]:
        """Every queued job not being cancelled, oldest first (the scheduler's input)."""
        query = (
            jobs_table.select()
            .where(jobs_table.c.status == "queued", jobs_table.c.cancel_requested.is_(False))
            .order_by(jobs_table.c.created_at, jobs_table.c.id)
            .limit(limit)
        )
        with self._read("listing the queue") as conn:
            return [Job._from_row(r) for r in conn.execute(query).all()]

    # --- cluster state (what the scheduling controllers saw) ------------------------------

    def record_cluster(self, worker_id: str, state: dict[str, Any]) -> None:
        """Replace what controller ``worker_id`` last saw of its cluster and queue."""
        with self._write("recording the cluster state") as conn:
            conn.execute(sa.delete(cluster_table).where(cluster_table.c.worker_id == worker_id))
            conn.execute(
                cluster_table.insert().values(
                    worker_id=worker_id,
                    state=json.dumps(state, default=str, sort_keys=True),
                    updated_at=_now(),
                )
            )

    def cluster_states(self, max_age_s: float | None = None) -> dict[str, dict[str, Any]]:
        """Each scheduling controller's last recorded state, by worker id (with
        ``updated_at``); with ``max_age_s`` only those recorded since."""
        query = sa.select(cluster_table)
        if max_age_s is not None:
            query = query.where(cluster_table.c.updated_at >= _now() - timedelta(seconds=max_age_s))
        with self._read("reading the cluster state") as conn:
            rows = conn.execute(query).all()
        return {
            r.worker_id: {**json.loads(r.state), "updated_at": _iso(r.updated_at)} for r in rows
        }

    # --- tokens ---------------------------------------------------------------------------

    def create_token(self, name: str, tenant: str | None = None, admin: bool = False) -> str:
        """Create an API token and return its plaintext (the only time it is available).

        The tenant defaults to the token's name. Only the SHA-256 of the token is stored.
        """
        if not _TOKEN_NAME_PATTERN.fullmatch(name):
            raise ValueError("token name: 1-64 characters of letters, digits, '_', '.', '@', '-'")
        tenant = tenant if tenant is not None else name
        if not _TOKEN_NAME_PATTERN.fullmatch(tenant):
            raise ValueError("tenant: 1-64 characters of letters, digits, '_', '.', '@', '-'")
        token_id = secrets.token_hex(8)
        # The id travels in the token so that lookup is by a non-secret key and the secret part
        # is compared in constant time.
        token = f"{_TOKEN_PREFIX}_{token_id}_{secrets.token_urlsafe(32)}"
        try:
            with self._write("creating a token") as conn:
                conn.execute(
                    tokens_table.insert().values(
                        id=token_id,
                        name=name,
                        tenant=tenant,
                        token_hash=_hash_token(token),
                        admin=admin,
                        created_at=_now(),
                        revoked_at=None,
                    )
                )
        except Conflict as exc:
            raise Conflict(f"a token named {name!r} already exists") from exc
        return token

    def authenticate(self, token: str) -> Principal | None:
        """The principal of a valid, unrevoked token, else ``None``."""
        parts = token.split("_", 2) if isinstance(token, str) else []
        if (
            len(parts) != 3
            or parts[0] != _TOKEN_PREFIX
            or not _TOKEN_ID_PATTERN.fullmatch(parts[1])
        ):
            return None
        with self._read("authenticating") as conn:
            row = conn.execute(tokens_table.select().where(tokens_table.c.id == parts[1])).first()
        if row is None:
            return None
        m = row._mapping
        if not hmac.compare_digest(m["token_hash"], _hash_token(token)):
            return None
        if m["revoked_at"] is not None:
            return None
        return Principal(name=m["name"], tenant=m["tenant"], admin=bool(m["admin"]))

    def token_for_session(self, token_id: str) -> tuple[Principal, str] | None:
        """The principal and stored hash of the unrevoked token with this id, else ``None``
        (a browser session re-checks its token with it on every request)."""
        if not isinstance(token_id, str) or not _TOKEN_ID_PATTERN.fullmatch(token_id):
            return None
        with self._read("checking a session") as conn:
            row = conn.execute(tokens_table.select().where(tokens_table.c.id == token_id)).first()
        if row is None or row._mapping["revoked_at"] is not None:
            return None
        m = row._mapping
        principal = Principal(name=m["name"], tenant=m["tenant"], admin=bool(m["admin"]))
        return principal, str(m["token_hash"])

    def revoke_token(self, name: str) -> None:
        """Revoke the token with this name (:class:`NotFound` when there is none)."""
        with self._write("revoking a token") as conn:
            result = conn.execute(
                tokens_table.update()
                .where(tokens_table.c.name == name, tokens_table.c.revoked_at.is_(None))
                .values(revoked_at=_now())
            )
        if result.rowcount == 0:
            raise NotFound(f"no active token named {name!r}")

    def list_tokens(self) -> list[dict[str, Any]]:
        """Token metadata (never the hashes): name, tenant, admin, created, revoked."""
        with self._read("listing tokens") as conn:
            rows = conn.execute(tokens_table.select().order_by(tokens_table.c.created_at)).all()
        return [
            {
                "name": r.name,
                "tenant": r.tenant,
                "admin": bool(r.admin),
                "created_at": _utc(r.created_at),
                "revoked_at": _utc(r.revoked_at),
            }
            for r in rows
        ]
