"""The ``strategy`` spec key: defaults by space, refusals naming the field, stage spaces and
budgets, TPE start-up sizes."""

from __future__ import annotations

from typing import Any

import pytest

from search_spaces import (
    SearchSpace,
    SpecError,
    load_preset,
    parse_spec,
    space_for_stage,
    stage1_space,
    stage_trials,
    startup_trials,
)

TASKS = ("rotated_mnist", "nbody")


def spec(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "s",
        "task": "nbody",
        "search_space": "relax",
        "budget": {"trials": 8, "epochs": 2},
        "objective": {"metric": "val_mse", "mode": "min"},
    }
    data.update(changes)
    return data


def refused(data: dict[str, Any]) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse_spec(data, tasks=TASKS)
    return info.value


@pytest.mark.parametrize(
    ("space", "trials", "expected"),
    [
        ("relax", 8, {"name": "two_stage", "stage1_fraction": 0.5}),
        ("relax", 2, {"name": "two_stage", "stage1_fraction": 0.5}),
        ("relax", 1, {"name": "joint"}),  # one trial cannot make two stages
        ("baseline", 8, {"name": "joint"}),  # never relaxes
        ("paper", 8, {"name": "joint"}),  # searches no relaxation parameter
    ],
)
def test_default_strategy_follows_the_space(space: str, trials: int, expected: dict) -> None:
    parsed = parse_spec(
        spec(search_space=space, budget={"trials": trials, "epochs": 2}), tasks=TASKS
    )
    assert parsed.to_dict()["strategy"] == expected
    # the canonical form says what runs and reads back the same
    assert parse_spec(parsed.to_dict(), tasks=TASKS).to_dict() == parsed.to_dict()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("joint", {"name": "joint"}),
        ("two_stage", {"name": "two_stage", "stage1_fraction": 0.5}),
        (
            {"name": "two_stage", "stage1_fraction": 0.25},
            {"name": "two_stage", "stage1_fraction": 0.25},
        ),
    ],
)
def test_explicit_strategy_is_kept(given: Any, expected: dict) -> None:
    assert parse_spec(spec(strategy=given), tasks=TASKS).to_dict()["strategy"] == expected


@pytest.mark.parametrize(
    ("changes", "field", "says"),
    [
        ({"strategy": "three_stage"}, "strategy.name", "'joint' or 'two_stage'"),
        ({"strategy": 3}, "strategy", "two_stage"),
        ({"strategy": {"stage1_fraction": 0.5}}, "strategy.name", "missing"),
        ({"strategy": {"name": "two_stage", "stages": 3}}, "strategy.stages", "stage1_fraction"),
        (
            {"strategy": {"name": "two_stage", "stage1_fraction": 1.0}},
            "strategy.stage1_fraction",
            "less than 1",
        ),
        (
            {"strategy": {"name": "two_stage", "stage1_fraction": 0}},
            "strategy.stage1_fraction",
            "greater than 0",
        ),
        (
            {"strategy": {"name": "two_stage", "stage1_fraction": "half"}},
            "strategy.stage1_fraction",
            "half",
        ),
        (
            {"strategy": {"name": "joint", "stage1_fraction": 0.5}},
            "strategy.stage1_fraction",
            "only two_stage",
        ),
        ({"strategy": "two_stage", "search_space": "baseline"}, "strategy", "relaxes"),
        ({"strategy": "two_stage", "search_space": "paper"}, "strategy", "relaxation parameters"),
        (
            {"strategy": "two_stage", "budget": {"trials": 1, "epochs": 2}},
            "strategy",
            "at least 2 trials",
        ),
        (
            {
                "strategy": "two_stage",
                "search_space": {
                    "preset": "relax",
                    "override": {
                        "optim.lr": 1e-3,
                        "optim.weight_decay": None,
                        "optim.batch_size": 64,
                    },
                },
            },
            "strategy",
            "optimiser parameters",
        ),
        (
            {
                "strategy": "two_stage",
                "search_space": {
                    "relax.schedule": ["triangular", "cosine"],
                    "optim.lr": {"low": 1e-4, "high": 1e-2, "when": {"relax.schedule": ["cosine"]}},
                },
            },
            "strategy",
            "optim.lr is conditional on relax.schedule",
        ),
    ],
)
def test_refusals_name_the_field(changes: dict, field: str, says: str) -> None:
    error = refused(spec(**changes))
    assert error.field == field, error
    assert says in error.message, error


def test_stage_budgets_give_each_stage_a_trial() -> None:
    parsed = parse_spec(spec(strategy={"name": "two_stage", "stage1_fraction": 0.25}), tasks=TASKS)
    assert stage_trials(parsed.strategy, 8) == (2, 6)
    assert stage_trials(parsed.strategy, 2) == (1, 1)
    assert stage_trials(parsed.strategy, 40) == (10, 30)
    high = parse_spec(spec(strategy={"name": "two_stage", "stage1_fraction": 0.99}), tasks=TASKS)
    assert stage_trials(high.strategy, 8) == (7, 1)


def test_stage1_space_is_the_optimiser_with_relaxation_off() -> None:
    relax = load_preset("relax")
    first = stage1_space(relax)
    assert set(first.searched_keys()) == {
        k for k in relax.searched_keys() if k.startswith("optim.")
    }
    assert first.params["optim.lr"] == relax.params["optim.lr"]  # same distributions
    assert first.sample_random(3)["relax.schedule"] == "none"
    assert first.sample_defaults()["relax.schedule"] == "none"
    assert space_for_stage(relax, 1) == first
    assert space_for_stage(relax, 2) == relax and space_for_stage(relax, None) == relax


def test_stage1_space_drops_fixed_relaxation_values() -> None:
    space = SearchSpace.from_dict(
        {
            "relax.schedule": "cosine",
            "relax.lambda_norm": 0.1,
            "optim.lr": {"low": 1e-4, "high": 1e-2},
        }
    )
    values = stage1_space(space).sample_defaults()
    assert values["relax.schedule"] == "none" and values["relax.lambda_norm"] == 0.0


@pytest.mark.parametrize(
    ("dimensions", "trials", "expected"),
    [(3, 8, 2), (3, 30, 3), (14, 32, 10), (14, 90, 14), (1, 30, 2), (5, 2, 2)],
)
def test_startup_trials_sized_to_the_space(dimensions: int, trials: int, expected: int) -> None:
    assert startup_trials(dimensions, trials) == expected
