"""``GET /v1/jobs/{id}/trials`` read with plain SQL: same data as Optuna's ``get_trials()``,
a cache that follows every change of the study, and ETag / ``If-None-Match`` (304).

Runs on SQLite and, when the server of ``RELAXTUNE_TEST_PG_URL`` answers, on PostgreSQL
(the store contract suite's fixtures).
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import optuna
import pytest
from fastapi.testclient import TestClient
from test_store_contract import (  # noqa: F401  (fixtures)
    pg_database_url,
    sqlite_template,
    store_url,
)

from service._json import json_safe as finite
from service.api import create_app
from service.settings import Settings
from service.store import JobStore

SPEC = {
    "name": "fast",
    "task": "rotated_mnist",
    "budget": {"trials": 10, "epochs": 3},
}
TrialState = optuna.trial.TrialState
D = optuna.distributions
DISTRIBUTIONS = {
    "optim.lr": D.FloatDistribution(1e-4, 1e-1, log=True),
    "model.width": D.IntDistribution(4, 32, step=4),
    "relax.schedule": D.CategoricalDistribution(["linear", "cosine", None, 3]),
    "relax.flag": D.CategoricalDistribution([True, False]),
}

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def store(store_url: str) -> Iterator[JobStore]:  # noqa: F811
    s = JobStore(store_url)
    yield s
    s.close()


@pytest.fixture
def client(store: JobStore, tmp_path: Any) -> Iterator[TestClient]:
    settings = Settings(db=store.url, artifacts=tmp_path / "artifacts")
    with TestClient(create_app(settings, store)) as c:
        yield c


@pytest.fixture
def job_id(store: JobStore) -> str:
    return store.create_job("someone", SPEC, "fast").id


def _tenant_headers(store: JobStore, job_id: str) -> dict[str, str]:
    import secrets

    token = store.create_token("t" + secrets.token_hex(4), tenant=store.get_job(job_id).tenant)
    return {"Authorization": f"Bearer {token}"}


def _study(store: JobStore, job_id: str) -> optuna.Study:
    return optuna.create_study(
        study_name=f"job-{job_id}", storage=store.optuna_storage(), direction="maximize"
    )


def _fill(study: optuna.Study) -> None:
    """Trials in every state, with every kind of parameter and awkward values."""
    history = [{"epoch": 1, "val_projected": 0.5}, {"epoch": 2, "val_projected": 0.7}]
    params = [
        {"optim.lr": 0.003, "model.width": 8, "relax.schedule": "cosine", "relax.flag": True},
        {"optim.lr": 0.05, "model.width": 32, "relax.schedule": None, "relax.flag": False},
        {"optim.lr": 1e-4, "model.width": 4, "relax.schedule": 3, "relax.flag": True},
    ]
    study.add_trial(
        optuna.trial.create_trial(
            params=params[0],
            distributions=DISTRIBUTIONS,
            value=0.91,
            intermediate_values={0: 0.5, 1: 0.7, 2: float("nan")},
            user_attrs={
                "val_relaxed": 0.93,
                "equivariance_error_relaxed": float("inf"),
                "nested": {"a": [1, float("nan"), "x"]},
                "history": history,
            },
        )
    )
    study.add_trial(
        optuna.trial.create_trial(
            params=params[1],
            distributions=DISTRIBUTIONS,
            state=TrialState.PRUNED,
            intermediate_values={0: 0.2},
            user_attrs={"stop_reason": "pruned by the scheduler after epoch 1", "history": []},
        )
    )
    study.add_trial(
        optuna.trial.create_trial(
            params=params[2],
            distributions=DISTRIBUTIONS,
            state=TrialState.FAIL,
            user_attrs={"stop_reason": "diverged: loss"},
        )
    )
    study.add_trial(
        optuna.trial.create_trial(
            params={"optim.lr": 0.01},
            distributions={"optim.lr": DISTRIBUTIONS["optim.lr"]},
            value=float("-inf"),
        )
    )
    running = study.ask()
    running.suggest_float("optim.lr", 1e-4, 1e-1, log=True)
    running.suggest_categorical("relax.schedule", ["linear", "cosine", None, 3])
    running.report(0.4, 0)
    running.set_user_attr("history", history[:1])
    running.set_user_attr("checkpoint", "/tmp/x")
    study.enqueue_trial({"optim.lr": 0.02})  # WAITING


def _expected(study: optuna.Study, job_id: str, with_history: bool) -> dict[str, Any]:
    """What the endpoint returned when it read trials through Optuna's storage."""
    data = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        attrs = dict(t.user_attrs)
        if not with_history:
            attrs.pop("history", None)
        single = t.values is not None and len(t.values) == 1
        data.append(
            {
                "number": t.number,
                "state": t.state.name,
                "value": finite(t.value) if single else None,
                "params": finite(dict(t.params)),
                "user_attrs": finite(attrs),
                "last_step": t.last_step,
                "datetime_start": _iso(t.datetime_start),
                "datetime_complete": _iso(t.datetime_complete),
                "duration_s": t.duration.total_seconds() if t.duration is not None else None,
            }
        )
    return {"job_id": job_id, "study": f"job-{job_id}", "data": data, "count": len(data)}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _get(client: TestClient, job_id: str, headers: dict[str, str], **params: Any) -> Any:
    response = client.get(f"/v1/jobs/{job_id}/trials", headers=headers, params=params)
    assert response.status_code == 200, response.text
    return response


