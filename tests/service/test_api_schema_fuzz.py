"""Property-based requests generated from the OpenAPI schema (schemathesis).

Every generated request must get a documented status code, a response matching its schema,
and never a server error. Spec semantics are not in the schema (a YAML body is "a string"),
so refusing a schema-valid spec is expected and that check is left out.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import hypothesis
import pytest
import schemathesis

from service.api import create_app
from service.settings import Settings
from service.store import JobStore

# schemathesis reports one result per API operation under one test id, which pytest-xdist
# cannot relay: `make test` runs these in a process of their own (Makefile)
pytestmark = pytest.mark.one_process

_TMP = tempfile.TemporaryDirectory(prefix="relaxtune-fuzz-")
_STORE = JobStore(f"sqlite:///{Path(_TMP.name) / 'jobs.db'}")
_STORE.upgrade()
_TOKEN = _STORE.create_token("alice")
_STORE.create_job("alice", {"objective": {"metric": "val_accuracy", "mode": "max"}}, "seed")
_APP = create_app(
    # no warm-up thread: schemathesis starts the app while pytest is still importing (and
    # compiling) test modules, and CPython 3.11's compiler is not safe to run in two threads
    Settings(
        db=_STORE.url,
        artifacts=Path(_TMP.name) / "artifacts",
        max_body_bytes=4096,
        warm_up_dashboards=False,
    ),
    _STORE,
)
schema = schemathesis.openapi.from_asgi("/openapi.json", _APP)


@schema.parametrize()
@hypothesis.settings(
    max_examples=15, deadline=None, suppress_health_check=list(hypothesis.HealthCheck)
)
def test_api_conforms_to_its_schema(case: schemathesis.Case) -> None:
    case.call_and_validate(
        headers={"Authorization": f"Bearer {_TOKEN}"},
        excluded_checks=[
            schemathesis.checks.positive_data_acceptance,
            schemathesis.checks.negative_data_rejection,
        ],
    )
