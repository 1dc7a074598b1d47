"""A job's trials read with plain SQL on Optuna's tables, serialised once per study version.

``RDBStorage.get_all_trials`` builds ORM objects for every row of every trial table, parses each
parameter's distribution JSON per trial and loads every user attribute (including the large
per-epoch ``history``), which costs hundreds of milliseconds for a few hundred trials. Here a
few Core ``SELECT`` statements on the same tables (through the job store's engine) fetch only
what ``GET /v1/jobs/{id}/trials`` returns, and the serialised body is cached per study.

The cache key is a fingerprint read on every request:

- per trial state, the number of trials and their smallest and largest ``trial_id`` (a new
  trial or a state change moves it; Optuna never takes a trial out of a finished state);
- for the trials that are not finished (``RUNNING``, ``WAITING``: the only ones Optuna lets
  anyone modify), every row they own in the parameter, value, intermediate-value and
  user-attribute tables, hashed (attributes such as ``history`` are rewritten in place).

A finished job's fingerprint is one small ``GROUP BY`` on ``trials`` (indexed by study).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cache, lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from service._json import json_safe
from service.api._schemas import TrialsPublic
from service.errors import StoreError
from service.store import JobStore

__all__ = ["TrialsCache", "accepts_gzip", "etag_matches", "read_study_snapshot"]

_HISTORY_KEY = "history"


@cache
def _optuna() -> Any:
    """Optuna's table definitions, state enum and helpers (imported on first use)."""
    from types import SimpleNamespace

    from optuna.storages._rdb import models
    from optuna.trial import TrialState

    return SimpleNamespace(
        studies=models.StudyModel.__table__,
        trials=models.TrialModel.__table__,
        values=models.TrialValueModel.__table__,
        params=models.TrialParamModel.__table__,
        attrs=models.TrialUserAttributeModel.__table__,
        steps=models.TrialIntermediateValueModel.__table__,
        directions=models.StudyDirectionModel.__table__,
        value_from_stored=models.TrialValueModel.stored_repr_to_value,
        step_from_stored=models.TrialIntermediateValueModel.stored_repr_to_intermediate_value,
        live=(TrialState.RUNNING, TrialState.WAITING),
        # Optuna 5 stores naive UTC and hands out naive local time; older releases stored
        # naive local time. Follow whichever is installed, as get_trials() does.
        utc_columns=hasattr(models.TrialModel, "_datetime_start_utc"),
    )


@lru_cache(maxsize=4096)
def _distribution(distribution_json: str) -> Any:
    """A parameter's distribution, parsed once per distinct JSON text."""
    from optuna.distributions import json_to_distribution

    return json_to_distribution(distribution_json)


def _local(value: datetime | None, utc_columns: bool) -> datetime | None:
    if value is None or not utc_columns:
        return value
    return value.replace(tzinfo=timezone.utc).astimezone().replace(tzinfo=None)


def _study_id(conn: Connection, name: str) -> int | None:
    studies = _optuna().studies
    query = sa.select(studies.c.study_id).where(studies.c.study_name == name)
    return conn.execute(query).scalar_one_or_none()


@cache
def _fingerprint_query() -> Any:
    """The fingerprint statement (module docstring), built once; ``study_id`` is bound.

    One ``UNION ALL``, so one round trip however many tables it looks at.
    """
    o = _optuna()
    t = o.trials
    text, num, integer = sa.String(), sa.Float(), sa.Integer()
    study_id = sa.bindparam("study_id", type_=integer)

    def row(kind: str, trial_id: Any, ident: Any, number: Any, label: Any) -> Any:
        return sa.select(
            sa.literal(kind, text).label("kind"),
            sa.cast(trial_id, integer).label("trial_id"),
            sa.cast(ident, integer).label("ident"),
            sa.cast(number, num).label("number"),
            sa.cast(label, text).label("label"),
        )

    live = sa.select(t.c.trial_id).where(t.c.study_id == study_id, t.c.state.in_(o.live))
    parts = [
        row("s", sa.func.min(t.c.trial_id), sa.func.max(t.c.trial_id), sa.func.count(), t.c.state)
        .where(t.c.study_id == study_id)
        .group_by(t.c.state),
        row("t", t.c.trial_id, t.c.number, None, t.c.datetime_start).where(t.c.trial_id.in_(live)),
        row(
            "p",
            o.params.c.trial_id,
            o.params.c.param_id,
            o.params.c.param_value,
            o.params.c.param_name + o.params.c.distribution_json,
        ).where(o.params.c.trial_id.in_(live)),
        row(
            "v", o.values.c.trial_id, o.values.c.objective, o.values.c.value, o.values.c.value_type
        ).where(o.values.c.trial_id.in_(live)),
        row(
            "i",
            o.steps.c.trial_id,
            o.steps.c.step,
            o.steps.c.intermediate_value,
            o.steps.c.intermediate_value_type,
        ).where(o.steps.c.trial_id.in_(live)),
        row(
            "a",
            o.attrs.c.trial_id,
            o.attrs.c.trial_user_attribute_id,
            None,
            o.attrs.c.key + o.attrs.c.value_json,
        ).where(o.attrs.c.trial_id.in_(live)),
    ]
    return sa.union_all(*parts)


