"""SearchSpace: serialisation, validation (errors name the field), presets, sampling."""

from __future__ import annotations

import json
import math
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from search_spaces import (
    SCHEDULE_FAMILIES,
    SCHEDULE_PARAMS,
    CategoricalParam,
    FixedParam,
    FloatParam,
    IntParam,
    SearchSpace,
    SpecError,
    default_hparams,
    list_presets,
    load_preset,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

CONDITIONAL = {
    "relax.schedule": {"type": "categorical", "choices": ["triangular", "cosine", "constant"]},
    "relax.peak": {"low": 0.2, "high": 0.8, "when": {"relax.schedule": ["triangular"]}},
    "relax.zero_at": {"low": 0.5, "high": 1.0, "when": {"relax.schedule": "cosine"}},
    "relax.theta": {"type": "fixed", "value": 0.05, "when": {"relax.schedule": ["constant"]}},
    "optim.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    "optim.batch_size": {"type": "int", "low": 16, "high": 128, "step": 16},
    "relax.projection": "drop",
}


def _space() -> SearchSpace:
    return SearchSpace.from_dict(CONDITIONAL)


# -- serialisation --------------------------------------------------------------------------


def test_round_trip_through_dict_json_and_yaml() -> None:
    space = _space()
    canonical = space.to_dict()
    assert SearchSpace.from_dict(canonical) == space
    assert SearchSpace.from_dict(json.loads(json.dumps(canonical))) == space
    assert SearchSpace.from_yaml(space.to_yaml()) == space
    assert SearchSpace.from_yaml(json.dumps(canonical)) == space
    # Canonical form spells out the type; unconditional fixed values stay plain scalars.
    assert canonical["relax.peak"]["type"] == "float"
    assert canonical["optim.batch_size"] == {
        "type": "int",
        "low": 16,
        "high": 128,
        "log": False,
        "step": 16,
    }
    assert canonical["relax.projection"] == "drop"
    assert canonical["relax.zero_at"]["when"] == {"relax.schedule": ["cosine"]}


def test_shorthands_infer_the_parameter_type() -> None:
    space = SearchSpace.from_dict(
        {
            "optim.batch_size": {"low": 16, "high": 64},
            "relax.theta_max": {"low": 0, "high": 2},
            "relax.init": ["zeros", "normal"],
            "optim.lr": "1e-3",  # YAML 1.1 reads 1e-3 as text; accepted for float keys
        }
    )
    params = space.params
    assert params["optim.batch_size"] == IntParam(16, 64)
    assert params["relax.theta_max"] == FloatParam(0.0, 2.0)
    assert params["relax.init"] == CategoricalParam(("zeros", "normal"))
    assert params["optim.lr"] == FixedParam(1e-3)


def test_python_construction_is_validated_too() -> None:
    space = SearchSpace({"relax.theta_max": FloatParam(low=1, high=2)})
    assert space.params["relax.theta_max"].low == 1.0
    with pytest.raises(SpecError) as info:
        SearchSpace({"relax.theta_max": FloatParam(low=2, high=1)})
    assert info.value.field == "search_space.relax.theta_max.low"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"relax.theta_max": {"low": 2.0, "high": 1.0}}, "search_space.relax.theta_max.low"),
        ({"relax.theta_max": {"low": 1.0, "high": 1.0}}, "search_space.relax.theta_max.low"),
        (
            {"relax.theta_max": {"low": 0.0, "high": 1.0, "log": True}},
            "search_space.relax.theta_max.low",
        ),
        ({"relax.theta_max": {"low": -1.0, "high": 1.0}}, "search_space.relax.theta_max.low"),
        ({"relax.peak": {"low": 0.1, "high": 1.5}}, "search_space.relax.peak.high"),
        ({"relax.peak": {"low": 0.1, "high": 0.5, "log": "yes"}}, "search_space.relax.peak.log"),
        ({"relax.peak": {"low": 0.1, "high": 0.5, "step": 0}}, "search_space.relax.peak.step"),
        (
            {"relax.peak": {"low": 0.1, "high": 0.5, "step": 0.1, "log": True}},
            "search_space.relax.peak.step",
        ),
        ({"relax.peak": {"low": 0.1}}, "search_space.relax.peak.high"),
        ({"relax.peak": {"low": 0.1, "high": 0.5, "lo": 1}}, "search_space.relax.peak.lo"),
        ({"relax.peak": {"type": "uniform", "low": 0.1}}, "search_space.relax.peak.type"),
        ({"relax.peak": {"log": True}}, "search_space.relax.peak"),
        ({"relax.peak": None}, "search_space.relax.peak"),
        (
            {"optim.batch_size": {"low": 0, "high": 64, "log": True}},
            "search_space.optim.batch_size.low",
        ),
        ({"optim.batch_size": {"low": 16.5, "high": 64}}, "search_space.optim.batch_size.low"),
        (
            {"optim.batch_size": {"type": "float", "low": 16, "high": 64}},
            "search_space.optim.batch_size.type",
        ),
        ({"optim.lr": {"type": "int", "low": 1, "high": 2}}, "search_space.optim.lr.type"),
        (
            {"relax.schedule": {"type": "float", "low": 0, "high": 1}},
            "search_space.relax.schedule.type",
        ),
        ({"relax.schedule": {"choices": []}}, "search_space.relax.schedule.choices"),
        ({"relax.schedule": ["cosine", "cosine"]}, "search_space.relax.schedule.choices.1"),
        ({"relax.schedule": ["cosine", "sawtooth"]}, "search_space.relax.schedule.choices.1"),
        ({"relax.projection": "nearest"}, "search_space.relax.projection"),
        (
            {
                "relax.init": {
                    "type": "fixed",
                    "value": "zeros",
                    "when": {"relax.schedule": ["cosine"]},
                }
            },
            "search_space.relax.init.when.relax.schedule",
        ),
        ({"relax.init": ["zeros", 3]}, "search_space.relax.init.choices.1"),
        ({"relax.temperature": 1.0}, "search_space.relax.temperature"),
        (
            {"relax.peak": {"low": 0.1, "high": 0.5, "when": {"relax.schedule": ["cosine"]}}},
            "search_space.relax.peak.when.relax.schedule",
        ),
        (
            {
                "relax.peak": {"low": 0.1, "high": 0.5, "when": {"relax.schedule": ["triangular"]}},
                "relax.schedule": ["triangular", "cosine"],
            },
            "search_space.relax.peak.when.relax.schedule",
        ),
        (
            {"relax.peak": {"low": 0.1, "high": 0.5, "when": {"relax.peak": [0.2]}}},
            "search_space.relax.peak.when.relax.peak",
        ),
        (
            {
                "relax.schedule": ["cosine"],
                "relax.peak": {"low": 0.1, "high": 0.5, "when": {"relax.schedule": ["triangle"]}},
            },
            "search_space.relax.peak.when.relax.schedule.0",
        ),
        (
            {
                "relax.schedule": ["cosine"],
                "relax.peak": {"low": 0.1, "high": 0.5, "when": {"relax.bogus": [1]}},
            },
            "search_space.relax.peak.when.relax.bogus",
        ),
        (
            {"relax.schedule": ["cosine"], "relax.peak": {"low": 0.1, "high": 0.5, "when": {}}},
            "search_space.relax.peak.when",
        ),
        (
            {
                "optim.lr": {"low": 1e-4, "high": 1e-2},
                "relax.peak": {"low": 0.1, "high": 0.5, "when": {"optim.lr": [1e-3]}},
            },
            "search_space.relax.peak.when.optim.lr",
        ),
        ({"optim.lr": float("nan")}, "search_space.optim.lr"),
        ({"relax.peak": {"low": 0.1, "high": [0.5]}}, "search_space.relax.peak.high"),
    ],
)
def test_refusals_name_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as info:
        SearchSpace.from_dict(data)
    assert info.value.field == field, str(info.value)
    assert str(info.value).startswith(field + ": ")


