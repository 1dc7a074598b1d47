"""Hyperparameter defaults (against the documented table) and ``--set`` override parsing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from search_spaces import (
    CHOICES,
    SCHEDULE_FAMILIES,
    SCHEDULE_PARAMS,
    SpecError,
    check_hparams,
    default_hparams,
    parse_set_overrides,
)

ARCHITECTURE = Path(__file__).resolve().parents[2] / "docs" / "ARCHITECTURE.md"


def _documented_defaults() -> dict[str, str]:
    """``key -> default text`` from the hyperparameter table of docs/ARCHITECTURE.md."""
    rows: dict[str, str] = {}
    for line in ARCHITECTURE.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        keys = re.findall(r"`([a-z_]+\.[a-z_]+)`", cells[0])
        if not keys:  # another table of the same shape (e.g. the task options)
            continue
        values = [v.strip().strip("`") for v in cells[2].split("/")]
        assert len(keys) == len(values), line
        rows.update(zip(keys, values, strict=True))
    return rows


def test_defaults_match_the_documented_table() -> None:
    documented = _documented_defaults()
    defaults = default_hparams()
    assert list(defaults) == list(documented)
    for key, text in documented.items():
        value = defaults[key]
        if isinstance(value, str):
            assert value == text, key
        else:
            assert value == type(value)(float(text)), key


def test_defaults_are_a_fresh_copy() -> None:
    default_hparams()["optim.lr"] = 5.0
    assert default_hparams()["optim.lr"] == 1e-3


def test_schedule_families_match_the_table_and_the_choices() -> None:
    assert SCHEDULE_FAMILIES[0] == "none"
    assert CHOICES["relax.schedule"] == SCHEDULE_FAMILIES
    assert set(SCHEDULE_PARAMS) == set(SCHEDULE_FAMILIES)
    for keys in SCHEDULE_PARAMS.values():
        assert set(keys) <= set(default_hparams())


def test_set_overrides_coerce_to_the_default_type() -> None:
    parsed = parse_set_overrides(
        ["optim.lr=1e-3", "relax.schedule=triangular", "optim.batch_size=128", "relax.peak=1"]
    )
    assert parsed == {
        "optim.lr": 1e-3,
        "relax.schedule": "triangular",
        "optim.batch_size": 128,
        "relax.peak": 1.0,
    }
    assert isinstance(parsed["relax.peak"], float)
    assert isinstance(parsed["optim.batch_size"], int)


@pytest.mark.parametrize(
    ("item", "field", "mentions"),
    [
        ("optim.learning_rate=1", "optim.learning_rate", "optim.lr"),  # lists allowed keys
        ("relax.schedule=triangle", "relax.schedule", "warmup_hold_decay"),  # allowed values
        ("optim.batch_size=6.5", "optim.batch_size", "integer"),
        ("optim.batch_size=true", "optim.batch_size", "integer"),
        ("optim.lr=fast", "optim.lr", "number"),
        ("optim.lr=-1e-3", "optim.lr", "(0, inf)"),
        ("relax.peak=1.5", "relax.peak", "[0, 1]"),
        ("optim.lr=nan", "optim.lr", "number"),
        ("relax.min_tail=1", "relax.min_tail", "[0, 1)"),
        ("relax.penalty_form=mean", "relax.penalty_form", "per_sample, paper"),
        ("relax.free_scale=big", "relax.free_scale", "plain, rms"),
        ("relax.free_lr_mult=0", "relax.free_lr_mult", "(0, inf)"),
        ("relax.free_weight_decay=-1", "relax.free_weight_decay", "[0, inf)"),
        ("optim.grad_clip=-1", "optim.grad_clip", "[0, inf)"),
        ("no-equals-sign", "set", "KEY=VALUE"),
        ("=3", "set", "allowed keys"),
    ],
)
def test_set_override_refusals_name_the_key(item: str, field: str, mentions: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_set_overrides([item])
    assert info.value.field == field
    assert mentions in str(info.value)


def test_set_override_given_twice_is_refused() -> None:
    with pytest.raises(SpecError, match="more than once"):
        parse_set_overrides(["optim.lr=1e-3", "optim.lr=1e-2"])


def test_check_hparams_completes_and_checks() -> None:
    full = check_hparams({"optim.lr": 3e-4, "relax.schedule": "cosine"})
    assert full == {**default_hparams(), "optim.lr": 3e-4, "relax.schedule": "cosine"}
    with pytest.raises(SpecError) as info:
        check_hparams({"relax.projection": "nearest"})
    assert info.value.field == "hparams.relax.projection"