def _fingerprint(conn: Connection, study_id: int) -> str:
    """Changes whenever anything the trials endpoint returns changes (module docstring)."""
    rows = conn.execute(_fingerprint_query(), {"study_id": study_id}).all()
    ordered = sorted((tuple(r) for r in rows), key=repr)
    digest = hashlib.blake2b(repr((study_id, ordered)).encode(), digest_size=16)
    return digest.hexdigest()


@dataclass
class _StudyRows:
    """Everything the trials endpoint and the dashboard read of one study, per trial id."""

    trials: list[tuple[int, int, Any, datetime | None, datetime | None]]  # id, number, state,
    # start, complete (local time, as Optuna hands them out), in trial-number order
    values: dict[int, dict[int, float]]  # objective -> value
    params: dict[int, dict[str, Any]]  # external representation (categorical choices)
    distributions: dict[int, dict[str, Any]]
    attrs: dict[int, dict[str, Any]]
    steps: dict[int, dict[int, float]]  # intermediate values


def _read_study_rows(conn: Connection, study_id: int, with_history: bool) -> _StudyRows:
    """One Core ``SELECT`` per Optuna table, each limited to the study's trials."""
    o = _optuna()
    t = o.trials

    def rows(table: sa.Table, *columns: Any, order_by: Any = None) -> Any:
        query = (
            sa.select(*columns)
            .select_from(table.join(t, table.c.trial_id == t.c.trial_id))
            .where(t.c.study_id == study_id)
        )
        if table is o.attrs and not with_history:
            query = query.where(o.attrs.c.key != _HISTORY_KEY)
        return conn.execute(query if order_by is None else query.order_by(order_by))

    out = _StudyRows([], {}, {}, {}, {}, {})
    for trial_id, number, state, start, complete in conn.execute(
        sa.select(t.c.trial_id, t.c.number, t.c.state, t.c.datetime_start, t.c.datetime_complete)
        .where(t.c.study_id == study_id)
        .order_by(t.c.number, t.c.trial_id)
    ):
        start, complete = _local(start, o.utc_columns), _local(complete, o.utc_columns)
        out.trials.append((trial_id, number, state, start, complete))
    v = o.values.c
    for trial_id, objective, value, kind in rows(
        o.values, v.trial_id, v.objective, v.value, v.value_type
    ):
        out.values.setdefault(trial_id, {})[objective] = o.value_from_stored(value, kind)
    p = o.params.c
    for trial_id, name, internal, dist_json in rows(
        o.params, p.trial_id, p.param_name, p.param_value, p.distribution_json, order_by=p.param_id
    ):
        distribution = _distribution(dist_json)
        out.distributions.setdefault(trial_id, {})[name] = distribution
        # categorical values are stored as the index of the choice
        out.params.setdefault(trial_id, {})[name] = distribution.to_external_repr(internal)
    a = o.attrs.c
    for trial_id, key, value_json in rows(
        o.attrs, a.trial_id, a.key, a.value_json, order_by=a.trial_user_attribute_id
    ):
        out.attrs.setdefault(trial_id, {})[key] = json.loads(value_json)
    i = o.steps.c
    for trial_id, step, value, kind in rows(
        o.steps, i.trial_id, i.step, i.intermediate_value, i.intermediate_value_type
    ):
        out.steps.setdefault(trial_id, {})[step] = o.step_from_stored(value, kind)
    return out


def _trial_dicts(conn: Connection, study_id: int, with_history: bool) -> list[dict[str, Any]]:
    """The study's trials as ``TrialPublic`` fields, in trial-number order."""
    rows = _read_study_rows(conn, study_id, with_history)
    out = []
    for trial_id, number, state, start, complete in rows.trials:
        values = list(rows.values.get(trial_id, {}).values())
        steps = rows.steps.get(trial_id)
        out.append(
            {
                "number": number,
                "state": state.name,
                "value": json_safe(values[0]) if len(values) == 1 else None,
                "params": json_safe(rows.params.get(trial_id, {})),
                "user_attrs": json_safe(rows.attrs.get(trial_id, {})),
                "last_step": max(steps) if steps else None,
                "datetime_start": start,
                "datetime_complete": complete,
                "duration_s": (complete - start).total_seconds()
                if start is not None and complete is not None
                else None,
            }
        )
    return out


def _render(job_id: str, study: str, data: list[dict[str, Any]]) -> bytes:
    """The body FastAPI would send for this ``TrialsPublic`` (same validation, same JSON)."""
    model = TrialsPublic(job_id=job_id, study=study, data=data, count=len(data))  # type: ignore[arg-type]
    return json.dumps(
        model.model_dump(mode="json"),
        ensure_ascii=False,
        allow_nan=False,
        indent=None,
        separators=(",", ":"),
    ).encode("utf-8")


