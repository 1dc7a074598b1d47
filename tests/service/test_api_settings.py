"""Settings: environment variables, limits, and refusing placeholder secrets in production."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import Settings


def test_defaults() -> None:
    settings = Settings(_env_file=None)
    assert settings.db == "sqlite:///relaxtune.db"
    assert settings.artifacts == Path("./artifacts")
    assert settings.max_body_bytes == 256 * 1024
    assert settings.env == "development"


def test_environment_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAXTUNE_DB", "postgresql+psycopg://u:pw@db/relaxtune")
    monkeypatch.setenv("RELAXTUNE_MAX_TRIALS", "12")
    monkeypatch.setenv("RELAXTUNE_RAY_ADDRESS", "ray://head:10001")
    settings = Settings()
    assert settings.db.endswith("@db/relaxtune") and settings.max_trials == 12
    assert settings.ray_address == "ray://head:10001"
    assert Settings(max_trials=3).max_trials == 3  # arguments win over the environment


@pytest.mark.parametrize(
    "values",
    [
        {"db": "postgresql+psycopg://relaxtune:changeme@db/relaxtune"},
        {"db": "postgresql+psycopg://postgres:postgres@db/relaxtune"},
        {"admin_token": "changeme"},
        {"admin_token": "short-token"},
    ],
)
def test_production_refuses_placeholder_secrets(values: dict[str, str]) -> None:
    Settings(env="development", **values)  # fine while developing
    with pytest.raises(ValidationError, match="placeholder"):
        Settings(env="production", **values)


def test_production_accepts_real_secrets() -> None:
    settings = Settings(
        env="production",
        db="postgresql+psycopg://relaxtune:Zq8r-2mX9v@db/relaxtune",
        admin_token="k3Jx9pQ2-wLr7Yt5Nv8sBz4Hc6Fd1Gm0",
    )
    assert settings.env == "production"


@pytest.mark.parametrize(
    "field", ["max_body_bytes", "max_trials", "max_concurrent_jobs", "api_threads"]
)
def test_limits_must_be_positive(field: str) -> None:
    with pytest.raises(ValidationError):
        Settings(**{field: 0})
