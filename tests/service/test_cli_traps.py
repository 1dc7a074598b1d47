"""CLI slips that used to mislead: a pasted token with a trailing space, ``--url …/v1``, a
database file that does not exist (silently created before), a database in a missing folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from service import cli


def run(*argv: str) -> int:
    try:
        return cli.main(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)


def test_token_commands_refuse_a_missing_database_unless_create(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "jobs.db"
    db = ["--db", f"sqlite:///{path}"]
    for argv in (["token", "list"], ["token", "create", "alice"], ["quota", "show"]):
        assert run(*argv, *db) == 2, argv
        err = capsys.readouterr().err
        assert f"database {path} does not exist" in err and "--create" in err
        assert not path.exists()
    assert run("token", "create", "alice", "--create", *db) == 0
    captured = capsys.readouterr()
    assert path.exists() and f"database: sqlite:///{path}" in captured.err
    assert captured.out.strip().startswith("rt_")
    assert run("token", "list", *db) == 0  # now it exists; the command says which one
    captured = capsys.readouterr()
    assert "alice\ttenant=alice" in captured.out and f"sqlite:///{path}" in captured.err


def test_a_database_in_a_missing_folder_names_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "no" / "such" / "jobs.db"
    for argv in (["db", "upgrade"], ["token", "create", "alice", "--create"]):
        assert run(*argv, "--db", f"sqlite:///{path}") == 2
        err = capsys.readouterr().err
        assert f"folder {path.parent} does not exist" in err and "OperationalError" not in err
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1/", "http://h/v1/jobs", "h:80"]
)
def test_a_url_that_is_not_the_base_url_says_what_is_expected(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("status", "--url", url, "--token", "rt_x_y") == 2
    err = capsys.readouterr().err
    assert "base URL" in err and "http://127.0.0.1:8000" in err


def test_a_malformed_token_is_never_printed(capsys: pytest.CaptureFixture[str]) -> None:
    secret = "rt_0123456789abcdef_s3cr3t-value"
    assert run("status", "--url", "http://127.0.0.1:9", "--token", f"{secret[:10]} {secret}") == 2
    err = capsys.readouterr().err
    assert "spaces or control characters" in err and "s3cr3t" not in err
    # a trailing space or newline is stripped; an unreachable service never echoes the token
    assert run("status", "--url", "http://127.0.0.1:9", "--token", f"{secret} \n") == 1
    err = capsys.readouterr().err
    assert "cannot reach the service" in err and "s3cr3t" not in err


SPEC = """\
name: local
task: rotated_mnist
model: {group: C4, widht: 4}
data: {train_size: 100, val_size: 50, test_size: 50, cache_dir: CACHE}
search_space: relax
budget: {trials: 2, epochs: 1}
objective: {metric: val_accuracy, mode: max}
"""


@pytest.mark.parametrize("command", ["run", "train"])
def test_local_commands_refuse_a_misspelt_spec_before_doing_anything(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.replace("CACHE", str(tmp_path / "cache")))  # a local path is fine
    db = tmp_path / "jobs.db"
    extra = ["--db", f"sqlite:///{db}"] if command == "run" else ["--out", str(tmp_path / "o")]
    assert run(command, str(spec), *extra) == 2
    err = capsys.readouterr().err
    assert "model.widht: unknown key; did you mean 'width'?" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]  # nothing created