def test_unknown_key_error_lists_the_allowed_keys() -> None:
    with pytest.raises(SpecError) as info:
        SearchSpace.from_dict({"optim.learning_rate": 1e-3})
    assert "optim.lr" in str(info.value) and "relax.init_std" in str(info.value)


def test_non_mapping_space_is_refused() -> None:
    with pytest.raises(SpecError) as info:
        SearchSpace.from_dict(["optim.lr"], path="x")
    assert info.value.field == "x"


# -- presets ---------------------------------------------------------------------------------


def test_presets_load_and_round_trip() -> None:
    assert {"baseline", "paper", "relax"} <= set(list_presets())
    for name in list_presets():
        space = load_preset(name)
        assert SearchSpace.from_dict(space.to_dict()) == space
        assert {"optim.lr", "optim.weight_decay"} <= set(space.searched_keys())


def test_baseline_and_paper_presets_fix_the_relaxation() -> None:
    baseline = load_preset("baseline").sample_defaults()
    assert baseline["relax.schedule"] == "none"
    paper = load_preset("paper").sample_defaults()
    assert paper["relax.schedule"] == "triangular"
    assert (paper["relax.theta_max"], paper["relax.peak"]) == (1.0, 0.5)
    assert paper["relax.lambda_norm"] == 0.01
    assert paper["relax.penalty_form"] == "paper"  # the authors' form with their weight
    assert paper["relax.projection"] == "drop"
    assert paper["relax.zero_at"] == 1.0 and paper["relax.min_tail"] >= 0.1


