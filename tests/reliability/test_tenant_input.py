"""Hostile tenant specs against a real ``relaxtune serve`` over HTTP, with a tenant token.

Each refusal is a 422 naming the field; no job row is written and no file appears, changes or
disappears anywhere the server could write (the test's folder: database, artifacts, dataset
root, cache root and an "outside" folder the hostile paths aim at, plus the default cache).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from _reliability_support import free_port, kill_group, start_api, tiny_spec

from service import cli
from service.store import JobStore

OUTSIDE = "relaxtune-outside"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("tenant-input")
    data_root = root / "data"
    (data_root / "rotated_mnist" / "fashion").mkdir(parents=True)
    outside = root / OUTSIDE
    outside.mkdir()
    (outside / "secret.txt").write_text("not for tenants")
    # a dataset entry that is a symlink leaving the dataset root
    (data_root / "rotated_mnist" / "escape").symlink_to(outside)
    db = f"sqlite:///{root / 'jobs.db'}"
    store = JobStore(db)
    store.upgrade()
    token = store.create_token("alice")  # a tenant, not an admin
    port = free_port()
    api = start_api(
        db,
        root / "artifacts",
        port,
        root / "api.log",
        RELAXTUNE_DATA_ROOT=str(data_root),
        RELAXTUNE_CACHE=str(root / "cache"),
        RELAXTUNE_MAX_CONCURRENT_JOBS="50",
        RELAXTUNE_NODE_CPUS="6",  # the cluster's largest node, known to the service
    )
    try:
        yield {
            "root": root,
            "outside": outside,
            "store": store,
            "db": db,
            "url": f"http://127.0.0.1:{port}",
            "headers": {"Authorization": f"Bearer {token}"},
        }
    finally:
        kill_group(api)
        store.close()


def listing(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root`` (the database and the log excepted: the server
    writes those by design), with size and mtime, symlinks not followed."""
    seen: dict[str, tuple[int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if rel.startswith("jobs.db") or rel == "api.log":
                continue
            st = path.lstat()
            seen[rel] = (st.st_size, st.st_mtime_ns)
    return seen


def default_cache() -> set[str]:
    cache = Path.home() / ".cache" / "relaxtune"
    return {str(p) for p in cache.rglob("*")} if cache.is_dir() else set()


def job_count(store: JobStore) -> int:
    with store.engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM relaxtune_jobs")).scalar_one()


def submit(server: dict[str, Any], spec: dict[str, Any] | str) -> httpx.Response:
    if isinstance(spec, str):
        return httpx.post(
            f"{server['url']}/v1/jobs",
            content=spec,
            headers={**server["headers"], "Content-Type": "application/yaml"},
            timeout=30,
        )
    return httpx.post(f"{server['url']}/v1/jobs", json=spec, headers=server["headers"], timeout=30)


def assert_refused(server: dict[str, Any], spec: dict[str, Any] | str, field: str) -> str:
    before, cache_before = listing(server["root"]), default_cache()
    jobs_before = job_count(server["store"])
    response = submit(server, spec)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail["field"] == field, detail
    assert job_count(server["store"]) == jobs_before
    assert listing(server["root"]) == before
    assert default_cache() == cache_before
    return str(detail["message"])


def rotmnist(**data: Any) -> dict[str, Any]:
    return tiny_spec(
        task="rotated_mnist",
        model={"group": "C4", "width": 4},
        data={"train_size": 100, "val_size": 50, "test_size": 50, **data},
        objective={"metric": "val_accuracy", "mode": "max"},
    )


# -- item: complete validation at submit --------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"model": {"widht": 4}}, "model.widht", "did you mean 'width'?"),
        ({"budjet": {"trials": 2, "epochs": 1}}, "budjet", "did you mean 'budget'?"),
        (
            {"objective": {"metric": "val_acuracy", "mode": "max"}},
            "objective.metric",
            "did you mean 'val_accuracy'?",
        ),
        ({"model": {"width": 100_000}}, "model.width", "<= 64"),
        ({"model": {"depth": 200}}, "model.depth", "<= 12"),
        ({"model": {"kernel_size": 99}}, "model.kernel_size", "<= 13"),
        ({"model": {"width": "8"}}, "model.width", "integer"),
        ({"data": {"train_size": 10**9}}, "data.train_size", "<= 60000"),
        ({"objective": {"metric": "val_accuracy", "mode": "min"}}, "objective.mode", "max"),
    ],
)
def test_incomplete_or_misspelt_specs_are_refused_at_submit(
    server: dict[str, Any], changes: dict[str, Any], field: str, words: str
) -> None:
    spec = rotmnist() | changes
    assert words in assert_refused(server, spec, field)


def test_yaml_body_gets_the_same_answer(server: dict[str, Any]) -> None:
    text = (
        "name: x\ntask: rotated_mnist\nmodel: {widht: 4}\nsearch_space: relax\n"
        "budget: {trials: 2, epochs: 1}\nobjective: {metric: val_accuracy, mode: max}\n"
    )
    assert "did you mean 'width'?" in assert_refused(server, text, "model.widht")


# -- item: server-side paths are not tenant input -----------------------------------------


