"""Per-tenant quota overrides: stored, merged, removed, validated; applied to Settings."""

from __future__ import annotations

import pytest

from service.quotas import (
    QUOTA_KEYS,
    effective_settings,
    list_overrides,
    parse_quota_items,
    set_overrides,
    tenant_overrides,
)
from service.settings import Settings
from service.store import JobStore


def test_overrides_merge_remove_and_apply_per_tenant(store: JobStore) -> None:
    settings = Settings(db=store.url)
    assert tenant_overrides(store, "alice") == {}
    set_overrides(store, "alice", {"max_trials": 512, "max_trial_gpu": 2.5})
    set_overrides(store, "alice", {"max_retries": 9})
    assert tenant_overrides(store, "alice") == {
        "max_trials": 512,
        "max_trial_gpu": 2.5,
        "max_retries": 9,
    }
    limits = effective_settings(store, settings, "alice")
    assert (limits.max_trials, limits.max_trial_gpu, limits.max_retries) == (512, 2.5, 9)
    assert limits.max_epochs == settings.max_epochs
    bob = effective_settings(store, settings, "bob")  # other tenants keep the defaults
    assert bob.max_trials == settings.max_trials
    set_overrides(store, "alice", {"max_trials": None, "max_trial_gpu": None, "max_retries": None})
    assert tenant_overrides(store, "alice") == {} and list_overrides(store) == {}


@pytest.mark.parametrize(
    ("items", "words"),
    [
        (["max_trails=5"], "did you mean 'max_trials'?"),
        (["max_trials=0"], "invalid value"),
        (["max_trials=1.5"], "invalid value"),
        (["max_trial_cpu=inf"], "finite"),
        (["max_trials"], "KEY=VALUE"),
        (["min_trial_cpu=0.01"], "unknown quota"),  # a service-wide setting, not a quota
    ],
)
def test_bad_quota_items_are_refused(items: list[str], words: str) -> None:
    with pytest.raises(ValueError, match=words.replace("?", r"\?").replace("'", ".")):
        parse_quota_items(items)


def test_quota_keys_are_settings_fields() -> None:
    assert set(QUOTA_KEYS) <= set(Settings.model_fields)
    assert parse_quota_items(["max_trials=7", "max_trial_cpu=0.5", "max_retries=default"]) == {
        "max_trials": 7,
        "max_trial_cpu": 0.5,
        "max_retries": None,
    }
