"""Best-checkpoint and dashboard routes, on a fabricated best folder and study."""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from fastapi.testclient import TestClient

from service.api import create_app
from service.artifacts import best_dir
from service.settings import Settings
from service.store import JobStore

SPEC = {
    "name": "tiny",
    "task": "rotated_mnist",
    "model": {"group": "C4"},
    "search_space": "relax",
    "budget": {"trials": 2, "epochs": 1},
    "objective": {"metric": "val_accuracy", "mode": "max"},
}
CONFIG = {"task": "rotated_mnist", "hparams": {"optim.lr": 0.003}, "group": "C4"}
METRICS = {"val_accuracy": 0.91, "test_accuracy": 0.9}
CERTIFICATE = {"passed": True, "tolerance": 1e-5, "projected": {"max_error": 2e-7}}


@pytest.fixture
def settings(store: JobStore, tmp_path: Path) -> Settings:
    return Settings(db=store.url, artifacts=tmp_path / "artifacts")


@pytest.fixture
def client(settings: Settings, store: JobStore) -> Iterator[TestClient]:
    with TestClient(create_app(settings, store)) as c:
        yield c


@pytest.fixture
def alice(store: JobStore) -> dict[str, str]:
    return {"Authorization": f"Bearer {store.create_token('alice')}"}


def fabricate_best(settings: Settings, job_id: str) -> Path:
    folder = best_dir(settings.artifacts, job_id)
    folder.mkdir(parents=True)
    for name, value in (
        ("config.json", CONFIG),
        ("metrics.json", METRICS),
        ("certificate.json", CERTIFICATE),
    ):
        (folder / name).write_text(json.dumps(value))
    (folder / "model.safetensors").write_bytes(b"\x00" * 64)
    (folder / "model.ts").write_bytes(b"PK fake torchscript")
    return folder


def finished_job(store: JobStore, status: str = "succeeded", **kw: Any) -> str:
    job = store.create_job("alice", SPEC, "tiny")
    store.claim_next("w")
    store.finish(job.id, status, **kw)
    return job.id


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        ("queued", "is queued"),
        ("running", "is running"),
        ("failed", "failed, so there is no best checkpoint: ValueError: bad"),
        ("cancelled", "was cancelled"),
        ("succeeded", "relaxtune export"),
    ],
)
def test_best_is_409_with_a_reason_before_export(
    client: TestClient, store: JobStore, alice: Any, status: str, reason: str
) -> None:
    job = store.create_job("alice", SPEC, "tiny")
    if status != "queued":
        store.claim_next("w")
    if status in ("failed", "cancelled", "succeeded"):
        store.finish(job.id, status, error="ValueError: bad" if status == "failed" else None)
    for route in ("/best", "/best/checkpoint"):
        response = client.get(f"/v1/jobs/{job.id}{route}", headers=alice)
        assert response.status_code == 409
        assert reason in response.json()["detail"]


def sign_in(client: Any, token: str) -> Any:
    """Sign a test client in as a browser does: the form (and its one-time value), then the post."""
    form = client.get("/signin")
    form_token = re.search(r'name="form_token" value="([^"]+)"', form.text).group(1)
    return client.post(
        "/signin", data={"token": token, "form_token": form_token}, follow_redirects=False
    )


def test_best_json_from_the_best_folder(
    client: TestClient, store: JobStore, settings: Settings, alice: Any
) -> None:
    job_id = finished_job(store, best={"number": 1, "params": {"optim.lr": 0.003}})
    fabricate_best(settings, job_id)
    body = client.get(f"/v1/jobs/{job_id}/best", headers=alice).json()
    assert body["params"] == {"optim.lr": 0.003}
    assert body["metrics"] == METRICS and body["certificate"] == CERTIFICATE
    assert body["config"] == CONFIG
    assert body["files"] == [
        "certificate.json",
        "config.json",
        "metrics.json",
        "model.safetensors",
        "model.ts",
    ]