def test_relax_preset_conditions_each_family_on_its_own_parameters() -> None:
    space = load_preset("relax")
    params = space.params
    families = params["relax.schedule"].choices
    # every family ends at θ = 0 with a tail at 0 (constant never does)
    assert set(families) == set(SCHEDULE_FAMILIES) - {"none", "constant"}
    for family in families:
        for key in SCHEDULE_PARAMS[family]:
            when = dict(params[key].when)
            assert family in when["relax.schedule"], (family, key)
    assert params["relax.theta_max"].log and params["relax.theta_max"].low == 0.01
    # dead dimensions once θ ends at 0: projection mode, free-term init
    assert not {"relax.projection", "relax.init", "relax.init_std", "relax.theta"} & set(params)
    # Every warmup_hold_decay sample is a valid schedule: warmup + hold <= zero_at.
    assert params["relax.warmup"].high + params["relax.hold"].high <= params["relax.zero_at"].low


def test_unknown_preset_lists_the_presets() -> None:
    with pytest.raises(SpecError) as info:
        load_preset("../presets/relax")
    assert info.value.field == "search_space"
    assert "baseline" in str(info.value)


def test_merge_replaces_in_place_appends_and_removes() -> None:
    base = load_preset("relax")
    merged = base.merged(
        {
            "relax.schedule": "cosine",
            "relax.lambda_lie": {"type": "float", "low": 1e-5, "high": 1.0, "log": True},
            "relax.lambda_proj": None,
        }
    )
    keys = list(merged.params)
    assert keys.index("relax.schedule") == 0
    assert keys[-1] == "relax.lambda_lie"
    assert "relax.lambda_proj" not in merged
    point = merged.sample_random(3)
    assert point["relax.schedule"] == "cosine"
    assert point["relax.peak"] == default_hparams()["relax.peak"]  # triangular-only: inactive


def test_merge_errors_name_the_override_field() -> None:
    base = load_preset("relax")
    with pytest.raises(SpecError) as info:
        base.merged({"relax.theta_max": {"low": 3.0, "high": 2.0}})
    assert info.value.field == "search_space.override.relax.theta_max.low"
    # Removing a parameter others are conditioned on is refused at the dependent parameter.
    with pytest.raises(SpecError) as info:
        base.merged({"relax.schedule": None})
    assert info.value.field == "search_space.relax.theta_max.when.relax.schedule"


def test_with_fixed_keeps_conditions() -> None:
    space = _space().with_fixed({"relax.schedule": "cosine", "relax.peak": 0.3})
    assert space.params["relax.peak"] == FixedParam(
        0.3, when=(("relax.schedule", ("triangular",)),)
    )
    point = space.sample_defaults()
    assert point["relax.schedule"] == "cosine"
    assert point["relax.peak"] == 0.5  # its condition no longer holds: default
    with pytest.raises(SpecError) as info:
        _space().with_fixed({"relax.peak": 2.0})
    assert info.value.field == "set.relax.peak"


# -- sampling --------------------------------------------------------------------------------