def test_same_data_as_optunas_get_trials(client: TestClient, store: JobStore, job_id: str) -> None:
    headers = _tenant_headers(store, job_id)
    study = _study(store, job_id)
    _fill(study)
    states = {t.state for t in study.get_trials()}
    assert states == {
        TrialState.COMPLETE,
        TrialState.PRUNED,
        TrialState.FAIL,
        TrialState.RUNNING,
        TrialState.WAITING,
    }
    body = _get(client, job_id, headers).json()
    assert body == _expected(study, job_id, with_history=False)
    first = body["data"][0]
    assert first["params"] == {
        "optim.lr": 0.003,
        "model.width": 8,
        "relax.schedule": "cosine",
        "relax.flag": True,
    }
    assert isinstance(first["params"]["model.width"], int)
    assert body["data"][1]["params"]["relax.schedule"] is None
    assert body["data"][2]["params"]["relax.schedule"] == 3
    assert first["last_step"] == 2 and first["user_attrs"]["equivariance_error_relaxed"] is None
    assert body["data"][3]["value"] is None  # -inf is not JSON
    assert "history" not in first["user_attrs"]
    with_history = _get(client, job_id, headers, history="true").json()
    assert with_history == _expected(study, job_id, with_history=True)
    assert with_history["data"][0]["user_attrs"]["history"][1]["val_projected"] == 0.7


def test_cache_follows_every_change_of_the_study(
    client: TestClient, store: JobStore, job_id: str
) -> None:
    headers = _tenant_headers(store, job_id)
    cache = client.app.state.trials_cache  # type: ignore[attr-defined]
    study = _study(store, job_id)
    assert _get(client, job_id, headers).json()["count"] == 0

    trial = study.ask()
    trial.suggest_float("optim.lr", 1e-4, 1e-1, log=True)
    first = _get(client, job_id, headers)
    misses = cache.misses
    again = _get(client, job_id, headers)
    assert again.content == first.content and cache.misses == misses  # served from the cache

    def check(what: str) -> None:
        body = _get(client, job_id, headers).json()
        assert body == _expected(study, job_id, with_history=False), what
        with_history = _get(client, job_id, headers, history="true").json()
        assert with_history == _expected(study, job_id, with_history=True), what

    trial.report(0.3, 0)
    check("an intermediate value")
    trial.set_user_attr("history", [{"epoch": 0}])
    check("a new user attribute")
    trial.set_user_attr("history", [{"epoch": 1}])  # same length, rewritten in place
    check("a user attribute rewritten in place")
    trial.set_user_attr("val_relaxed", 0.5)
    check("another attribute")
    trial.set_user_attr("val_relaxed", 0.6)
    check("an attribute changed in place")
    study.tell(trial, 0.8)
    check("a state change (RUNNING to COMPLETE)")
    study.enqueue_trial({"optim.lr": 0.02})
    check("a trial added (WAITING)")
    waiting = study.ask()  # WAITING to RUNNING
    check("a state change (WAITING to RUNNING)")
    study.tell(waiting, state=TrialState.PRUNED)
    check("a state change (RUNNING to PRUNED)")
    study.add_trial(optuna.trial.create_trial(value=0.1, params={}, distributions={}))
    check("a finished trial added")
    assert _get(client, job_id, headers).json()["count"] == 3


