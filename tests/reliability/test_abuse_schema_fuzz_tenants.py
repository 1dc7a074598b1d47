"""Schema-driven fuzzing (schemathesis) as tenant ``alice`` against a database that also holds
tenant ``bob``'s job and exported best checkpoint.

``tests/service/test_api_schema_fuzz.py`` checks schema conformance; this one checks what a
response may contain: never a 5xx, never a stack trace or internal path, never anything of
bob's. Each generated request is also replayed with its ``job_id`` replaced by bob's real id,
which must be a 404 identical to that of a missing job.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import hypothesis
import pytest
import schemathesis

from service.api import create_app
from service.artifacts import best_dir
from service.settings import Settings
from service.store import JobStore

# schemathesis reports one result per API operation under one test id, which pytest-xdist
# cannot relay: `make test` runs these in a process of their own (Makefile)
pytestmark = pytest.mark.one_process

_TMP = tempfile.TemporaryDirectory(prefix="relaxtune-fuzz-tenants-")
_ROOT = Path(_TMP.name)
_STORE = JobStore(f"sqlite:///{_ROOT / 'jobs.db'}")
_STORE.upgrade()
_ALICE = _STORE.create_token("alice")
_STORE.create_token("bob")
_MARKER = "bobs-private-marker"
_BOB_JOB = _STORE.create_job(
    "bob", {"name": _MARKER, "objective": {"metric": "val_mse", "mode": "min"}}, _MARKER
).id
_STORE.claim_next("w")
_STORE.finish(_BOB_JOB, "succeeded", best={"note": _MARKER})
# no warm-up thread: schemathesis starts the app while pytest is still importing (and
# compiling) test modules, and CPython 3.11's compiler is not safe to run in two threads
_SETTINGS = Settings(
    db=_STORE.url, artifacts=_ROOT / "artifacts", max_body_bytes=8192, warm_up_dashboards=False
)
_FOLDER = best_dir(_SETTINGS.artifacts, _BOB_JOB)
_FOLDER.mkdir(parents=True)
for _name in ("config.json", "metrics.json", "certificate.json"):
    (_FOLDER / _name).write_text(json.dumps({"marker": _MARKER}))
_STORE.create_job("alice", {"name": "alice-job", "objective": {"metric": "val_mse"}}, "alice")
_APP = create_app(_SETTINGS, _STORE)
schema = schemathesis.openapi.from_asgi("/openapi.json", _APP)

_LEAKS = re.compile(r"Traceback|File \"|/site-packages/|sqlalchemy|psycopg|sqlite3\.", re.I)


def _check_response(response: schemathesis.Response, what: str, sent_bob_id: bool = False) -> None:
    assert response.status_code < 500, (what, response.status_code, response.text[:300])
    text = response.text
    if sent_bob_id:  # a 404 may echo the id the caller sent, and nothing else of bob's
        text = text.replace(f"job {_BOB_JOB} not found", "")
    assert _MARKER not in text and _BOB_JOB not in text, (what, text[:300])
    assert not _LEAKS.search(text), (what, text[:300])
    assert _TMP.name not in text, (what, text[:300])


@schema.parametrize()
@hypothesis.settings(
    max_examples=15, deadline=None, suppress_health_check=list(hypothesis.HealthCheck)
)
def test_fuzzed_requests_never_leak_another_tenant_or_internals(case: schemathesis.Case) -> None:
    headers = {"Authorization": f"Bearer {_ALICE}"}
    _check_response(case.call(headers=headers), f"{case.method} {case.formatted_path}")
    declared = case.method.upper() == case.operation.method.upper()
    if declared and case.path_parameters and "job_id" in case.path_parameters:
        case.path_parameters = {**case.path_parameters, "job_id": _BOB_JOB}
        case.headers = {**(case.headers or {}), **headers}
        response = case.call()
        what = f"{case.method} {case.formatted_path} (bob's id)"
        # 404 like a missing job (422 when the fuzzed query is invalid: checked first)
        assert response.status_code in (404, 422), (what, response.status_code)
        if response.status_code == 404:
            assert response.json() == {"detail": f"job {_BOB_JOB} not found"}, what
        _check_response(response, what, sent_bob_id=True)
