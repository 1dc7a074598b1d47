"""Service configuration: one pydantic-settings class read from ``RELAXTUNE_*`` variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["PLACEHOLDER_SECRETS", "Settings"]

#: Values that appear in examples and compose files; a production deployment still using
#: one of them as a password or token has forgotten to set a real secret.
PLACEHOLDER_SECRETS = frozenset(
    {
        "changeme",
        "change-me",
        "changethis",
        "secret",
        "password",
        "postgres",
        "relaxtune",
        "example",
        "admin",
        "test",
    }
)


class Settings(BaseSettings):
    """Everything the API, the controller and the database commands need to know.

    Each field can be set from the environment as ``RELAXTUNE_<FIELD>`` (for example
    ``RELAXTUNE_DB=postgresql+psycopg://…``); keyword arguments override the environment.
    """

    model_config = SettingsConfigDict(env_prefix="RELAXTUNE_", extra="ignore")

    env: Literal["development", "production"] = "development"
    db: str = Field("sqlite:///relaxtune.db", description="SQLAlchemy URL of the job database")
    artifacts: Path = Field(Path("./artifacts"), description="artifact folder (best checkpoints)")
    data_root: Path | None = Field(
        None,
        description="dataset root: a spec's data.dataset NAME is <data_root>/<task>/NAME; "
        "specs submitted over HTTP cannot name any other path",
    )
    cache: Path | None = Field(
        None,
        description="cache root of generated data (rotated digits, simulated systems); "
        "default ~/.cache/relaxtune of the user running the workers",
    )
    max_body_bytes: int = Field(256 * 1024, gt=0, description="largest accepted request body")
    api_threads: int = Field(
        4,
        gt=0,
        description="threads that run the API's blocking endpoint work (database reads, pages); "
        "the work is mostly CPU under one GIL, so more threads add contention, not throughput "
        "(raise it for a remote database with high latency)",
    )
    warm_up_dashboards: bool = Field(
        True,
        description="load plotly.js, scikit-learn and the page templates in a background "
        "thread at startup, so that the first dashboard request does not wait for them",
    )

    # Per-tenant limits, checked when a job is submitted.
    max_trials: int = Field(256, gt=0, description="largest budget.trials of one job")
    max_epochs: int = Field(200, gt=0, description="largest budget.epochs of one job")
    max_concurrent_jobs: int = Field(
        4, gt=0, description="most queued + running jobs one tenant may have"
    )
    max_trial_epochs: int = Field(
        4096, gt=0, description="largest budget.trials × budget.epochs of one job"
    )
    max_concurrent: int = Field(8, gt=0, description="largest budget.max_concurrent of one job")
    max_trial_cpu: float = Field(8.0, gt=0, description="largest resources.cpu of one trial")
    max_trial_gpu: float = Field(1.0, ge=0, description="largest resources.gpu of one trial")
    max_retries: int = Field(3, ge=0, description="largest retries (per trial) of one job")
    min_trial_cpu: float = Field(
        0.25,
        gt=0,
        description="smallest resources.cpu of one trial (not per tenant): a tiny share packs "
        "hundreds of trials onto one core",
    )
    node_cpus: float | None = Field(
        None,
        gt=0,
        description="CPUs of the largest Ray node, when known: a trial asking for more can "
        "never be placed, so it is refused at submission (not per tenant)",
    )
    node_gpus: float | None = Field(
        None, ge=0, description="GPUs of the largest Ray node, when known (as node_cpus)"
    )

    # Scheduling: how many jobs run at once and how tenants share the cluster.
    max_running_jobs: int = Field(
        4,
        gt=0,
        description="most jobs one controller runs at once (each in its own driver process), "
        "whatever room the cluster has left",
    )
    share_weight: float = Field(
        1.0,
        gt=0,
        description="a tenant's weight in the fair share of the cluster (per tenant: a tenant "
        "of weight 2 gets twice the running trials of one of weight 1 when both have work)",
    )
    max_running_trials: int = Field(
        64, gt=0, description="most trials one tenant's running jobs hold at once (per tenant)"
    )
    driver_restarts: int = Field(
        3,
        ge=0,
        description="how often a job whose driver process died is requeued to resume before "
        "it fails",
    )
    ray_num_cpus: int | None = Field(
        None,
        gt=0,
        description="CPUs of the local Ray the controller starts (default: all of this "
        "machine's); unused with ray_address",
    )

    admin_token: SecretStr | None = Field(
        None,
        description="optional static admin bearer token (bootstraps a fresh deployment); "
        "prefer tokens made with `relaxtune token create`",
    )

    session_secret: SecretStr | None = Field(
        None,
        description="key that signs browser session cookies (at least 32 characters); default "
        "a random key per process, so sessions end at a restart: set one when several API "
        "processes serve one address",
    )
    dashboard_refresh_s: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="how often a running job's page asks for changes (an unchanged answer is "
        "a 304 of a few hundred bytes)",
    )
    session_hours: float = Field(
        12.0, gt=0, le=24 * 30, description="lifetime of a browser session (signed cookie)"
    )

    ray_address: str | None = Field(None, description="Ray cluster address; None starts Ray")
    ray_storage: str | None = Field(None, description="Ray Tune storage path (shared storage)")

    worker_id: str | None = Field(
        None, description="controller identity used to resume its own jobs (default: hostname)"
    )
    heartbeat_s: float = Field(10.0, gt=0, description="controller heartbeat period")
    stale_after_s: float = Field(
        600.0, gt=0, description="a running job without heartbeat for this long is requeued"
    )

    def export_data_locations(self) -> None:
        """Put the dataset and cache roots into the environment (``RELAXTUNE_DATA_ROOT``,
        ``RELAXTUNE_CACHE``), where the workers this process starts read them."""
        if self.data_root is not None:
            os.environ["RELAXTUNE_DATA_ROOT"] = str(self.data_root)
        if self.cache is not None:
            os.environ["RELAXTUNE_CACHE"] = str(self.cache)

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        """Outside development, refuse secrets copied from examples."""
        if self.env != "production":
            return self
        password = urlsplit(self.db).password
        if password is not None and password.lower() in PLACEHOLDER_SECRETS:
            raise ValueError(
                "RELAXTUNE_DB uses a placeholder password; set a real one in production"
            )
        if self.admin_token is not None:
            token = self.admin_token.get_secret_value()
            if token.lower() in PLACEHOLDER_SECRETS or len(token) < 24:
                raise ValueError(
                    "RELAXTUNE_ADMIN_TOKEN is a placeholder or shorter than 24 characters; "
                    "set a random one in production (or unset it and use `relaxtune token create`)"
                )
        if self.session_secret is not None:
            secret = self.session_secret.get_secret_value()
            if secret.lower() in PLACEHOLDER_SECRETS or len(secret) < 32:
                raise ValueError(
                    "RELAXTUNE_SESSION_SECRET is a placeholder or shorter than 32 characters; "
                    "set a random one in production (or unset it: one key per process)"
                )
        return self
