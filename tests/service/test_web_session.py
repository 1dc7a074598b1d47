"""Browser sessions, CSRF, security headers, static files and the offline API docs, in-process."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.api import create_app
from service.api._session import COOKIE_NAME
from service.settings import Settings
from service.store import JobStore

SPEC = (
    Path(__file__).resolve().parents[2] / "search_spaces/examples/quick_rotmnist.yaml"
).read_text()
HTML = {"Accept": "text/html"}


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, Any]]:
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    store.upgrade()
    settings = Settings(db=store.url, artifacts=tmp_path / "artifacts", session_hours=1)
    app = create_app(settings, store)
    with TestClient(app) as client:
        yield {"client": client, "store": store, "app": app, "token": store.create_token("alice")}
    store.close()


def sign_in(client: TestClient, token: str) -> Any:
    form = client.get("/signin")
    form_token = re.search(r'name="form_token" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
    return client.post(
        "/signin", data={"token": token, "form_token": form_token}, follow_redirects=False
    )


def csrf_of(client: TestClient) -> str:
    page = client.get("/v1/dashboard")
    return re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]


def test_the_cookie_is_httponly_strict_and_limited(env: dict[str, Any]) -> None:
    response = sign_in(env["client"], env["token"])
    assert response.status_code == 303
    header = next(
        h for h in response.headers.get_list("set-cookie") if h.startswith(f"{COOKIE_NAME}=")
    )
    assert env["token"] not in header
    assert "HttpOnly" in header and "SameSite=strict" in header and "Max-Age=3600" in header
    assert "Secure" not in header  # plain HTTP here; over HTTPS the cookie is Secure


def test_revoking_the_token_ends_its_sessions(env: dict[str, Any]) -> None:
    client = env["client"]
    sign_in(client, env["token"])
    assert client.get("/v1/jobs").status_code == 200
    env["store"].revoke_token("alice")
    assert client.get("/v1/jobs").status_code == 401
    assert client.get("/v1/dashboard", headers=HTML, follow_redirects=False).status_code == 303


def test_a_forged_expired_or_signed_out_cookie_is_refused(env: dict[str, Any]) -> None:
    client, app = env["client"], env["app"]
    sign_in(client, env["token"])
    cookie = client.cookies[COOKIE_NAME]
    token_id, expires, nonce, mac = cookie.split(".")
    sessions = app.state.sessions
    assert sessions.check(cookie) is not None
    assert sessions.check(f"{token_id}.{int(expires) + 3600}.{nonce}.{mac}") is None  # longer
    other = env["store"].create_token("bob").split("_")[1]
    assert sessions.check(f"{other}.{expires}.{nonce}.{mac}") is None  # another token
    assert sessions.check(f"{token_id}.{int(time.time()) - 1}.{nonce}.{mac}") is None
    assert sessions.check("garbage") is None and sessions.check("a.b.c.d") is None
    csrf = csrf_of(client)
    response = client.post("/signout", data={"csrf": csrf}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/signin"
    assert sessions.check(cookie) is None  # even if the browser kept it


def test_state_changes_need_the_csrf_token_and_this_origin(env: dict[str, Any]) -> None:
    client = env["client"]
    sign_in(client, env["token"])
    yaml = {"Content-Type": "application/yaml"}
    assert client.post("/v1/jobs", content=SPEC, headers=yaml).status_code == 403
    bad = {**yaml, "X-CSRF-Token": "x" * 43}
    assert client.post("/v1/jobs", content=SPEC, headers=bad).status_code == 403
    good = {**yaml, "X-CSRF-Token": csrf_of(client)}
    evil = {**good, "Origin": "https://evil.example"}
    assert client.post("/v1/jobs", content=SPEC, headers=evil).status_code == 403
    created = client.post("/v1/jobs", content=SPEC, headers=good)
    assert created.status_code == 201
    job = created.json()["id"]
    assert client.delete(f"/v1/jobs/{job}").status_code == 403
    cancel = client.delete(f"/v1/jobs/{job}", headers={"X-CSRF-Token": good["X-CSRF-Token"]})
    assert cancel.status_code == 202
    # signing out needs it too
    assert client.post("/signout", data={"csrf": "nope"}).status_code == 403
    # a sign-in posted from elsewhere (no one-time value of this server's form) is refused
    client.cookies.clear()
    forged = client.post("/signin", data={"token": env["token"]}, follow_redirects=False)
    assert forged.status_code == 403


def test_sign_in_goes_back_to_the_page_but_never_elsewhere(env: dict[str, Any]) -> None:
    client = env["client"]
    response = client.get(
        "/v1/compare/dashboard?job=a&token=rt_x", headers=HTML, follow_redirects=False
    )
    assert response.headers["location"] == "/signin?next=/v1/compare/dashboard%3Fjob%3Da"
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil"):
        page = client.get("/signin", params={"next": target})
        assert 'name="next" value="/v1/dashboard"' in page.text, target


def test_security_headers_and_caching(env: dict[str, Any]) -> None:
    client = env["client"]
    sign_in(client, env["token"])
    for path in ("/v1/dashboard", "/v1/jobs", "/signin", "/healthz"):
        response = client.get(path)
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
        assert "unsafe-inline" not in csp.split("script-src")[1].split(";")[0], path
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-store", path
    page = client.get("/v1/dashboard", headers={"Accept-Encoding": "gzip"})
    assert page.headers["content-encoding"] == "gzip"
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
    assert assets and all(re.fullmatch(r"/static/[0-9a-f]{16}/[\w.]+", a) for a in assets)
    static = client.get(assets[0])
    assert static.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert (
        client.get(re.sub(r"/static/\w+/", "/static/0000000000000000/", assets[0])).status_code
        == 404
    )
    assert client.get("/static/0000000000000000/../../settings.py").status_code == 404


def test_api_docs_are_served_offline(env: dict[str, Any]) -> None:
    client = env["client"]
    for path in ("/docs", "/redoc"):
        page = client.get(path)
        assert page.status_code == 200
        sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert sources and all(s.startswith("/") for s in sources), sources
        for source in sources:
            assert client.get(source).status_code == 200, source


def test_the_static_admin_token_signs_in_and_sees_every_tenant(tmp_path: Path) -> None:
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    store.upgrade()
    admin = "k3Jx9pQ2-wLr7Yt5Nv8sBz4Hc6Fd1Gm0"
    settings = Settings(db=store.url, artifacts=tmp_path / "a", admin_token=admin)
    store.create_job("bob", {"name": "bobs", "budget": {"trials": 2}}, "bobs-job")
    with TestClient(create_app(settings, store)) as client:
        assert sign_in(client, admin).status_code == 303
        page = client.get("/v1/dashboard").text
        assert "<th>tenant</th>" in page and "bobs-job" in page and "<td>bob</td>" in page
        alice = store.create_token("alice")
        client.cookies.clear()
        sign_in(client, alice)
        page = client.get("/v1/dashboard").text
        assert "<th>tenant</th>" not in page and "bobs-job" not in page
    store.close()


def test_compare_refuses_too_many_jobs_naming_the_field(env: dict[str, Any]) -> None:
    client = env["client"]
    sign_in(client, env["token"])
    query = "&".join(f"job={i:016x}" for i in range(9))
    response = client.get(f"/v1/compare?{query}")
    assert response.status_code == 422 and response.json()["detail"]["field"] == "job"
    assert client.get("/v1/compare?job=../../etc&job=x").status_code == 404
