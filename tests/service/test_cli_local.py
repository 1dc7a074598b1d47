"""The database and worker commands of ``relaxtune``: how they wire their arguments.

``run``, ``export``, ``train`` and ``verify`` call into the search driver and the training code;
here those are replaced by fakes (``sys.modules`` entries), so these tests check the CLI's
own logic: job rows, resume, exit codes and printed summaries.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from service import cli
from service.best_trial import BestTrial
from service.store import JobStore

SPEC_YAML = """\
name: tiny
task: rotated_mnist
model: {group: C4}
search_space: relax
budget: {trials: 2, epochs: 1}
objective: {metric: val_accuracy, mode: max}
"""


def relaxtune(*argv: str) -> int:
    try:
        return cli.main(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    monkeypatch.setenv("RELAXTUNE_DB", url)
    monkeypatch.setenv("RELAXTUNE_ARTIFACTS", str(tmp_path / "artifacts"))
    return url


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC_YAML)
    return path


@pytest.fixture
def fake_search(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """Stand-in ``service.search`` and ``service.export`` modules recording their calls."""
    calls: list[dict[str, Any]] = []
    module = types.ModuleType("service.search")
    export = types.ModuleType("service.export")
    state = types.SimpleNamespace(calls=calls, result={"status": "succeeded", "best": {"n": 1}})

    def run_search(spec: Any, job_id: str, db_url: str, artifacts: Path, **kw: Any) -> Any:
        calls.append({"spec": spec, "job_id": job_id, "db_url": db_url, **kw})
        kw["on_progress"]({"complete": 2, "total": 2, "best_value": 0.5})
        if isinstance(state.result, Exception):
            raise state.result
        return state.result

    def export_best(job_id: str, db_url: str, artifacts: Path) -> BestTrial:
        calls.append({"export": job_id, "db_url": db_url, "artifacts": artifacts})
        return BestTrial(trial=0, params={}, checkpoint=str(artifacts / "jobs" / job_id / "best"))

    module.run_search = run_search  # type: ignore[attr-defined]
    export.export_best = export_best  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "service.search", module)
    monkeypatch.setitem(sys.modules, "service.export", export)
    return state


def test_db_upgrade_and_tokens(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert relaxtune("db", "upgrade") == 0
    assert relaxtune("token", "create", "ops", "--tenant", "team", "--admin") == 0
    captured = capsys.readouterr()
    token = captured.out.strip().splitlines()[-1]
    assert "shown only this once" in captured.err
    store = JobStore(db)
    principal = store.authenticate(token)
    assert principal is not None and principal.tenant == "team" and principal.admin
    assert relaxtune("token", "create", "ops") == 2  # duplicate name
    assert relaxtune("token", "create", "bad name!") == 2
    assert relaxtune("token", "list") == 0
    assert "ops\ttenant=team" in capsys.readouterr().out
    assert relaxtune("token", "revoke", "ops") == 0
    assert store.authenticate(token) is None
    assert relaxtune("token", "revoke", "ops") == 2
    store.close()


def test_bad_database_url_is_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert relaxtune("db", "upgrade", "--db", "nonsense://") == 2
    assert "cannot use database" in capsys.readouterr().err


def test_run_creates_a_local_job_and_prints_the_summary(
    db: str,
    spec_file: Path,
    fake_search: types.SimpleNamespace,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert relaxtune("run", str(spec_file), "--ray-address", "ray://x:1") == 0
    out = capsys.readouterr().out
    (call,) = fake_search.calls
    assert call["show_progress"] is True and call["ray_address"] == "ray://x:1"
    assert call["spec"].name == "tiny" and call["db_url"] == db
    (job,) = JobStore(db).list_jobs()
    # the search prints its own summary table; the command ends with the job's outcome
    assert out.strip().splitlines()[-1].startswith(f"job {job.id} succeeded")
    store = JobStore(db)
    (job,) = store.list_jobs()
    assert job.tenant == "local" and job.status == "succeeded" and job.best == {"n": 1}
    assert job.progress["best_value"] == 0.5
    store.close()


def test_run_failure_exits_1_and_resume_with_job(
    db: str,
    spec_file: Path,
    fake_search: types.SimpleNamespace,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake_search.result = RuntimeError("trainable crashed")
    assert relaxtune("run", str(spec_file)) == 1
    assert "trainable crashed" in capsys.readouterr().err
    store = JobStore(db)
    (job,) = store.list_jobs()
    assert job.status == "failed"
    fake_search.result = {"status": "succeeded", "best": None}
    assert relaxtune("run", "--job", job.id) == 0
    assert fake_search.calls[-1]["job_id"] == job.id
    assert store.get_job(job.id).status == "succeeded"
    assert relaxtune("run", "--job", job.id) == 2  # finished jobs cannot be resumed
    assert relaxtune("run", "--job", "0123456789abcdef") == 2
    store.close()


def test_run_bad_spec_exits_2(
    db: str, tmp_path: Path, fake_search: types.SimpleNamespace, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(SPEC_YAML.replace("group: C4", "group: C4, bogus: {x: [}"))
    assert relaxtune("run", str(bad)) == 2
    assert "spec field" in capsys.readouterr().err
    assert relaxtune("run") == 2
    assert fake_search.calls == []


def test_export_wires_arguments(
    db: str, fake_search: types.SimpleNamespace, capsys: pytest.CaptureFixture[str]
) -> None:
    assert relaxtune("export", "0123456789abcdef") == 0
    (call,) = fake_search.calls
    assert call["export"] == "0123456789abcdef" and call["db_url"] == db
    assert "checkpoint" in json.loads(capsys.readouterr().out)
    assert relaxtune("export", "../etc") == 2


@pytest.fixture
def fake_training(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    module = types.ModuleType("workers.training")
    state = types.SimpleNamespace(calls=[], report={"passed": True})

    class CheckpointError(Exception):
        pass

    def verify_checkpoint(directory: Any, **kwargs: Any) -> dict[str, Any]:
        state.calls.append(("verify", directory, kwargs))
        if state.report is None:
            raise CheckpointError("missing model.ts")
        return state.report

    def cli_train(*args: Any) -> dict[str, Any]:
        state.calls.append(("train", *args))
        return {"checkpoint": "runs/x"}

    module.CheckpointError = CheckpointError  # type: ignore[attr-defined]
    module.verify_checkpoint = verify_checkpoint  # type: ignore[attr-defined]
    module.cli_train = cli_train  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "workers.training", module)
    return state


def test_verify_exit_codes(
    tmp_path: Path, fake_training: types.SimpleNamespace, capsys: pytest.CaptureFixture[str]
) -> None:
    assert relaxtune("verify", str(tmp_path)) == 0
    assert json.loads(capsys.readouterr().out) == {"passed": True}
    fake_training.report = {"passed": False, "max_error": 0.3}
    assert relaxtune("verify", str(tmp_path)) == 1
    fake_training.report = None
    assert relaxtune("verify", str(tmp_path)) == 1
    assert "missing model.ts" in capsys.readouterr().err
    assert relaxtune("verify", str(tmp_path / "nope")) == 2
    # the tolerance is the verifier's: its own default, or the option, never the folder's
    assert [c[2] for c in fake_training.calls] == [{}, {}, {}]
    fake_training.report = {"passed": True}
    assert relaxtune("verify", str(tmp_path), "--tolerance", "0.5") == 0
    assert fake_training.calls[-1] == ("verify", str(tmp_path), {"tolerance": 0.5})


def test_train_wires_arguments(
    spec_file: Path, tmp_path: Path, fake_training: types.SimpleNamespace
) -> None:
    argv = ["train", str(spec_file), "--set", "relax.schedule=triangular", "--set", "optim.lr=0.01"]
    assert relaxtune(*argv, "--seed", "3", "--out", "o", "--epochs", "2") == 0
    assert fake_training.calls == [
        ("train", str(spec_file), ["relax.schedule=triangular", "optim.lr=0.01"], 3, "o", 2)
    ]
    assert relaxtune("train", str(spec_file), "--set", "no-equals-sign") == 2
    assert relaxtune("train", str(tmp_path / "missing.yaml")) == 2