def test_optuna_distributions_cover_every_non_fixed_parameter() -> None:
    dists = _space().to_optuna_distributions()
    assert set(dists) == {
        "relax.schedule",
        "relax.peak",
        "relax.zero_at",
        "optim.lr",
        "optim.batch_size",
    }
    assert dists["optim.lr"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert dists["optim.batch_size"] == IntDistribution(16, 128, step=16)
    assert dists["relax.schedule"] == CategoricalDistribution(["triangular", "cosine", "constant"])


def test_suggest_samples_conditionally_in_a_real_study() -> None:
    space = _space()
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=5)
    )
    seen_families = set()
    for _ in range(20):
        trial = study.ask()
        values = space.suggest(trial)
        family = values["relax.schedule"]
        seen_families.add(family)
        assert set(values) == set(default_hparams())
        assert values["relax.projection"] == "drop"
        assert 1e-4 <= values["optim.lr"] <= 1e-2
        assert values["optim.batch_size"] % 16 == 0
        # Optuna records exactly the active parameters: conditional ones are absent when unmet.
        expected = {"relax.schedule", "optim.lr", "optim.batch_size"}
        expected |= {"triangular": {"relax.peak"}, "cosine": {"relax.zero_at"}}.get(family, set())
        assert set(trial.params) == expected
        if family != "triangular":
            assert values["relax.peak"] == default_hparams()["relax.peak"]
        assert values["relax.theta"] == (0.05 if family == "constant" else 0.1)
        study.tell(trial, values["optim.lr"])
    assert seen_families == {"triangular", "cosine", "constant"}


def test_suggest_fits_optuna_search_define_by_run_contract() -> None:
    """Ray's OptunaSearch builds a trial config as ``{**captured_suggestions, **returned}``."""
    space = load_preset("relax")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(5):
        trial = study.ask()
        returned = space.suggest(trial)
        captured = dict(trial.params)  # what Ray's suggest-captor records
        assert all(isinstance(key, str) for key in returned)
        assert {**captured, **returned} == returned
        assert {key: returned[key] for key in captured} == captured


def test_sample_defaults_is_a_valid_deterministic_point() -> None:
    space = _space()
    point = space.sample_defaults()
    assert point == space.sample_defaults()
    assert point["relax.schedule"] == "triangular"  # default "none" is not a choice: first one
    assert point["relax.peak"] == 0.5
    assert point["optim.lr"] == 1e-3
    assert point["optim.batch_size"] == 64
    relax = load_preset("relax").sample_defaults()
    assert math.isclose(relax["relax.lambda_norm"], math.sqrt(3e-3 * 1.0))
    assert relax["relax.free_lr_mult"] == 1.0  # the default lies in the range
    assert math.isclose(relax["relax.free_weight_decay"], math.sqrt(1e-3 * 1.0))


def test_relax_preset_searches_the_free_term_and_the_batch_independent_penalty() -> None:
    params = load_preset("relax").params
    assert params["relax.penalty_form"].value == "per_sample"
    # the low end of the λ range still matters: per_sample at λ is paper at λ/√batch, and
    # paper at 0.01 (batch 64) is about the task gradient; the old 1e-5 low end was nothing
    assert (
        1e-3 <= params["relax.lambda_norm"].low <= 5e-3 <= 0.5 <= params["relax.lambda_norm"].high
    )
    assert {"relax.free_lr_mult", "relax.free_weight_decay"} <= set(params)
    assert all(params[k].kind == "float" for k in ("relax.free_lr_mult", "relax.free_weight_decay"))


def test_sample_random_stays_in_range_and_is_reproducible() -> None:
    space = load_preset("relax")
    assert space.sample_random(7) == space.sample_random(7)
    points = [space.sample_random(seed) for seed in range(200)]
    for point in points:
        assert 0.01 <= point["relax.theta_max"] <= 2.0
        assert point["optim.batch_size"] in (32, 64, 128)
    assert {p["relax.schedule"] for p in points} == set(SCHEDULE_FAMILIES) - {"none", "constant"}
    grid = SearchSpace.from_dict({"relax.peak": {"low": 0.2, "high": 0.8, "step": 0.2}})
    values = {round(grid.sample_random(s)["relax.peak"], 9) for s in range(50)}
    assert values == {0.2, 0.4, 0.6, 0.8}


def test_suggest_works_as_ray_optuna_search_space() -> None:
    """The real contract: Ray Tune's OptunaSearch with ``space=space.suggest``."""
    from ray.tune.search import optuna as optuna_search
    space = load_preset("relax")
    searcher = optuna_search.OptunaSearch(
        space=space.suggest,
        metric="val_projected",
        mode="max",
        sampler=optuna.samplers.TPESampler(seed=0, constant_liar=True),
    )
    for index in range(4):
        config = searcher.suggest(f"trial_{index}")
        assert set(config) == set(default_hparams())  # flat dotted keys, nothing unflattened
        assert config["relax.schedule"] in SCHEDULE_FAMILIES
