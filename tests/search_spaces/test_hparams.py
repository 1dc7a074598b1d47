"""The typed hyperparameter model: one field per documented key, built from flat dicts."""

from __future__ import annotations

import pydantic
import pytest

from search_spaces import (
    Hyperparameters,
    SpecError,
    check_hparams,
    default_hparams,
    example_path,
    hparam_keys,
    list_examples,
    list_presets,
    load_preset,
    parse_spec,
)


def test_one_field_per_hyperparameter_key_in_table_order() -> None:
    fields = [
        f"{section}.{name}"
        for section, model in Hyperparameters.model_fields.items()
        for name in model.annotation.model_fields
    ]
    assert fields == list(hparam_keys())
    assert Hyperparameters.from_flat({}).flat() == default_hparams()


@pytest.mark.parametrize("preset", list_presets())
def test_every_preset_round_trips(preset: str) -> None:
    point = load_preset(preset).sample_defaults()
    hp = Hyperparameters.from_flat(point)
    assert hp.flat() == check_hparams(point)
    assert hp.relax.relaxing == (point.get("relax.schedule", "none") != "none")


@pytest.mark.parametrize("example", list_examples())
def test_every_example_spec_round_trips(example: str) -> None:
    spec = parse_spec(example_path(example).read_text())
    point = spec.resolved_space().sample_defaults()
    assert Hyperparameters.from_flat(point).flat() == check_hparams(point)


def test_values_are_coerced_typed_and_frozen() -> None:
    hp = Hyperparameters.from_flat({"optim.lr": "2e-3", "optim.batch_size": "32"})
    assert hp.optim.lr == 0.002 and hp.optim.batch_size == 32
    assert isinstance(hp.optim.batch_size, int)
    with pytest.raises(pydantic.ValidationError):
        hp.optim.lr = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"relax.theta_maks": 1.0}, "hparams.relax.theta_maks"),
        ({"relax.peak": 1.5}, "hparams.relax.peak"),
        ({"relax.schedule": "zigzag"}, "hparams.relax.schedule"),
        ({"optim.batch_size": 6.5}, "hparams.optim.batch_size"),
    ],
)
def test_bad_values_name_the_key(values: dict, field: str) -> None:
    with pytest.raises(SpecError) as info:
        Hyperparameters.from_flat(values)
    assert info.value.field == field