def test_etag_and_304(client: TestClient, store: JobStore, job_id: str) -> None:
    headers = _tenant_headers(store, job_id)
    study = _study(store, job_id)
    _fill(study)
    response = _get(client, job_id, headers)
    etag = response.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')
    for value in (etag, f"W/{etag}", f'"nope", {etag}', "*"):
        not_modified = client.get(
            f"/v1/jobs/{job_id}/trials", headers={**headers, "If-None-Match": value}
        )
        assert not_modified.status_code == 304, value
        assert not_modified.content == b"" and not_modified.headers["etag"] == etag
    stale = client.get(f"/v1/jobs/{job_id}/trials", headers={**headers, "If-None-Match": '"x"'})
    assert stale.status_code == 200 and stale.content == response.content
    # history changes the body, so its ETag differs
    with_history = _get(client, job_id, headers, history="true")
    assert with_history.headers["etag"] != etag
    # a change of the study changes the ETag: the old one no longer gets a 304
    study.add_trial(optuna.trial.create_trial(value=0.2, params={}, distributions={}))
    changed = client.get(f"/v1/jobs/{job_id}/trials", headers={**headers, "If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    # another tenant still gets a 404, ETag or not
    other = client.get(f"/v1/jobs/{job_id}/trials", headers={**_other(store), "If-None-Match": "*"})
    assert other.status_code == 404


def test_study_snapshot_equals_optunas_trials(store: JobStore, job_id: str) -> None:
    from service.api._trials_sql import read_study_snapshot

    assert read_study_snapshot(store, f"job-{job_id}") is None  # no study yet
    study = _study(store, job_id)
    _fill(study)
    snapshot = read_study_snapshot(store, f"job-{job_id}")
    assert snapshot.directions == study.directions
    expected = study.get_trials(deepcopy=False)
    assert [t.number for t in snapshot.trials] == [t.number for t in expected]
    fields = ("number", "state", "datetime_start", "datetime_complete", "params", "distributions")
    for got, want in zip(snapshot.trials, expected, strict=True):
        for field in (*fields, "_trial_id"):
            assert getattr(got, field) == getattr(want, field), (want.number, field)
        # NaN-aware comparisons of the numbers
        assert repr(got.values) == repr(want.values), want.number
        assert repr(got.intermediate_values) == repr(want.intermediate_values), want.number
        assert repr(sorted(got.user_attrs.items())) == repr(sorted(want.user_attrs.items()))


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("deflate;q=1, gzip;q=0.5", True),
        ("*", True),
        ("*;q=0, gzip", True),
        ("gzip;q=0", False),
        ("gzip;q=0, *", False),
        ("identity", False),
        ("gzip;q=abc", False),
        ("", False),
        (None, False),
    ],
)
def test_accepts_gzip(header: str | None, expected: bool) -> None:
    from service.api._trials_sql import accepts_gzip

    assert accepts_gzip(header) is expected


def test_gzip_when_accepted_with_its_own_etag(
    client: TestClient, store: JobStore, job_id: str
) -> None:
    headers = _tenant_headers(store, job_id)
    _fill(_study(store, job_id))
    plain = _get(client, job_id, {**headers, "Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert len(plain.content) > 1024  # large enough to be compressed
    for refusal in ("identity", "gzip;q=0", "br"):
        again = _get(client, job_id, {**headers, "Accept-Encoding": refusal})
        assert "content-encoding" not in again.headers, refusal
    # read the raw bytes on the wire (the test client would decompress them)
    with client.stream(
        "GET", f"/v1/jobs/{job_id}/trials", headers={**headers, "Accept-Encoding": "gzip"}
    ) as response:
        raw = b"".join(response.iter_raw())
        assert response.status_code == 200
        assert response.headers["content-encoding"] == "gzip"
        assert response.headers["vary"] == "Accept-Encoding"
        zipped_etag = response.headers["etag"]
    assert len(raw) < len(plain.content) / 3
    assert gzip.decompress(raw) == plain.content
    assert zipped_etag != plain.headers["etag"]
    # either representation's ETag revalidates
    for etag in (plain.headers["etag"], zipped_etag):
        revalidated = client.get(
            f"/v1/jobs/{job_id}/trials",
            headers={**headers, "Accept-Encoding": "gzip", "If-None-Match": etag},
        )
        assert revalidated.status_code == 304, etag


def _other(store: JobStore) -> dict[str, str]:
    import secrets

    return {"Authorization": f"Bearer {store.create_token('o' + secrets.token_hex(4))}"}


def test_job_status_does_not_touch_optuna(
    client: TestClient, store: JobStore, job_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = _tenant_headers(store, job_id)

    def forbidden(*_: Any, **__: Any) -> Any:
        raise AssertionError("GET /v1/jobs/{id} opened Optuna's storage")

    monkeypatch.setattr(store, "optuna_storage", forbidden)
    response = client.get(f"/v1/jobs/{job_id}", headers=headers)
    assert response.status_code == 200 and response.json()["id"] == job_id
    # the trials endpoint does not need Optuna's storage object either
    assert _get(client, job_id, headers).json()["count"] == 0
