"""Tenant isolation over every ``/v1`` route, generated from the app's own route table (a new
route is covered, or this test fails until its expectations are written down), plus token
storage, constant-time comparison, revocation from the CLI and job id entropy."""

from __future__ import annotations

import collections
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from service import cli
from service.api import create_app
from service.settings import Settings
from service.store import JobStore

SPEC_YAML = """\
name: alice-secret-job
task: nbody
model: {hidden: 16, layers: 2}
search_space: relax
budget: {trials: 2, epochs: 2}
objective: {metric: val_mse, mode: min}
"""

#: ``/v1`` routes without a job id: each lists or creates the caller's own jobs only, except
#: ``GET /v1/cluster``, which counts other tenants' running jobs without naming them or their jobs.
COLLECTION_ROUTES = {
    ("GET", "/v1/jobs"),
    ("POST", "/v1/jobs"),
    ("GET", "/v1/dashboard"),
    ("GET", "/v1/dashboard/rows"),
    ("GET", "/v1/cluster"),
    # the jobs compared are named in the query (?job=…): another tenant's is a 404, below
    ("GET", "/v1/compare"),
    ("GET", "/v1/compare/dashboard"),
}


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, Any]]:
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    store.upgrade()
    settings = Settings(db=store.url, artifacts=tmp_path / "artifacts")
    app = create_app(settings, store)
    tokens = {name: store.create_token(name) for name in ("alice", "bob")}
    with TestClient(app) as client:
        response = client.post(
            "/v1/jobs",
            content=SPEC_YAML,
            headers={
                "Authorization": f"Bearer {tokens['alice']}",
                "Content-Type": "application/yaml",
            },
        )
        assert response.status_code == 201
        yield {
            "app": app,
            "client": client,
            "store": store,
            "tokens": tokens,
            "job": response.json()["id"],
            "db": store.url,
        }
    store.close()


def _walk(routes: Any, prefix: str = "") -> Iterator[tuple[str, APIRoute]]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield prefix + route.path, route
        # an included router (FastAPI >= 0.16x keeps them as wrappers), or a mount
        inner = getattr(route, "original_router", None) or getattr(route, "app", None)
        if inner is not None and hasattr(inner, "routes") and not isinstance(route, APIRoute):
            yield from _walk(inner.routes, prefix + getattr(route, "path", ""))


def v1_routes(app: Any) -> list[tuple[str, str]]:
    """Every (method, path) under /v1: from the route table and from the OpenAPI schema (the
    union, so neither a hidden route nor a new kind of router wrapper can slip through)."""
    routes = set()
    for path, route in _walk(app.routes):
        if path.startswith("/v1"):
            routes |= {(method, path) for method in route.methods - {"HEAD"}}
    for path, operations in app.openapi()["paths"].items():
        if path.startswith("/v1"):
            routes |= {(method.upper(), path) for method in operations}
    return sorted(routes)


