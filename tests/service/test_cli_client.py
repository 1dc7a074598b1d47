"""The client commands of ``relaxtune`` against the in-process API, plus safe unpacking."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service import cli
from service.api import create_app
from service.artifacts import UnsafeArchive, best_dir, safe_extract
from service.cli import _client as cli_client
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


@pytest.fixture
def settings(store: JobStore, tmp_path: Path) -> Settings:
    return Settings(db=store.url, artifacts=tmp_path / "artifacts")


@pytest.fixture
def token(store: JobStore) -> str:
    return store.create_token("alice")


@pytest.fixture
def relaxtune(
    settings: Settings, store: JobStore, token: str, monkeypatch: pytest.MonkeyPatch
) -> Any:
    """``relaxtune(*argv) -> exit code``, with HTTP going to the in-process app."""
    app = create_app(settings, store)

    def client(args: Any) -> TestClient:
        headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
        return TestClient(app, base_url=args.url, headers=headers)

    monkeypatch.setattr(cli_client, "_http_client", client)
    monkeypatch.setenv("RELAXTUNE_TOKEN", token)
    monkeypatch.setenv("RELAXTUNE_URL", "http://relaxtune.test")

    def run(*argv: str) -> int:
        try:
            return cli.main(list(argv))
        except SystemExit as exc:
            return int(exc.code or 0)

    return run


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC_YAML)
    return path


def test_submit_and_status(
    relaxtune: Any, spec_file: Path, store: JobStore, capsys: pytest.CaptureFixture[str]
) -> None:
    assert relaxtune("submit", "-q", str(spec_file)) == 0
    job_id = capsys.readouterr().out.strip()
    assert store.get_job(job_id, tenant="alice").name == "tiny"
    assert relaxtune("status") == 0
    assert job_id in capsys.readouterr().out
    assert relaxtune("status", job_id, "--json") == 0
    assert json.loads(capsys.readouterr().out)["status"] == "queued"
    assert relaxtune("status", job_id) == 0
    out = capsys.readouterr().out
    assert "queued" in out and "0/2 trials" in out


def test_submit_json_spec(relaxtune: Any, tmp_path: Path, store: JobStore) -> None:
    path = tmp_path / "spec.json"
    path.write_text(
        json.dumps(
            {
                "name": "tiny-json",
                "task": "rotated_mnist",
                "search_space": "relax",
                "budget": {"trials": 2, "epochs": 1},
                "objective": {"metric": "val_accuracy", "mode": "max"},
            }
        )
    )
    assert relaxtune("submit", str(path)) == 0
    assert [j.name for j in store.list_jobs()] == ["tiny-json"]


def test_submit_bad_spec_exits_2_naming_the_field(
    relaxtune: Any, tmp_path: Path, store: JobStore, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(SPEC_YAML.replace("trials: 2", "trials: -3"))
    assert relaxtune("submit", str(path)) == 2
    assert "spec field budget.trials" in capsys.readouterr().err
    assert store.list_jobs() == []
    assert relaxtune("submit", str(tmp_path / "missing.yaml")) == 2
    assert "not found" in capsys.readouterr().err


def test_missing_token_is_a_clear_error(
    relaxtune: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("RELAXTUNE_TOKEN")
    assert relaxtune("status") == 1
    assert "unauthorized" in capsys.readouterr().err
    assert relaxtune("status", "--token", "rt_bogus_token") == 1


def test_unknown_job_exits_1(relaxtune: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert relaxtune("status", "0123456789abcdef") == 1
    assert "not found" in capsys.readouterr().err


def test_watch_ends_with_the_job(
    relaxtune: Any, store: JobStore, capsys: pytest.CaptureFixture[str]
) -> None:
    ok = store.create_job("alice", {"budget": {"trials": 2}}, "ok")
    store.claim_next("w")
    store.update_progress(ok.id, {"complete": 2, "total": 2, "best_value": 0.9})
    store.finish(ok.id, "succeeded")
    assert relaxtune("status", ok.id, "--watch", "--interval", "0.01") == 0
    assert "succeeded" in capsys.readouterr().out
    bad = store.create_job("alice", {}, "bad")
    store.claim_next("w")
    store.finish(bad.id, "failed", error="ValueError: nope")
    assert relaxtune("status", bad.id, "--watch", "--interval", "0.01") == 1
    assert "ValueError: nope" in capsys.readouterr().out


def test_cancel(relaxtune: Any, store: JobStore, capsys: pytest.CaptureFixture[str]) -> None:
    job = store.create_job("alice", {}, "x")
    assert relaxtune("cancel", job.id) == 0
    assert "cancelled" in capsys.readouterr().out
    assert store.get_job(job.id).status == "cancelled"
    assert relaxtune("cancel", job.id) == 1  # already finished: 409
    assert "already cancelled" in capsys.readouterr().err


def test_best_downloads_and_unpacks(
    relaxtune: Any, store: JobStore, settings: Settings, tmp_path: Path
) -> None:
    job = store.create_job("alice", {}, "x")
    store.claim_next("w")
    store.finish(job.id, "succeeded")
    folder = best_dir(settings.artifacts, job.id)
    folder.mkdir(parents=True)
    for name in ("config.json", "metrics.json", "certificate.json"):
        (folder / name).write_text(json.dumps({"file": name}))
    (folder / "model.ts").write_bytes(b"torchscript")
    out = tmp_path / "downloaded"
    assert relaxtune("best", job.id, "--out", str(out)) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "certificate.json",
        "config.json",
        "metrics.json",
        "model.ts",
    ]
    assert (out / "model.ts").read_bytes() == b"torchscript"
    assert relaxtune("best", job.id, "--out", str(out)) == 2  # not empty
    assert relaxtune("best", job.id, "--out", str(out), "--force") == 0


def test_best_before_export_explains(
    relaxtune: Any, store: JobStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = store.create_job("alice", {}, "x")
    assert relaxtune("best", job.id, "--out", str(tmp_path / "out")) == 1
    assert "is queued" in capsys.readouterr().err


def test_dashboard_written(relaxtune: Any, store: JobStore, tmp_path: Path) -> None:
    job = store.create_job("alice", {"objective": {"metric": "val_accuracy", "mode": "max"}}, "x")
    out = tmp_path / "pages" / "dash.html"
    assert relaxtune("dashboard", job.id, "--out", str(out)) == 0
    assert job.id in out.read_text()


def test_service_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["status", "--url", "http://127.0.0.1:9", "--token", "t"])
    assert exc.value.code == 1
    assert "cannot reach the service" in capsys.readouterr().err


# --- safe unpacking ------------------------------------------------------------------------


def _zip(members: dict[str, bytes], symlink: str | None = None) -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        if symlink is not None:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = 0o120777 << 16  # a symlink entry
            archive.writestr(info, "/etc/passwd")
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize(
    "evil", ["../escape.txt", "/abs/path.txt", "sub/../../escape.txt", "..\\win.txt", "C:/x"]
)
def test_safe_extract_refuses_escaping_members(tmp_path: Path, evil: str) -> None:
    target = tmp_path / "out"
    with pytest.raises(UnsafeArchive):
        safe_extract(_zip({"ok.txt": b"fine", evil: b"bad"}), target)
    assert not target.exists()  # nothing written: members are checked first
    assert not (tmp_path / "escape.txt").exists()


def test_safe_extract_refuses_links(tmp_path: Path) -> None:
    with pytest.raises(UnsafeArchive, match="not a plain file"):
        safe_extract(_zip({"ok.txt": b"fine"}, symlink="link"), tmp_path / "out")


def test_safe_extract_nested_folders(tmp_path: Path) -> None:
    written = safe_extract(_zip({"a/b/c.txt": b"deep", "top.txt": b"t"}), tmp_path / "out")
    assert (tmp_path / "out" / "a" / "b" / "c.txt").read_bytes() == b"deep"
    assert len(written) == 2


def test_safe_extract_returns_paths_under_a_relative_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    written = safe_extract(_zip({"m.json": b"{}"}), Path("rel"))
    assert written == [Path("rel") / "m.json"]
