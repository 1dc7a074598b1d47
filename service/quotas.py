"""Per-tenant quotas: the limits in ``Settings``, raised or lowered for one tenant.

The defaults are ``Settings`` fields (``RELAXTUNE_MAX_TRIALS`` …); an admin overrides them per
tenant with ``relaxtune quota set TENANT KEY=VALUE`` (table ``relaxtune_quotas``), and
``relaxtune quota show`` / ``relaxtune token list`` show them. :func:`check_spec` refuses a
job spec that exceeds the submitting tenant's quota, or that could never be placed on the
cluster (``node_cpus``/``node_gpus`` when known), with :class:`LimitExceeded` naming the field
and the limit (HTTP 422).
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from service.errors import LimitExceeded
from service.settings import Settings
from service.store import JobStore, quotas_table

__all__ = [
    "QUOTA_KEYS",
    "check_spec",
    "effective_settings",
    "list_overrides",
    "parse_quota_items",
    "set_overrides",
    "tenant_overrides",
]

#: Settings fields a tenant's quota may override.
QUOTA_KEYS: tuple[str, ...] = (
    "max_trials",
    "max_epochs",
    "max_trial_epochs",
    "max_concurrent",
    "max_concurrent_jobs",
    "max_trial_cpu",
    "max_trial_gpu",
    "max_retries",
    "share_weight",
    "max_running_trials",
)


def _check_value(key: str, value: Any) -> int | float:
    """A quota value of ``key``: the Settings field's type and bounds."""
    if key not in QUOTA_KEYS:
        from search_spaces._suggest import did_you_mean

        raise ValueError(
            f"unknown quota {key!r}{did_you_mean(key, QUOTA_KEYS)} (quotas: {', '.join(QUOTA_KEYS)})"
        )
    try:
        Settings.model_validate({key: value})  # the field's own type and bounds
    except ValueError as exc:
        raise ValueError(f"quota {key}: invalid value {value!r}") from exc
    number = Settings.model_fields[key].annotation
    converted: int | float = int(value) if number is int else float(value)
    if isinstance(converted, float) and not math.isfinite(converted):
        raise ValueError(f"quota {key}: must be finite")
    return converted


def parse_quota_items(items: list[str]) -> dict[str, int | float | None]:
    """``["max_trials=512", "max_retries=default"]`` → ``{"max_trials": 512,
    "max_retries": None}`` (``default`` removes the override). Raises :class:`ValueError`."""
    result: dict[str, int | float | None] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key, text = key.strip(), text.strip()
        if not sep or not key or not text:
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
        result[key] = None if text == "default" else _check_value(key, text)
    return result


def tenant_overrides(store: JobStore, tenant: str) -> dict[str, int | float]:
    """The tenant's overrides (empty when it has none)."""
    with store._read("reading a quota") as conn:
        row = conn.execute(
            sa.select(quotas_table.c.limits).where(quotas_table.c.tenant == tenant)
        ).first()
    if row is None:
        return {}
    stored = json.loads(row.limits)
    return {k: v for k, v in stored.items() if k in QUOTA_KEYS}


def list_overrides(store: JobStore) -> dict[str, dict[str, int | float]]:
    """Every tenant's overrides."""
    with store._read("listing quotas") as conn:
        rows = conn.execute(sa.select(quotas_table)).all()
    return {r.tenant: json.loads(r.limits) for r in rows}


def set_overrides(
    store: JobStore, tenant: str, values: dict[str, int | float | None]
) -> dict[str, int | float]:
    """Merge ``values`` into the tenant's overrides (``None`` removes one); return them."""
    for key, value in values.items():
        if value is not None:
            _check_value(key, value)
        elif key not in QUOTA_KEYS:
            _check_value(key, 0)
    with store._write("setting a quota") as conn:
        row = conn.execute(
            sa.select(quotas_table.c.limits).where(quotas_table.c.tenant == tenant)
        ).first()
        current = json.loads(row.limits) if row is not None else {}
        for key, value in values.items():
            if value is None:
                current.pop(key, None)
            else:
                current[key] = value
        conn.execute(sa.delete(quotas_table).where(quotas_table.c.tenant == tenant))
        if current:
            conn.execute(
                quotas_table.insert().values(
                    tenant=tenant,
                    limits=json.dumps(current, sort_keys=True),
                    updated_at=datetime.now(timezone.utc),
                )
            )
    return current


def effective_settings(store: JobStore, settings: Settings, tenant: str) -> Settings:
    """``settings`` with the tenant's overrides applied."""
    overrides = tenant_overrides(store, tenant)
    return settings.model_copy(update=overrides) if overrides else settings


def check_spec(spec: Any, limits: Settings, tenant: str) -> None:
    """Refuse a spec beyond ``limits`` (the tenant's :func:`effective_settings`) with
    :class:`LimitExceeded` naming the field and the limit."""

    def refuse(field: str, what: str, limit: Any, key: str) -> None:
        raise LimitExceeded(
            f"{what}; tenant {tenant!r} may use at most {limit:g} ({key}; an admin can "
            f"raise it with `relaxtune quota set {tenant} {key}=N`)",
            field=field,
        )

    budget, resources = spec.budget, spec.resources
    if budget.trials > limits.max_trials:
        refuse(
            "budget.trials", f"budget.trials is {budget.trials}", limits.max_trials, "max_trials"
        )
    if budget.epochs > limits.max_epochs:
        refuse(
            "budget.epochs", f"budget.epochs is {budget.epochs}", limits.max_epochs, "max_epochs"
        )
    if budget.trials * budget.epochs > limits.max_trial_epochs:
        refuse(
            "budget",
            f"trials × epochs is {budget.trials} × {budget.epochs} = "
            f"{budget.trials * budget.epochs}",
            limits.max_trial_epochs,
            "max_trial_epochs",
        )
    if budget.max_concurrent > limits.max_concurrent:
        refuse(
            "budget.max_concurrent",
            f"budget.max_concurrent is {budget.max_concurrent}",
            limits.max_concurrent,
            "max_concurrent",
        )
    if spec.retries > limits.max_retries:
        refuse("retries", f"retries is {spec.retries}", limits.max_retries, "max_retries")
    if resources.cpu > limits.max_trial_cpu:
        refuse(
            "resources.cpu",
            f"resources.cpu is {resources.cpu:g}",
            limits.max_trial_cpu,
            "max_trial_cpu",
        )
    if resources.gpu > limits.max_trial_gpu:
        refuse(
            "resources.gpu",
            f"resources.gpu is {resources.gpu:g}",
            limits.max_trial_gpu,
            "max_trial_gpu",
        )
    if resources.cpu < limits.min_trial_cpu:
        raise LimitExceeded(
            f"resources.cpu is {resources.cpu:g}; a trial takes at least "
            f"{limits.min_trial_cpu:g} CPU here (RELAXTUNE_MIN_TRIAL_CPU)",
            field="resources.cpu",
        )
    for field, asked, node, env in (
        ("resources.cpu", resources.cpu, limits.node_cpus, "RELAXTUNE_NODE_CPUS"),
        ("resources.gpu", resources.gpu, limits.node_gpus, "RELAXTUNE_NODE_GPUS"),
    ):
        if node is not None and asked > node:
            raise LimitExceeded(
                f"{field} is {asked:g} but the largest node of the cluster has {node:g} "
                f"({env}): such a trial could never be placed",
                field=field,
            )
