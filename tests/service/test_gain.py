"""The gain report assembled from recorded runs (no training): plan, seeds, states, verdicts,
the dashboard's data, and asking for a report through the store, the API and the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from search_spaces import default_hparams, parse_spec
from service import cli
from service.api import create_app
from service.cli import _client as cli_client
from service.dashboard import gain_points
from service.errors import Conflict, NotFound
from service.gain import build_report, plan, report_seeds, search_done_before
from service.settings import Settings
from service.store import JobStore

RELAXED = {**default_hparams(), "relax.schedule": "triangular", "optim.lr": 3e-3}

SPEC = {
    "name": "g",
    "task": "rotated_mnist",
    "model": {"group": "C4"},
    "search_space": "relax",
    "budget": {"trials": 2, "epochs": 1},
    "objective": {"metric": "val_accuracy", "mode": "max"},
}


def run(arm: str, seed: int, state: str = "COMPLETE", test: float | None = None, **attrs: Any):
    """A recorded report run as ``build_report`` reads it (a ``FrozenTrial`` look-alike)."""
    run.number += 1  # type: ignore[attr-defined]
    hparams = RELAXED if arm == "as_found" else {**RELAXED, "relax.schedule": "none"}
    user_attrs = {"report_arm": arm, "report_seed": seed, "source_trial": 3, "hparams": hparams}
    if test is not None:
        user_attrs["test_value"] = test
    user_attrs.update(attrs)
    return SimpleNamespace(
        number=run.number, state=SimpleNamespace(name=state), user_attrs=user_attrs
    )


run.number = 0  # type: ignore[attr-defined]


def report(trials: list[Any], seeds: int | None = 2) -> dict[str, Any]:
    return build_report(
        trials, job_id="j", metric="accuracy", mode="max", requested_seeds=seeds, search_seed=0
    )


def test_seeds_are_fixed_and_never_the_search_seed() -> None:
    assert report_seeds(3, 0) == [1000, 1001, 1002]
    assert report_seeds(3, 1001) == [1000, 1002, 1003]
    runs = plan(RELAXED, 2, 0)
    assert [(r.arm, r.seed) for r in runs] == [
        ("as_found", 1000),
        ("relaxation_off", 1000),
        ("as_found", 1001),
        ("relaxation_off", 1001),
    ]
    assert runs[1].hparams == {**RELAXED, "relax.schedule": "none"}
    plain = {**RELAXED, "relax.schedule": "none"}
    assert [(r.arm, r.seed) for r in plan(plain, 2, 0)] == [("as_found", 1000), ("as_found", 1001)]


def test_accuracy_is_compared_as_test_error_with_a_paired_interval() -> None:
    trials = [
        run("as_found", 1000, test=0.90),
        run("relaxation_off", 1000, test=0.88),
        run("as_found", 1001, test=0.91),
        run("relaxation_off", 1001, test=0.86),
    ]
    out = report(trials)
    assert out["status"] == "complete" and out["quantity"] == "test error"
    assert out["better"] == "lower"
    # errors: as found 0.10, 0.09; off 0.12, 0.14; differences −0.02, −0.05
    assert [r["difference"] for r in out["runs"]] == pytest.approx([-0.02, -0.05])
    assert out["difference"]["mean"] == pytest.approx(-0.035)
    # n = 2: half-width t(0.975, 1) · |d0 − d1| / 2 = 12.706205 · 0.015
    assert out["difference"]["ci"] == pytest.approx([-0.035 - 0.1905931, -0.035 + 0.1905931])
    assert out["difference"]["better_seeds"] == 2
    assert out["verdict"].startswith("no measurable gain at 2 seeds (\u221226.9 % test error")
    assert out["arms"]["relaxation_off"]["mean"] == pytest.approx(0.13)


def test_states_pending_running_interrupted_and_failed() -> None:
    assert report([], seeds=None)["status"] == "not_requested"
    assert report([])["status"] == "pending"
    interrupted = run("as_found", 1000, "FAIL", stop_reason="driver stopped; run again")
    running = report([interrupted, run("relaxation_off", 1000, "RUNNING")])
    assert running["status"] == "running" and running["failures"] == []
    assert running["progress"] == {"done": 0, "running": 1, "failed": 0, "total": 4}
    # a diverged run is an outcome, not an interruption: the seed has no pair
    trials = [
        run("as_found", 1000, test=0.9),
        run("relaxation_off", 1000, "FAIL", stop_reason="diverged: loss became nan"),
        run("as_found", 1001, test=0.9),
        run("relaxation_off", 1001, test=0.8),
    ]
    out = report(trials)
    assert out["status"] == "incomplete" and out["difference"] is None
    assert out["failures"] == [
        {"arm": "relaxation_off", "seed": 1000, "reason": "diverged: loss became nan"}
    ]
    # a run redone after an interruption supersedes its FAIL record
    redone = [interrupted, *trials[:1], run("as_found", 1000, test=0.95)]
    assert report(redone)["runs"][0]["as_found"] == pytest.approx(0.05)


def test_nothing_to_compare_reports_the_spread_only() -> None:
    plain = {**RELAXED, "relax.schedule": "none"}
    trials = [run("as_found", s, test=t, hparams=plain) for s, t in ((1000, 0.9), (1001, 0.8))]
    out = report(trials)
    assert out["status"] == "nothing_to_compare" and out["difference"] is None
    assert out["verdict"].startswith("nothing to compare: the best configuration trains")
    assert "test error 0.15 ± 0.071 over 2 seeds" in out["verdict"]
    assert out["progress"]["total"] == 2


def test_gain_points_for_the_dashboard() -> None:
    out = report(
        [
            run("as_found", 1000, test=0.90),
            run("relaxation_off", 1000, test=0.88),
            run("as_found", 1001, test=0.91),
        ]
    )
    points = gain_points(out)
    assert points["seeds"] == ["1000", "1001"]
    assert points["as_found"] == pytest.approx([0.10, 0.09])
    assert points["relaxation_off"][0] == pytest.approx(0.12)
    assert points["relaxation_off"][1] is None and points["differences"][1] is None
    assert points["ci"] is None and points["quantity"] == "test error"
    assert gain_points(report([])) is None


# --- asking for a report: store, API, CLI ---------------------------------------------------


def _job(store: JobStore, status: str, **progress: Any) -> Any:
    job = store.create_job("alice", parse_spec(SPEC).to_dict(), "g")
    if status != "queued":
        store.claim(job.id, "w")
        if progress:
            store.update_progress(job.id, progress)
        if status != "running":
            store.finish(job.id, status, best={"trial": 0} if status != "failed" else None)
    return store.get_job(job.id)


def test_store_reopens_a_finished_job_for_its_report(store: JobStore) -> None:
    done = _job(store, "succeeded")
    job = store.request_report(done.id, 3, "alice")
    assert job.status == "queued" and job.spec["report"] == {"seeds": 3}
    assert job.best == {"trial": 0} and job.finished_at is None
    with pytest.raises(ValueError, match=r"\[2, 50\], got 1"):
        store.request_report(done.id, 1)  # the stored spec must stay valid
    queued = _job(store, "queued")
    assert store.request_report(queued.id, 2).status == "queued"
    with pytest.raises(NotFound):
        store.request_report(done.id, 3, "bob")
    for status in ("running", "failed"):
        with pytest.raises(Conflict, match=status):
            store.request_report(_job(store, status).id, 2)
    with pytest.raises(Conflict, match="cancelled during its search"):
        store.request_report(_job(store, "cancelled").id, 2)
    # cancelled during its report: the report resumes
    mid_report = _job(store, "cancelled", report={"done": 1, "total": 4})
    assert store.request_report(mid_report.id, 2).status == "queued"


def test_search_is_skipped_only_when_it_finished_before(store: JobStore, tmp_path: Path) -> None:
    job = _job(store, "succeeded")
    assert search_done_before(job, tmp_path) is None  # no best.json: the search runs again
    (tmp_path / "jobs" / job.id).mkdir(parents=True)
    (tmp_path / "jobs" / job.id / "best.json").write_text(json.dumps({"trial": 0}))
    assert search_done_before(job, tmp_path)["best"] == {"trial": 0}
    assert search_done_before(_job(store, "queued"), tmp_path) is None


def test_api_and_cli_ask_for_a_report(
    store: JobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    settings = Settings(db=store.url, artifacts=tmp_path / "artifacts", max_trials=8)
    woken: list[bool] = []
    client = TestClient(create_app(settings, store, on_job_created=lambda: woken.append(True)))
    client.headers["Authorization"] = f"Bearer {store.create_token('alice')}"
    done = _job(store, "succeeded")
    url = f"/v1/jobs/{done.id}/report"
    assert client.get(url).json()["status"] == "not_requested"
    for body, field in (({"seeds": 1}, "seeds"), ({"seeds": 5}, "seeds"), ({"n": 2}, "body")):
        refused = client.post(url, json=body)  # 5 seeds = 10 runs > max_trials 8
        assert refused.status_code == 422 and refused.json()["detail"]["field"] == field
    accepted = client.post(url, json={"seeds": 3})
    assert accepted.status_code == 202 and accepted.json()["status"] == "pending"
    assert accepted.json()["seeds"] == [1000, 1001, 1002] and woken == [True]
    assert store.get_job(done.id).status == "queued"
    running = _job(store, "running")
    assert client.post(f"/v1/jobs/{running.id}/report", json={"seeds": 2}).status_code == 409
    too_many = dict(SPEC, report={"seeds": 5})
    refused = client.post("/v1/jobs", json=too_many)
    assert refused.status_code == 422 and refused.json()["detail"]["field"] == "report.seeds"

    monkeypatch.setattr(cli_client, "_http_client", lambda args: client)
    assert cli.main(["report", done.id]) == 0
    out = capsys.readouterr().out
    assert "pending" in out and "1000" in out
    with pytest.raises(SystemExit) as refused_cli:
        cli.main(["report", running.id, "--seeds", "2"])
    assert refused_cli.value.code == 1
    assert "is running" in capsys.readouterr().err


def test_cli_report_local_runs_only_the_report_of_a_finished_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    import sys
    import types

    db, artifacts = f"sqlite:///{tmp_path / 'jobs.db'}", tmp_path / "artifacts"
    store = JobStore(db)
    store.upgrade()
    done = _job(store, "succeeded")
    (artifacts / "jobs" / done.id).mkdir(parents=True)
    (artifacts / "jobs" / done.id / "best.json").write_text(json.dumps({"trial": 0}))
    calls: list[dict[str, Any]] = []
    fake = types.ModuleType("service.report")
    verdict = "relaxation helps: \u22121.0 % test error"

    def run_report(spec: Any, job_id: str, db_url: str, art: Path, **kw: Any) -> Any:
        calls.append({"seeds": spec.report.seeds, "job_id": job_id, **kw})
        return {"status": "complete", "report": {"verdict": verdict}}

    def read_report(spec: Any, job_id: str, db_url: str, **kw: Any) -> Any:
        return {"job_id": job_id, "status": "complete", "verdict": verdict, "seeds": [1000]}

    def no_search(*args: Any, **kw: Any) -> Any:
        raise AssertionError("the search of a finished job must not run again")

    fake.run_report, fake.read_report = run_report, read_report  # type: ignore[attr-defined]
    search = types.ModuleType("service.search")
    search.run_search = no_search  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "service.report", fake)
    monkeypatch.setitem(sys.modules, "service.search", search)
    argv = ["report", done.id, "--seeds", "3", "--local", "--db", db]
    assert cli.main([*argv, "--artifacts", str(artifacts)]) == 0
    assert [c["seeds"] for c in calls] == [3] and calls[0]["show_progress"] is True
    assert store.get_job(done.id).status == "succeeded"
    assert verdict in capsys.readouterr().out
    store.close()


@pytest.mark.parametrize(
    ("report_value", "message"),
    [
        ({"seeds": 1}, "greater than or equal to 2"),
        ({"seeds": 51}, "less than or equal to 50"),
        ({"seeds": True}, "valid integer"),
        ({"seeds": 3, "arms": 3}, "unknown field 'arms'"),
    ],
)
def test_spec_report_key_is_validated_naming_its_field(report_value: Any, message: str) -> None:
    from search_spaces import SpecError

    assert parse_spec(SPEC).report is None  # default off
    assert parse_spec({**SPEC, "report": {"seeds": 3}}).report.seeds == 3
    with pytest.raises(SpecError) as refused:
        parse_spec({**SPEC, "report": report_value})
    assert refused.value.field.startswith("report") and message in refused.value.message