def _etag(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` or its gzip representation's
    (``"…-gzip"``): weak comparison, ``*`` matches."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*":
            return True
        if candidate.startswith("W/"):
            candidate = candidate[2:]
        if candidate in (etag, etag[:-1] + '-gzip"'):
            return True
    return False


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an ``Accept-Encoding`` header admits gzip: named with q > 0, or not named and
    ``*`` with q > 0 (``gzip;q=0`` refuses it; a malformed q counts as 0)."""
    weights: dict[str, float] = {}
    for item in (accept_encoding or "").split(","):
        coding, _, params = item.strip().partition(";")
        q = params.strip().removeprefix("q=").strip() if "q=" in params else "1"
        try:
            weights[coding.strip().lower()] = float(q)
        except ValueError:
            weights[coding.strip().lower()] = 0.0
    return weights.get("gzip", weights.get("*", 0.0)) > 0


def read_study_snapshot(store: JobStore, study: str) -> Any:
    """The whole study as a ``service.dashboard.StudySnapshot`` (every trial as a
    ``FrozenTrial``: parameters, values, intermediate values, user attributes), read with the
    same plain SQL; ``None`` when there is no such study yet. What the dashboard draws from,
    without ``RDBStorage.get_all_trials``'s ORM objects (several times slower)."""
    from optuna.study import StudyDirection
    from optuna.trial import FrozenTrial

    from service.dashboard import StudySnapshot

    o = _optuna()
    d = o.directions.c
    try:
        with store.engine.connect() as conn:
            study_id = _study_id(conn, study)
            if study_id is None:
                return None
            directions = [
                StudyDirection(direction.value if hasattr(direction, "value") else direction)
                for (direction,) in conn.execute(
                    sa.select(d.direction).where(d.study_id == study_id).order_by(d.objective)
                )
            ]
            rows = _read_study_rows(conn, study_id, with_history=True)
    except SQLAlchemyError as exc:
        raise StoreError("reading the job's Optuna study", exc) from exc
    frozen = []
    for trial_id, number, state, start, complete in rows.trials:
        by_objective = rows.values.get(trial_id, {})
        frozen.append(
            FrozenTrial(
                number=number,
                state=state,
                value=None,
                values=[by_objective[k] for k in sorted(by_objective)] or None,
                datetime_start=start,
                datetime_complete=complete,
                params=rows.params.get(trial_id, {}),
                distributions=rows.distributions.get(trial_id, {}),
                user_attrs=rows.attrs.get(trial_id, {}),
                system_attrs={},
                intermediate_values=rows.steps.get(trial_id, {}),
                trial_id=trial_id,
            )
        )
    return StudySnapshot(directions=directions, trials=frozen)


class TrialsCache:
    """Serialised trials responses per study (and ``history`` flag), least recently used out.

    Thread-safe; two requests that miss at the same time both read, and the later one wins.
    """

    def __init__(self, max_entries: int = 64) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[Any, ...], tuple[str, bytes, str]] = OrderedDict()
        self._gzipped: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._gzipped.clear()

    def get(
        self, store: JobStore, job_id: str, study: str, with_history: bool
    ) -> tuple[bytes, str]:
        """``(body, etag)`` of the job's trials, from the cache while the study is unchanged."""
        try:
            with store.engine.connect() as conn:
                # one read transaction: on SQLite (WAL) the fingerprint and the rows it
                # describes come from the same snapshot
                study_id = _study_id(conn, study)
                if study_id is None:
                    body = _render(job_id, study, [])
                    return body, _etag(body)
                fingerprint = _fingerprint(conn, study_id)
                key = (store.url, study_id, study, with_history)
                with self._lock:
                    entry = self._entries.get(key)
                    if entry is not None and entry[0] == fingerprint:
                        self._entries.move_to_end(key)
                        self.hits += 1
                        return entry[1], entry[2]
                data = _trial_dicts(conn, study_id, with_history)
        except SQLAlchemyError as exc:  # Optuna's tables missing (`db upgrade` not run), …
            raise StoreError("reading the job's Optuna study", exc) from exc
        body = _render(job_id, study, data)
        etag = _etag(body)
        if self.max_entries > 0:
            with self._lock:
                self.misses += 1
                self._entries[key] = (fingerprint, body, etag)
                self._entries.move_to_end(key)
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
        return body, etag

    def gzipped(self, body: bytes, etag: str) -> bytes:
        """``body`` gzip-compressed, compressed once per ETag (the cached bodies repeat)."""
        with self._lock:
            compressed = self._gzipped.get(etag)
            if compressed is not None:
                self._gzipped.move_to_end(etag)
                return compressed
        compressed = gzip.compress(body, compresslevel=6, mtime=0)
        with self._lock:
            self._gzipped[etag] = compressed
            while len(self._gzipped) > max(self.max_entries, 1):
                self._gzipped.popitem(last=False)
        return compressed