def hostile_paths(root: Path) -> list[tuple[dict[str, Any], str]]:
    outside = str(root / OUTSIDE)
    cases: list[tuple[dict[str, Any], str]] = []
    for key in ("cache_dir", "data_dir"):
        for value in (
            "/srv/elsewhere",
            "/etc",
            outside,
            f"../{OUTSIDE}",
            "../../../../etc",
            "~/.ssh",
            "~root",
            "%2e%2e%2f%2e%2e%2fetc",
            "..%2F..%2Fetc",
            f"file://{outside}",
            "cache",  # a relative name: still a server path
            "C:\\Windows",
        ):
            cases.append(({key: value}, f"data.{key}"))
    for value in (
        "..",
        ".",
        "../fashion",
        f"../../{OUTSIDE}",
        "/etc",
        outside,
        "~",
        "~/fashion",
        "%2e%2e",
        "%2e%2e%2f%2e%2e%2fetc",
        f"file://{outside}",
        "fashion/../../x",
        "fashion\x00",
        "escape",  # a symlink inside the dataset root pointing outside it
        "missing",
    ):
        cases.append(({"dataset": value}, "data.dataset"))
    # path options no schema declares (a future one, a plugin's forgotten one)
    for key in ("output_dir", "checkpoint_path", "log_file", "storage_url"):
        cases.append(({key: outside}, f"data.{key}"))
    return cases


def test_no_path_like_value_reaches_the_server(server: dict[str, Any]) -> None:
    cases = hostile_paths(server["root"])
    assert len(cases) > 40
    for data, field in cases:
        message = assert_refused(server, rotmnist(**data), field)
        assert str(server["root"] / "data") not in message, message  # no server path leaks
    # model options are not a way round it either
    spec = rotmnist() | {"model": {"group": "C4", "weights_path": str(server["outside"])}}
    assert_refused(server, spec, "model.weights_path")
    spec = tiny_spec(data={"train_size": 100, "val_size": 50, "test_size": 50, "cache_dir": "/"})
    assert_refused(server, spec, "data.cache_dir")


def test_a_dataset_is_named_and_found_under_the_data_root(server: dict[str, Any]) -> None:
    response = submit(server, rotmnist(dataset="fashion"))
    assert response.status_code == 201, response.text
    assert response.json()["spec"]["data"]["dataset"] == "fashion"
    message = assert_refused(server, rotmnist(dataset="fashon"), "data.dataset")
    assert "did you mean 'fashion'?" in message


# -- item: quotas and caps ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"budget": {"trials": 256, "epochs": 200}}, "budget", "max_trial_epochs"),
        ({"budget": {"trials": 300, "epochs": 1}}, "budget.trials", "max_trials"),
        ({"budget": {"trials": 2, "epochs": 201}}, "budget.epochs", "max_epochs"),
        (
            {"budget": {"trials": 256, "epochs": 1, "max_concurrent": 256}},
            "budget.max_concurrent",
            "tenant 'alice' may use at most 8",
        ),
        ({"retries": 100}, "retries", "tenant 'alice' may use at most 3"),
        ({"resources": {"cpu": 0.001}}, "resources.cpu", "at least 0.25"),
        ({"resources": {"cpu": 64}}, "resources.cpu", "max_trial_cpu"),
        ({"resources": {"cpu": 7}}, "resources.cpu", "largest node of the cluster has 6"),
    ],
)
def test_quotas_and_caps_refuse_naming_field_and_limit(
    server: dict[str, Any], changes: dict[str, Any], field: str, words: str
) -> None:
    assert words in assert_refused(server, rotmnist() | changes, field)


def test_the_hostile_spec_of_the_report_is_refused(server: dict[str, Any]) -> None:
    """Everything at once: the first problem is named, nothing is written."""
    spec = rotmnist() | {
        "model": {"group": "C4", "width": 100_000, "depth": 200, "kernel_size": 99},
        "data": {"train_size": 10**9, "val_size": 10**9, "test_size": 10**9},
        "budget": {"trials": 256, "epochs": 200, "max_concurrent": 256},
        "resources": {"cpu": 0.001},
        "retries": 100,
    }
    assert_refused(server, spec, "model.width")


def test_an_admin_raises_a_tenant_quota_from_the_cli(
    server: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    spec = rotmnist() | {"retries": 10, "budget": {"trials": 300, "epochs": 1}}
    assert "max_trials" in assert_refused(server, spec, "budget.trials")
    db = ["--db", server["db"]]
    assert cli.main(["quota", "set", "alice", "max_trials=512", "max_retries=10", *db]) == 0
    assert "max_trials=512 (tenant)" in capsys.readouterr().out
    assert cli.main(["token", "list", *db]) == 0
    assert "tenant=alice\tadmin=False\tactive\tquota=max_retries=10,max_trials=512" in (
        capsys.readouterr().out
    )
    response = submit(server, spec)
    assert response.status_code == 201, response.text
    # a raised quota is still bounded by what the cluster can place
    assert cli.main(["quota", "set", "alice", "max_trial_cpu=64", *db]) == 0
    assert "largest node" in assert_refused(
        server, rotmnist() | {"resources": {"cpu": 64}}, "resources.cpu"
    )
    with pytest.raises(SystemExit) as info:
        cli.main(["quota", "set", "alice", "max_trails=5", *db])
    assert info.value.code == 2 and "did you mean 'max_trials'?" in capsys.readouterr().err
    reset = ["max_trials=default", "max_retries=default", "max_trial_cpu=default"]
    assert cli.main(["quota", "set", "alice", *reset, *db]) == 0
    assert "max_trials" in assert_refused(server, spec, "budget.trials")


# -- item: CLI traps, against the real server ------------------------------------------------


def test_cli_strips_a_pasted_token_and_explains_a_wrong_base_url(
    server: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    token = server["headers"]["Authorization"].removeprefix("Bearer ")
    assert cli.main(["status", "--url", server["url"], "--token", token + " \n"]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        cli.main(["status", "--url", server["url"] + "/api", "--token", token])
    err = capsys.readouterr().err
    assert info.value.code == 1 and "no such endpoint" in err and "base URL" in err
    assert token not in err
