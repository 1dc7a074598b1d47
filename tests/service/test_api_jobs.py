"""The HTTP API in-process on a throwaway SQLite database: auth, tenancy, submission, limits,
cancellation and trials."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from service.api import create_app
from service.settings import Settings
from service.store import JobStore

SPEC_YAML = """\
name: tiny
task: rotated_mnist
model: {group: C4}
search_space: relax
budget: {trials: 2, epochs: 1}
objective: {metric: val_accuracy, mode: max}
"""
SPEC = {
    "name": "tiny",
    "task": "rotated_mnist",
    "model": {"group": "C4"},
    "search_space": "relax",
    "budget": {"trials": 2, "epochs": 1},
    "objective": {"metric": "val_accuracy", "mode": "max"},
}
JOB_ROUTES = ["", "/trials", "/dashboard", "/best", "/best/checkpoint"]


@pytest.fixture
def settings(store: JobStore, tmp_path: Path) -> Settings:
    return Settings(
        db=store.url,
        artifacts=tmp_path / "artifacts",
        max_trials=10,
        max_epochs=5,
        max_concurrent_jobs=3,
        max_body_bytes=4096,
    )


@pytest.fixture
def client(settings: Settings, store: JobStore) -> Iterator[TestClient]:
    with TestClient(create_app(settings, store)) as c:
        yield c


@pytest.fixture
def tokens(store: JobStore) -> dict[str, dict[str, str]]:
    """Authorization headers of tenants A and B and of an admin."""
    return {
        name: {"Authorization": f"Bearer {store.create_token(name, admin=name == 'root')}"}
        for name in ("alice", "bob", "root")
    }


def submit(client: TestClient, headers: dict[str, str], body: Any = SPEC_YAML, **kw: Any) -> Any:
    if isinstance(body, dict):
        return client.post("/v1/jobs", json=body, headers=headers, **kw)
    return client.post(
        "/v1/jobs",
        content=body,
        headers={**headers, "Content-Type": kw.pop("content_type", "application/yaml")},
        **kw,
    )


def job_count(store: JobStore) -> int:
    with store.engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM relaxtune_jobs")).scalar_one()


# --- auth ----------------------------------------------------------------------------------


def test_healthz_needs_no_token(client: TestClient) -> None:
    body = client.get("/healthz").json()
    assert {k: body[k] for k in ("status", "db")} == {"status": "ok", "db": "ok"}
    assert body["dashboards"] in ("warm", "warming")


def test_blocking_work_is_capped_at_api_threads(settings: Settings, store: JobStore) -> None:
    from anyio import to_thread

    def tokens() -> float:  # called on the app's event loop
        return to_thread.current_default_thread_limiter().total_tokens

    for threads in (3, 7):
        app = create_app(settings.model_copy(update={"api_threads": threads}), store)
        with TestClient(app) as c:
            assert c.portal.call(tokens) == threads
            assert c.get("/healthz").status_code == 200


def test_an_accepted_job_calls_on_job_created(
    settings: Settings, store: JobStore, tokens: dict[str, dict[str, str]]
) -> None:
    calls: list[int] = []
    app = create_app(settings, store, on_job_created=lambda: calls.append(1))
    with TestClient(app) as c:
        assert submit(c, tokens["alice"], "name: [unclosed").status_code == 422
        assert calls == []  # refused: nobody to wake
        assert submit(c, tokens["alice"]).status_code == 201
        assert calls == [1]


def test_healthz_reports_the_dashboard_warm_up_finishing(client: TestClient) -> None:
    deadline = time.monotonic() + 60
    while client.get("/healthz").json()["dashboards"] != "warm":
        assert time.monotonic() < deadline, "the dashboard warm-up did not finish in 60 s"
        time.sleep(0.1)


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/jobs"), ("POST", "/v1/jobs"), ("GET", "/v1/dashboard")]
    + [("GET", "/v1/jobs/0123456789abcdef" + r) for r in JOB_ROUTES]
    + [("DELETE", "/v1/jobs/0123456789abcdef")],
)
def test_every_v1_route_needs_a_token(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    bad = client.request(method, path, headers={"Authorization": "Bearer rt_nope_nope"})
    assert bad.status_code == 401


def test_revoked_token_is_refused(client: TestClient, store: JobStore) -> None:
    token = store.create_token("carol")
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/v1/jobs", headers=headers).status_code == 200
    store.revoke_token("carol")
    assert client.get("/v1/jobs", headers=headers).status_code == 401


def test_static_admin_token(store: JobStore, settings: Settings, tokens: Any) -> None:
    configured = Settings(
        **{**settings.model_dump(), "admin_token": "s3cret-admin-token-for-tests"}
    )
    job = submit(TestClient(create_app(configured, store)), tokens["alice"]).json()
    with TestClient(create_app(configured, store)) as c:
        headers = {"Authorization": "Bearer s3cret-admin-token-for-tests"}
        assert c.get(f"/v1/jobs/{job['id']}", headers=headers).status_code == 200
        assert c.get("/v1/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401


# --- submission ----------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["application/yaml", "text/plain", "application/json"])
def test_submit_yaml_or_json(
    client: TestClient, tokens: Any, store: JobStore, content_type: str
) -> None:
    body = json.dumps(SPEC) if content_type == "application/json" else SPEC_YAML
    response = submit(client, tokens["alice"], body, content_type=content_type)
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["status"] == "queued" and job["tenant"] == "alice" and job["name"] == "tiny"
    assert job["spec"]["budget"] == {"trials": 2, "epochs": 1, "max_concurrent": 1}
    assert job["progress"]["total"] == 2
    assert job["links"]["dashboard"] == f"/v1/jobs/{job['id']}/dashboard"
    assert store.get_job(job["id"]).spec == job["spec"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (SPEC_YAML.replace("trials: 2", "trials: 0"), "budget.trials"),
        (SPEC_YAML.replace("task: rotated_mnist", "task: imagenet"), "task"),
        (SPEC_YAML.replace("name: tiny\n", ""), "name"),
        ("name: [unclosed", "spec"),
        ("- just\n- a list\n", "spec"),
    ],
)
def test_malformed_spec_names_the_field_and_writes_nothing(
    client: TestClient, tokens: Any, store: JobStore, body: str, field: str
) -> None:
    response = submit(client, tokens["alice"], body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail["field"] == field and detail["message"]
    assert job_count(store) == 0


def test_invalid_json_body_is_422(client: TestClient, tokens: Any, store: JobStore) -> None:
    response = submit(client, tokens["alice"], "{not json", content_type="application/json")
    assert response.status_code == 422
    assert response.json()["detail"]["field"] == "spec"
    assert job_count(store) == 0


def test_non_utf8_body_is_refused(client: TestClient, tokens: Any, store: JobStore) -> None:
    response = submit(client, tokens["alice"], b"name: \xff\xfe")
    assert response.status_code == 400
    assert "UTF-8" in response.json()["detail"]["message"]
    assert job_count(store) == 0


def test_unsupported_content_type_is_415(client: TestClient, tokens: Any) -> None:
    response = submit(client, tokens["alice"], SPEC_YAML, content_type="application/xml")
    assert response.status_code == 415


def test_oversized_body_is_413(client: TestClient, tokens: Any, store: JobStore) -> None:
    big = SPEC_YAML + "#" * 5000 + "\n"
    response = submit(client, tokens["alice"], big)
    assert response.status_code == 413
    assert "4096" in response.json()["detail"]
    assert job_count(store) == 0


def test_oversized_chunked_body_is_413(client: TestClient, tokens: Any, store: JobStore) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        yield SPEC_YAML.encode()
        for _ in range(10):
            yield b"#" * 1000 + b"\n"

    response = submit(client, tokens["alice"], chunks())
    assert response.status_code == 413
    assert job_count(store) == 0


# --- limits --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("replace", "field"),
    [(("trials: 2", "trials: 11"), "budget.trials"), (("epochs: 1", "epochs: 6"), "budget.epochs")],
)
def test_budget_limits(
    client: TestClient, tokens: Any, store: JobStore, replace: tuple[str, str], field: str
) -> None:
    response = submit(client, tokens["alice"], SPEC_YAML.replace(*replace))
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail["field"] == field and "at most" in detail["message"]
    assert job_count(store) == 0


def test_concurrent_job_limit_per_tenant(client: TestClient, tokens: Any) -> None:
    ids = [submit(client, tokens["alice"]).json()["id"] for _ in range(3)]
    refused = submit(client, tokens["alice"])
    assert refused.status_code == 429
    assert "limit 3" in refused.json()["detail"]
    assert submit(client, tokens["bob"]).status_code == 201  # another tenant is unaffected
    assert client.delete(f"/v1/jobs/{ids[0]}", headers=tokens["alice"]).status_code == 202
    assert submit(client, tokens["alice"]).status_code == 201


# --- tenancy -------------------------------------------------------------------------------


@pytest.mark.parametrize("route", JOB_ROUTES)
def test_other_tenants_job_is_404_on_every_route(
    client: TestClient, tokens: Any, route: str
) -> None:
    job_id = submit(client, tokens["alice"]).json()["id"]
    response = client.get(f"/v1/jobs/{job_id}{route}", headers=tokens["bob"])
    assert response.status_code == 404
    missing = client.get(f"/v1/jobs/0123456789abcdef{route}", headers=tokens["bob"])
    assert missing.status_code == 404
    assert response.json() == {"detail": f"job {job_id} not found"} or route == ""


def test_other_tenant_cannot_cancel(client: TestClient, tokens: Any, store: JobStore) -> None:
    job_id = submit(client, tokens["alice"]).json()["id"]
    assert client.delete(f"/v1/jobs/{job_id}", headers=tokens["bob"]).status_code == 404
    assert store.get_job(job_id).status == "queued"


def test_lists_are_per_tenant_and_admin_sees_all(client: TestClient, tokens: Any) -> None:
    a = submit(client, tokens["alice"]).json()["id"]
    b = submit(client, tokens["bob"]).json()["id"]
    assert [j["id"] for j in client.get("/v1/jobs", headers=tokens["alice"]).json()["data"]] == [a]
    assert [j["id"] for j in client.get("/v1/jobs", headers=tokens["bob"]).json()["data"]] == [b]
    everything = client.get("/v1/jobs", headers=tokens["root"]).json()
    assert {j["id"] for j in everything["data"]} == {a, b} and everything["count"] == 2
    assert client.get(f"/v1/jobs/{a}", headers=tokens["root"]).status_code == 200
    assert client.get(f"/v1/jobs/{b}/trials", headers=tokens["root"]).status_code == 200


@pytest.mark.parametrize("bad", ["..%2F..%2Fetc", "ABCDEF0123456789", "1", "0123456789abcdeg"])
def test_malformed_job_ids_are_404(client: TestClient, tokens: Any, bad: str) -> None:
    assert client.get(f"/v1/jobs/{bad}", headers=tokens["root"]).status_code == 404


# --- status, cancel, trials ----------------------------------------------------------------


def test_job_status_shows_progress_and_error(
    client: TestClient, tokens: Any, store: JobStore
) -> None:
    job_id = submit(client, tokens["alice"]).json()["id"]
    store.claim_next("w")
    store.update_progress(
        job_id,
        {"complete": 1, "pruned": 0, "failed": 0, "running": 1, "total": 2, "best_value": 0.9},
    )
    job = client.get(f"/v1/jobs/{job_id}", headers=tokens["alice"]).json()
    assert job["status"] == "running" and job["progress"]["best_value"] == 0.9
    assert job["started_at"] and job["heartbeat_at"] and "claimed_by" not in job
    store.finish(job_id, "failed", error="RuntimeError: out of memory")
    job = client.get(f"/v1/jobs/{job_id}", headers=tokens["alice"]).json()
    assert job["status"] == "failed" and job["error"] == "RuntimeError: out of memory"
    assert job["finished_at"]


def test_status_filter(client: TestClient, tokens: Any, store: JobStore) -> None:
    submit(client, tokens["alice"])
    store.claim_next("w")
    queued = submit(client, tokens["alice"]).json()["id"]
    listed = client.get("/v1/jobs?status=queued", headers=tokens["alice"]).json()["data"]
    assert [j["id"] for j in listed] == [queued]
    assert client.get("/v1/jobs?status=bogus", headers=tokens["alice"]).status_code == 422


def test_cancel(client: TestClient, tokens: Any, store: JobStore) -> None:
    queued = submit(client, tokens["alice"]).json()["id"]
    response = client.delete(f"/v1/jobs/{queued}", headers=tokens["alice"])
    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    running = submit(client, tokens["alice"]).json()["id"]
    store.claim_next("w")
    response = client.delete(f"/v1/jobs/{running}", headers=tokens["alice"])
    assert response.status_code == 202
    assert response.json()["status"] == "running" and response.json()["cancel_requested"]
    assert store.is_cancel_requested(running)
    again = client.delete(f"/v1/jobs/{queued}", headers=tokens["alice"])
    assert again.status_code == 409 and "cancelled" in again.json()["detail"]


def test_trials_empty_before_the_study_exists(client: TestClient, tokens: Any) -> None:
    job_id = submit(client, tokens["alice"]).json()["id"]
    body = client.get(f"/v1/jobs/{job_id}/trials", headers=tokens["alice"]).json()
    assert body == {"job_id": job_id, "study": f"job-{job_id}", "data": [], "count": 0}


def test_trials_from_the_optuna_study(client: TestClient, tokens: Any, store: JobStore) -> None:
    job_id = submit(client, tokens["alice"]).json()["id"]
    study = optuna.create_study(
        study_name=f"job-{job_id}", storage=store.optuna_storage(), direction="maximize"
    )
    dist = {"optim.lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)}
    history = [{"epoch": 1, "val_projected": 0.8}]
    study.add_trial(
        optuna.trial.create_trial(
            params={"optim.lr": 0.01},
            distributions=dist,
            value=0.91,
            intermediate_values={1: 0.91},
            user_attrs={
                "val_relaxed": 0.93,
                "equivariance_error_projected": 1e-7,
                "equivariance_error_relaxed": float("nan"),
                "history": history,
            },
        )
    )
    study.add_trial(
        optuna.trial.create_trial(
            params={"optim.lr": 0.05},
            distributions=dist,
            state=optuna.trial.TrialState.PRUNED,
            intermediate_values={1: 0.2},
        )
    )
    body = client.get(f"/v1/jobs/{job_id}/trials", headers=tokens["alice"]).json()
    assert body["count"] == 2
    first, second = body["data"]
    assert first["number"] == 0 and first["state"] == "COMPLETE" and first["value"] == 0.91
    assert first["params"] == {"optim.lr": 0.01}
    assert first["user_attrs"]["val_relaxed"] == 0.93
    assert first["user_attrs"]["equivariance_error_projected"] == 1e-7
    assert first["user_attrs"]["equivariance_error_relaxed"] is None  # NaN is not JSON
    assert "history" not in first["user_attrs"]
    assert second["state"] == "PRUNED" and second["value"] is None and second["last_step"] == 1
    with_history = client.get(f"/v1/jobs/{job_id}/trials?history=true", headers=tokens["alice"])
    assert with_history.json()["data"][0]["user_attrs"]["history"] == history


# --- robustness ----------------------------------------------------------------------------


def test_database_errors_are_503_without_details(
    tmp_path: Path, tokens: Any, settings: Settings
) -> None:
    broken = JobStore(f"sqlite:///{tmp_path / 'empty.db'}")  # never upgraded: no tables
    with TestClient(create_app(settings, broken), raise_server_exceptions=False) as c:
        response = c.get("/v1/jobs", headers={"Authorization": "Bearer rt_0123456789abcdef_x"})
    assert response.status_code == 503
    assert "Traceback" not in response.text and "sqlite" not in response.text.lower()
    broken.close()


def test_unexpected_errors_are_500_without_traceback(
    client: TestClient, tokens: Any, store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_: Any, **__: Any) -> Any:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(store, "list_jobs", boom)
    client = TestClient(client.app, raise_server_exceptions=False)
    response = client.get("/v1/jobs", headers=tokens["alice"])
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error"}


def test_openapi_lists_the_design_endpoints(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/v1/jobs",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/trials",
        "/v1/jobs/{job_id}/dashboard",
        "/v1/jobs/{job_id}/best",
        "/v1/jobs/{job_id}/best/checkpoint",
        "/healthz",
    ):
        assert path in paths
    assert set(paths["/v1/jobs"]["post"]["requestBody"]["content"]) >= {
        "application/json",
        "application/yaml",
    }


def test_method_not_allowed_lists_every_method_of_the_path(client: TestClient) -> None:
    response = client.put("/v1/jobs")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"
    response = client.patch("/v1/jobs/0123456789abcdef")
    assert response.headers["allow"] == "DELETE, GET"