def test_checkpoint_zip_download(
    client: TestClient, store: JobStore, settings: Settings, alice: Any, tmp_path: Path
) -> None:
    job_id = finished_job(store)
    folder = fabricate_best(settings, job_id)
    secret = tmp_path / "outside.txt"
    secret.write_text("server secret")
    os.symlink(secret, folder / "leak.txt")  # links must not be followed into the archive
    response = client.get(f"/v1/jobs/{job_id}/best/checkpoint", headers=alice)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    assert f"relaxtune-{job_id}-best.zip" in response.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert sorted(archive.namelist()) == [
            "certificate.json",
            "config.json",
            "metrics.json",
            "model.safetensors",
            "model.ts",
        ]
        assert json.loads(archive.read("metrics.json")) == METRICS
        assert archive.read("model.safetensors") == b"\x00" * 64


def test_corrupt_best_json_is_409(
    client: TestClient, store: JobStore, settings: Settings, alice: Any
) -> None:
    job_id = finished_job(store)
    folder = fabricate_best(settings, job_id)
    (folder / "metrics.json").write_text("{truncated")
    response = client.get(f"/v1/jobs/{job_id}/best", headers=alice)
    assert response.status_code == 409 and "metrics.json" in response.json()["detail"]


def test_dashboard_before_any_trial(client: TestClient, store: JobStore, alice: Any) -> None:
    job = store.create_job("alice", SPEC, "tiny")
    response = client.get(f"/v1/jobs/{job.id}/dashboard", headers=alice)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert job.id in response.text


def test_dashboard_with_trials_and_certificate_in_a_signed_in_browser(
    client: TestClient, store: JobStore, settings: Settings
) -> None:
    token = store.create_token("alice")
    job_id = finished_job(store)
    fabricate_best(settings, job_id)
    study = optuna.create_study(
        study_name=f"job-{job_id}", storage=store.optuna_storage(), direction="maximize"
    )
    dist = {"relax.theta_max": optuna.distributions.FloatDistribution(0.0, 1.0)}
    for i, value in enumerate((0.7, 0.9)):
        study.add_trial(
            optuna.trial.create_trial(
                params={"relax.theta_max": 0.1 * (i + 1)},
                distributions=dist,
                value=value,
                intermediate_values={1: value},
                user_attrs={
                    "val_relaxed": value + 0.01,
                    "history": [{"epoch": 1, "val_projected": value, "theta": 0.1}],
                },
            )
        )
    # a token in the URL opens nothing (it would end up in logs and histories)
    browser = {"Accept": "text/html"}
    refused = client.get(
        "/v1/dashboard", params={"token": token}, headers=browser, follow_redirects=False
    )
    assert refused.status_code == 303 and refused.headers["location"].startswith("/signin")
    assert token not in refused.headers["location"]
    forged = client.post("/signin", data={"token": token}, follow_redirects=False)
    assert forged.status_code == 403  # not from the sign-in form: refused
    signed_in = sign_in(client, token)
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/v1/dashboard"
    response = client.get(f"/v1/jobs/{job_id}/dashboard")
    assert response.status_code == 200
    assert "<html" in response.text.lower() and "Download best checkpoint" in response.text
    download = client.get(f"/v1/jobs/{job_id}/best/checkpoint")  # the button's link, by cookie
    assert download.status_code == 200 and download.content[:2] == b"PK"
    listing = client.get("/v1/dashboard")
    assert listing.status_code == 200
    assert f'href="/v1/jobs/{job_id}/dashboard"' in listing.text and token not in listing.text
    assert sign_in(client, "rt_bad_bad").status_code == 401


def test_dashboard_list_is_per_tenant(client: TestClient, store: JobStore, alice: Any) -> None:
    mine = store.create_job("alice", SPEC, "mine")
    theirs = store.create_job("bob", SPEC, "theirs")
    page = client.get("/v1/dashboard", headers=alice).text
    assert mine.id in page and theirs.id not in page
