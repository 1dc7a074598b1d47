"""Gain reports of real tiny jobs: the controller runs the search, then retrains the best
configuration on the report seeds (as found and with the relaxation off) as Ray trials; the
report read back over the API is checked against a hand computation from the stored runs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import optuna
import pytest
from fastapi.testclient import TestClient
from optuna.trial import TrialState

from search_spaces import parse_spec, relaxation_off
from service import cli
from service.api import create_app
from service.artifacts import report_study_name
from service.cli import _client as cli_client
from service.controller import Controller
from service.gain import FIRST_REPORT_SEED
from service.settings import Settings
from service.store import JobStore

pytestmark = pytest.mark.slow

SEEDS = [FIRST_REPORT_SEED, FIRST_REPORT_SEED + 1]


def tiny(search_space: dict[str, Any], **changes: Any) -> dict[str, Any]:
    spec = {
        "name": "tiny-gain",
        "task": "nbody",
        "model": {"hidden": 16, "layers": 2},
        "data": {"train_size": 100, "val_size": 50, "test_size": 50},
        "search_space": search_space,
        "budget": {"trials": 2, "epochs": 2, "max_concurrent": 2},
        "objective": {"metric": "val_mse", "mode": "min"},
        "resources": {"cpu": 1, "gpu": 0},
        "scheduler": "none",
        "seed": 0,
        "report": {"seeds": 2},
    }
    spec.update(changes)
    return spec


RELAXED = {
    "optim.lr": {"type": "categorical", "choices": [1e-3, 2e-3]},
    "relax.schedule": "triangular",
    "relax.theta_max": 0.5,
}


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def env(store: JobStore, tmp_path: Path) -> dict[str, Any]:
    settings = Settings(db=store.url, artifacts=tmp_path / "artifacts")
    token = store.create_token("alice")
    client = TestClient(create_app(settings, store))
    client.headers["Authorization"] = f"Bearer {token}"
    return {"store": store, "settings": settings, "client": client, "token": token}


def _run(env: dict[str, Any], spec: dict[str, Any]) -> Any:
    store: JobStore = env["store"]
    job = store.create_job("alice", parse_spec(spec).to_dict(), spec["name"])
    finished = Controller(store, env["settings"], worker_id="t").run_job(store.claim_next("t"))
    assert finished.id == job.id and finished.status == "succeeded", finished.error
    return finished


def _runs(store: JobStore, job_id: str) -> dict[tuple[str, int], optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=report_study_name(job_id), storage=store.url)
    complete = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    runs = {(t.user_attrs["report_arm"], t.user_attrs["report_seed"]): t for t in complete}
    assert len(runs) == len(complete)  # one run per arm and seed
    return runs


def test_report_of_a_tiny_job_matches_a_hand_computation(
    env: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    job = _run(env, tiny(RELAXED))
    runs = _runs(env["store"], job.id)
    assert set(runs) == {(arm, s) for arm in ("as_found", "relaxation_off") for s in SEEDS}
    # both arms: the best configuration as found, and the same with θ = 0 (nothing else moved)
    best_params = job.best["params"]
    for seed in SEEDS:
        assert runs[("as_found", seed)].user_attrs["hparams"] == best_params
        assert runs[("relaxation_off", seed)].user_attrs["hparams"] == relaxation_off(best_params)
    # the report seeds are fixed, recorded, and not the search seed
    assert 0 not in SEEDS
    # the test metric was measured once per model: the value stored is its metrics.json's
    for trial in runs.values():
        model = Path(trial.user_attrs["checkpoint"])
        metrics = json.loads((model / "metrics.json").read_text())
        assert trial.user_attrs["test_value"] == pytest.approx(metrics["test_mse"])
        config = json.loads((model / "config.json").read_text())
        assert config["seed"] == trial.user_attrs["report_seed"]
        assert config["data"]["train_size"] == 100  # the search's data for every run

    response = env["client"].get(f"/v1/jobs/{job.id}/report")
    assert response.status_code == 200
    report = response.json()
    assert report["status"] == "complete" and report["seeds"] == SEEDS
    # by hand: d_i = as found − off per seed; n = 2, so sd = |d_0 − d_1| / √2, se = sd / √2,
    # and t(0.975, 1) = 12.706205 (tables)
    d = [
        runs[("as_found", s)].user_attrs["test_value"]
        - runs[("relaxation_off", s)].user_attrs["test_value"]
        for s in SEEDS
    ]
    mean = (d[0] + d[1]) / 2
    half = 12.706205 * abs(d[0] - d[1]) / 2
    difference = report["difference"]
    assert difference["mean"] == pytest.approx(mean)
    assert difference["std"] == pytest.approx(abs(d[0] - d[1]) / math.sqrt(2))
    assert difference["ci"] == pytest.approx([mean - half, mean + half], rel=1e-6)
    off_mean = sum(runs[("relaxation_off", s)].user_attrs["test_value"] for s in SEEDS) / 2
    assert difference["relative"] == pytest.approx(mean / off_mean)
    assert [r["difference"] for r in report["runs"]] == pytest.approx(d)
    assert report["arms"]["as_found"]["mean"] == pytest.approx(
        sum(runs[("as_found", s)].user_attrs["test_value"] for s in SEEDS) / 2
    )
    assert report["verdict"].startswith(("relaxation helps", "relaxation hurts", "no measurable"))
    assert report["quantity"] == "test MSE" and report["better"] == "lower"

    # the figures travel with the model, the dashboard and the CLI show the verdict
    best_metrics = json.loads(
        (env["settings"].artifacts / "jobs" / job.id / "best" / "metrics.json").read_text()
    )
    assert best_metrics["gain"]["verdict"] == report["verdict"]
    assert best_metrics["gain"]["difference"]["ci"] == pytest.approx(difference["ci"])
    page = env["client"].get(f"/v1/jobs/{job.id}/dashboard").text
    assert 'id="gain-report"' in page and "chart-gain-plot" in page
    monkeypatch.setattr(cli_client, "_http_client", lambda args: env["client"])
    assert cli.main(["status", job.id, "--token", env["token"]]) == 0
    assert report["verdict"][:40] in " ".join(capsys.readouterr().out.split())


def test_best_without_relaxation_has_nothing_to_compare(env: dict[str, Any]) -> None:
    job = _run(env, tiny({"optim.lr": 1e-3, "relax.schedule": "none"}, name="plain"))
    runs = _runs(env["store"], job.id)
    # only the as-found arm is trained (its spread is still reported); no fake pair
    assert set(runs) == {("as_found", s) for s in SEEDS}
    report = env["client"].get(f"/v1/jobs/{job.id}/report").json()
    assert report["status"] == "nothing_to_compare"
    assert report["difference"] is None and report["relaxing"] is False
    assert report["verdict"].startswith("nothing to compare")
    assert all(r["relaxation_off"] is None and r["difference"] is None for r in report["runs"])
    assert report["arms"]["as_found"]["n"] == 2
