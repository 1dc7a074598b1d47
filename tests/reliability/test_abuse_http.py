"""Hostile HTTP input: deep YAML, alias bombs, huge numbers, path-like and very long job ids,
odd headers. Every one is refused with a 4xx that says why (never a 5xx or a traceback) and
writes nothing.

Plain oversized bodies, non-UTF-8 bodies and unsupported content types are covered by
``tests/service/test_api_jobs.py``; this file adds what those do not reach.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from service.api import create_app
from service.settings import Settings
from service.store import JobStore

GOOD_YAML = """\
name: ok
task: nbody
model: {hidden: 16, layers: 2}
search_space: relax
budget: {trials: 2, epochs: 2}
objective: {metric: val_mse, mode: min}
"""

BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
name: *g
"""


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    s = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    s.upgrade()
    yield s
    s.close()


@pytest.fixture
def client(store: JobStore, tmp_path: Path) -> Iterator[TestClient]:
    # the default body limit (256 KiB): the spec reader itself must refuse what fits in it
    settings = Settings(db=store.url, artifacts=tmp_path / "artifacts")
    with TestClient(create_app(settings, store), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def alice(store: JobStore) -> dict[str, str]:
    return {"Authorization": f"Bearer {store.create_token('alice')}"}


def job_rows(store: JobStore) -> int:
    with store.engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM relaxtune_jobs")).scalar_one()


def assert_clean_refusal(response: Any, *codes: int) -> None:
    assert response.status_code in codes, (response.status_code, response.text[:500])
    text = response.text
    assert "Traceback" not in text and 'File "' not in text, text[:500]


def post(client: TestClient, headers: dict[str, str], body: str | bytes, ctype: str) -> Any:
    return client.post("/v1/jobs", content=body, headers={**headers, "Content-Type": ctype})


def _deep_yaml_block(depth: int) -> str:
    lines = [f"{'  ' * i}k{i}:" for i in range(depth)]
    return "name: deep\n" + "\n".join(lines) + f"\n{'  ' * depth}leaf\n"


HOSTILE_SPECS = {
    "billion-laughs": (BILLION_LAUGHS, "application/yaml"),
    "alias-only": ("name: &n x\ntask: *n\n", "application/yaml"),
    "deep-yaml-flow": ("name: x\nmodel: " + "[" * 5000 + "]" * 5000 + "\n", "application/yaml"),
    "deep-yaml-block": (_deep_yaml_block(200), "application/yaml"),
    "deep-json": ('{"name": "x", "model": ' + "[" * 50000 + "]" * 50000 + "}", "application/json"),
    "huge-int-json": (
        '{"name": "x", "budget": {"trials": ' + "9" * 5000 + "}}",
        "application/json",
    ),
    "huge-int-yaml": (GOOD_YAML.replace("trials: 2", "trials: " + "9" * 5000), "application/yaml"),
    "int-past-64-bit": (GOOD_YAML.replace("trials: 2", f"trials: {2**80}"), "application/yaml"),
    "float-overflow": (GOOD_YAML.replace("seed", "x") + "seed: 1e999999\n", "application/yaml"),
    "float-overflow-json": (
        json.dumps({"name": "x"})[:-1] + ', "seed": 1e999999}',
        "application/json",
    ),
    "nan-json": ('{"name": "x", "seed": NaN}', "application/json"),
    "epochs-1e308": (GOOD_YAML.replace("epochs: 2", "epochs: 1.0e308"), "application/yaml"),
    "negative-huge-seed": (GOOD_YAML + f"seed: -{2**200}\n", "application/yaml"),
    "python-tag": ("name: !!python/object/apply:os.system ['true']\n", "application/yaml"),
    "binary-tag": ("name: !!binary aGVsbG8=\n", "application/yaml"),
    "many-documents": (GOOD_YAML + "---\n" + GOOD_YAML, "application/yaml"),
    "nul-bytes": ("name: a\x00b\n", "text/plain"),
    "lone-surrogate-escape": ('{"name": "\\ud800"}', "application/json"),
    "json-array": ("[1, 2, 3]", "application/json"),
    "many-keys": ("{" + ",".join(f'"k{i}": {i}' for i in range(5000)) + "}", "application/json"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_SPECS))
def test_hostile_spec_is_refused_naming_a_field(
    client: TestClient, store: JobStore, alice: Any, case: str
) -> None:
    body, ctype = HOSTILE_SPECS[case]
    response = post(client, alice, body, ctype)
    assert_clean_refusal(response, 400, 413, 422)
    detail = response.json()["detail"]
    assert isinstance(detail, dict) and detail["field"] and detail["message"], detail
    assert job_rows(store) == 0


def test_a_good_spec_still_goes_through(client: TestClient, store: JobStore, alice: Any) -> None:
    # the control of the test above: the hostile cases fail for their content, not the route
    assert post(client, alice, GOOD_YAML, "application/yaml").status_code == 201
    assert job_rows(store) == 1


# (literal "../.." is normalised away by every HTTP client before it is sent; its
# percent-encoded forms are what reaches the server)
PATH_LIKE_IDS = [
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e",
    "%2e%2e%2f%2e%2e",
    "%252e%252e%252f",
    "....//....//",
    "0123456789abcdef%00",
    "0123456789abcdef%2F..",
    "0123456789ABCDEF",
    "%ff%fe",
    "~root",
    "a" * 300,
    "0" * 8000,
    "0123456789abcdef" * 64,
]
JOB_ROUTES = [
    ("GET", ""),
    ("DELETE", ""),
    ("GET", "/trials"),
    ("GET", "/dashboard"),
    ("GET", "/best"),
    ("GET", "/best/checkpoint"),
]


@pytest.mark.parametrize("job_id", PATH_LIKE_IDS, ids=lambda s: s[:24])
def test_path_like_and_long_job_ids_are_refused(
    client: TestClient, store: JobStore, alice: Any, tmp_path: Path, job_id: str
) -> None:
    real = post(client, alice, GOOD_YAML, "application/yaml").json()["id"]
    (tmp_path / "artifacts" / "secret.json").parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "artifacts" / "secret.json").write_text('{"secret": "do-not-serve"}')
    for method, route in JOB_ROUTES:
        response = client.request(method, f"/v1/jobs/{job_id}{route}", headers=alice)
        assert_clean_refusal(response, 400, 404, 405, 414, 422)
        assert "do-not-serve" not in response.text and real not in response.text
    assert store.get_job(real).status == "queued"  # nothing cancelled by a crafted id


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer " + "x" * 10_000,
        "Bearer rt_" + "0" * 16 + "_" + "y" * 5000,
        "Bearer rt_../../_x",
        "Bearer rt_0123456789abcdef_' OR '1'='1",
        "Basic YWxpY2U6c2VjcmV0",
        "Bearer",
        "bearer\trt_x_y",
    ],
    ids=lambda s: s[:20],
)
def test_malformed_tokens_are_401(client: TestClient, authorization: str) -> None:
    response = client.get("/v1/jobs", headers={"Authorization": authorization})
    assert_clean_refusal(response, 401, 403)


def test_non_ascii_authorization_header_is_401(client: TestClient) -> None:
    response = client.get("/v1/jobs", headers=[(b"Authorization", b"Bearer rt_\xff\xfe_\x80")])
    assert_clean_refusal(response, 401)


@pytest.mark.parametrize(
    "query",
    [
        "limit=99999999999999999999999",
        "limit=-1",
        "limit=1e400",
        "status=..%2F",
        "status=" + "q" * 5000,
    ],
)
def test_hostile_query_parameters_are_422(client: TestClient, alice: Any, query: str) -> None:
    assert_clean_refusal(client.get(f"/v1/jobs?{query}", headers=alice), 422)