def call(client: TestClient, method: str, path: str, token: str | None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if method == "POST":
        headers["Content-Type"] = "application/yaml"
        return client.request(method, path, headers=headers, content=SPEC_YAML)
    return client.request(method, path, headers=headers)


def test_every_v1_route_is_tenant_isolated_and_authenticated(env: dict[str, Any]) -> None:
    client, job, tokens = env["client"], env["job"], env["tokens"]
    routes = v1_routes(env["app"])
    assert len(routes) >= 8, routes
    assert {path for _, path in routes} >= {"/v1/jobs/{job_id}/best/checkpoint", "/v1/dashboard"}
    for method, template in routes:
        params = set(re.findall(r"{(\w+)}", template))
        path = template.replace("{job_id}", job)
        # no token, a malformed token, and a well-formed but unknown one: 401
        for token in (None, "nope", "rt_0123456789abcdef_" + "x" * 43):
            response = call(client, method, path, token)
            assert response.status_code == 401, (method, template, token, response.text)
            assert job not in response.text and "alice-secret-job" not in response.text
        if params:
            assert params == {"job_id"}, f"new path parameter in {template}: write its test"
            response = call(client, method, path, tokens["bob"])
            assert response.status_code == 404, (method, template, response.status_code)
            assert "alice-secret-job" not in response.text
            # and the 404 of an existing foreign job is the 404 of a missing one
            missing = call(client, method, template.replace("{job_id}", "0" * 16), tokens["bob"])
            assert missing.status_code == 404
            assert response.json()["detail"].replace(job, "?") == missing.json()["detail"].replace(
                "0" * 16, "?"
            ), template
        else:
            assert (method, template) in COLLECTION_ROUTES, (
                f"new collection route {method} {template}: say what another tenant may see"
            )
            response = call(client, method, path, tokens["bob"])
            assert response.status_code in (200, 201), (method, template, response.text)
            assert job not in response.text
            if method == "GET":  # (bob's own POST echoes the spec name he sent)
                assert "alice-secret-job" not in response.text
                assert "alice" not in response.text, (template, response.text)
    # comparing: another tenant's job among the compared ones is the 404 of a missing one
    for path in ("/v1/compare", "/v1/compare/dashboard"):
        response = call(client, "GET", f"{path}?job={job}&job={job}", tokens["bob"])
        missing = call(client, "GET", f"{path}?job={'0' * 16}&job={job}", tokens["bob"])
        assert response.status_code == missing.status_code == 404, path
        assert "alice-secret-job" not in response.text
        own = call(client, "GET", f"{path}?job={job}", tokens["alice"])
        assert own.status_code == 200  # (one job: nothing to compare it with, said plainly)
    # alice still sees her job untouched (bob's DELETE did not cancel it)
    own = client.get(f"/v1/jobs/{job}", headers={"Authorization": f"Bearer {tokens['alice']}"})
    assert own.status_code == 200 and own.json()["status"] == "queued"


def test_no_token_plaintext_anywhere_in_the_database(env: dict[str, Any]) -> None:
    engine = env["store"].engine
    secrets_ = [t.split("_", 2)[2] for t in env["tokens"].values()]
    dump = []
    with engine.connect() as conn:
        for table in sa.inspect(engine).get_table_names():
            for row in conn.execute(sa.text(f'SELECT * FROM "{table}"')):
                dump.append(" ".join(str(v) for v in row))
    text = "\n".join(dump)
    for token, secret in zip(env["tokens"].values(), secrets_, strict=True):
        assert token not in text and secret not in text
    hashes = re.findall(r"\b[0-9a-f]{64}\b", text)
    assert len(hashes) >= 2  # what is stored is a SHA-256 digest per token


def test_token_secrets_are_compared_in_constant_time(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import hmac

    import service.api._deps as deps
    import service.store as store_module

    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(store_module.hmac, "compare_digest", spy)
    store: JobStore = env["store"]
    alice = env["tokens"]["alice"]
    wrong = alice[:-4] + ("AAAA" if not alice.endswith("AAAA") else "BBBB")
    assert store.authenticate(wrong) is None
    assert calls and len(calls[-1][0]) == len(calls[-1][1]) == 64  # digests, not raw tokens
    assert store.authenticate(alice) is not None
    assert len(calls) == 2
    # the static admin token (settings) goes through hmac.compare_digest too
    calls.clear()
    monkeypatch.setattr(deps.hmac, "compare_digest", spy)
    settings = Settings(db=store.url, admin_token="s" * 32)
    with pytest.raises(Exception) as refused:
        deps._authenticate("s" * 31 + "t", store, settings)
    assert getattr(refused.value, "status_code", None) == 401
    assert calls


def test_revocation_from_the_cli_takes_effect_at_once(
    env: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    client, tokens = env["client"], env["tokens"]
    headers = {"Authorization": f"Bearer {tokens['bob']}"}
    assert client.get("/v1/jobs", headers=headers).status_code == 200
    assert cli.main(["token", "revoke", "bob", "--db", env["db"]]) == 0
    assert client.get("/v1/jobs", headers=headers).status_code == 401
    assert call(client, "POST", "/v1/jobs", tokens["bob"]).status_code == 401
    with pytest.raises(SystemExit) as again:  # revoking twice is a clear error, not a crash
        cli.main(["token", "revoke", "bob", "--db", env["db"]])
    assert again.value.code == 2
    assert "no active token named 'bob'" in capsys.readouterr().err
    # a new token under the same tenant works; the revoked one stays refused
    fresh = env["store"].create_token("bob2", tenant="bob")
    assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {fresh}"}).status_code == 200
    assert client.get("/v1/jobs", headers=headers).status_code == 401


def test_job_ids_are_random_not_sequential(tmp_path: Path) -> None:
    store = JobStore(f"sqlite:///{tmp_path / 'ids.db'}")
    store.upgrade()
    ids = [store.create_job("t", {"name": "x"}, "x").id for _ in range(400)]
    store.close()
    assert all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids)
    assert len(set(ids)) == len(ids)
    values = [int(i, 16) for i in ids]
    # not sequential: consecutive ids are not ordered, and their gaps are all over the place
    ascending = sum(b > a for a, b in zip(values, values[1:], strict=False))
    assert 0.35 < ascending / (len(values) - 1) < 0.65
    assert len({b - a for a, b in zip(values, values[1:], strict=False)}) == len(values) - 1
    # every hex digit position is uniform (chi-square, 15 degrees of freedom, p ~ 1e-6 bound)
    for position in range(16):
        counts = collections.Counter(i[position] for i in ids)
        expected = len(ids) / 16
        chi2 = sum((counts.get(d, 0) - expected) ** 2 / expected for d in "0123456789abcdef")
        assert chi2 < 55, (position, chi2)
    # the empirical entropy per digit is close to the 4 bits of a uniform one
    counts = collections.Counter("".join(ids))
    total = sum(counts.values())
    entropy = -sum(c / total * math.log2(c / total) for c in counts.values())
    assert entropy > 3.95
