"""docker-compose.yml validates with the compose CLI, refuses to render without its secrets,
and keeps the deployment's shape (only the API published, nothing scheduled on the Ray head,
scalable GPU workers, one shared volume for Ray storage and artifacts).

Needs only the ``docker-compose`` binary (``config`` contacts no engine). Skipped when it is
missing, unless ``RELAXTUNE_TEST_REQUIRE_COMPOSE`` is set (then it fails).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SECRETS = {
    "POSTGRES_PASSWORD": "not-a-real-password-7f3a",
    "RELAXTUNE_DB": "postgresql+psycopg://relaxtune:not-a-real-password-7f3a@postgres:5432/relaxtune",
    "RAY_AUTH_TOKEN": "not-a-real-token-0c9d41e2",
}
PYTHON_SERVICES = ("ray-head", "ray-worker", "controller", "api")


@pytest.fixture(scope="module")
def compose_bin(missing: Any) -> str:
    path = shutil.which("docker-compose")
    if path is None:
        missing("COMPOSE", "docker-compose is not installed (scripts/install_system_deps.sh installs it)")
    return path


def compose(
    compose_bin: str, tmp_path: Path, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    """``docker-compose ARGS`` with exactly ``env`` as the secrets: none inherited from the
    caller's environment, and an empty env file so a developer's ``.env`` cannot fill them."""
    empty = tmp_path / "empty.env"
    empty.write_text("")
    base = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return subprocess.run(
        [
            compose_bin,
            "--file",
            str(COMPOSE_FILE),
            "--project-directory",
            str(ROOT),
            "--env-file",
            str(empty),
            *args,
        ],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def config(compose_bin: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The rendered configuration (all profiles) with the secrets set."""
    proc = compose(
        compose_bin, tmp_path_factory.mktemp("compose"), SECRETS, "--profile", "cpu", "config"
    )
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


def test_compose_config_is_valid_with_secrets(compose_bin: str, tmp_path: Path) -> None:
    proc = compose(compose_bin, tmp_path, SECRETS, "config", "-q")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize("secret", sorted(SECRETS))
def test_compose_refuses_a_missing_secret(compose_bin: str, tmp_path: Path, secret: str) -> None:
    env = {k: v for k, v in SECRETS.items() if k != secret}
    proc = compose(compose_bin, tmp_path, env, "config", "-q")
    assert proc.returncode != 0
    assert f"set {secret}" in proc.stderr, proc.stderr


def test_compose_services_and_shape(config: dict[str, Any]) -> None:
    services = config["services"]
    assert {"postgres", "ray-head", "ray-worker", "controller", "api"} <= set(services)

    # only the API is reachable from outside; Ray and PostgreSQL stay on the internal network
    published = {name for name, s in services.items() if s.get("ports")}
    assert published == {"api"}
    assert [p["target"] for p in services["api"]["ports"]] == [8000]
    assert config["networks"]["backend"]["internal"] is True
    for name, service in services.items():
        assert "backend" in service["networks"], name
        if name != "api":
            assert list(service["networks"]) == ["backend"], name

    # secrets come from the environment, never a literal in the file
    text = COMPOSE_FILE.read_text()
    for name in SECRETS:
        assert f"${{{name}:?" in text
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == SECRETS["POSTGRES_PASSWORD"]
    for name in ("controller", "api", "migrate"):
        assert services[name]["environment"]["RELAXTUNE_DB"] == SECRETS["RELAXTUNE_DB"]
    assert "pgdata" in config["volumes"] and "healthcheck" in services["postgres"]
    assert any(v.startswith("pgdata:") for v in services["postgres"]["volumes"])


def test_compose_ray_cluster(config: dict[str, Any]) -> None:
    services = config["services"]
    head = services["ray-head"]["command"]
    assert "ray start --head" in head and "--num-cpus=0" in head and "--block" in head

    worker = services["ray-worker"]
    assert "--address=ray-head:6379" in worker["command"] and "--block" in worker["command"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert worker.get("shm_size")
    # `--scale ray-worker=N` needs no fixed container name and no host port
    assert "container_name" not in worker and "ports" not in worker

    controller = " ".join(services["controller"]["command"])
    assert "relaxtune controller --ray-address ray-head:6379 --storage-path /shared/ray" in (
        controller
    )
    assert "relaxtune serve --no-controller" in " ".join(services["api"]["command"])
    # the API accepts GPU specs: it knows the cluster places them (service/api/routers/jobs.py)
    assert services["api"]["environment"]["RELAXTUNE_RAY_ADDRESS"] == "ray-head:6379"
    # every Ray process presents the cluster's token
    for name in ("ray-head", "ray-worker", "controller"):
        env = services[name]["environment"]
        assert env["RAY_AUTH_MODE"] == "token"
        assert env["RAY_AUTH_TOKEN"] == SECRETS["RAY_AUTH_TOKEN"]


def test_compose_one_image_and_shared_storage(config: dict[str, Any]) -> None:
    services = config["services"]
    images = {services[name]["image"] for name in PYTHON_SERVICES}
    assert len(images) == 1, images
    # built from the Dockerfile's full target (its `api` target holds no torch, escnn or Ray)
    assert {services[name]["build"].get("target") for name in PYTHON_SERVICES} == {"full"}
    for name in PYTHON_SERVICES:
        assert any(v.startswith("shared:/shared") for v in services[name]["volumes"]), name
        env = services[name]["environment"]
        assert env["RELAXTUNE_ARTIFACTS"].startswith("/shared/")
        assert env["RELAXTUNE_RAY_STORAGE"].startswith("/shared/")
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.startswith("#") and "FROM python:3.11-slim" in dockerfile
    assert "gfortran" in dockerfile and "ARG TORCH_VARIANT" in dockerfile
