"""Property tests: random and mutated inputs never make the readers fail with anything but
SpecError, and every refusal names a field."""

from __future__ import annotations

import copy
import json
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from search_spaces import (
    JobSpec,
    SearchSpace,
    SpecError,
    default_hparams,
    example_path,
    list_examples,
    load_preset,
    parse_set_overrides,
    parse_spec,
)

TASKS = ("rotated_mnist", "nbody")
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KEYS = [
    *default_hparams(),
    *JobSpec.model_fields,
    "budget",
    "trials",
    "epochs",
    "max_concurrent",
    "low",
    "high",
    "log",
    "step",
    "type",
    "choices",
    "value",
    "when",
    "preset",
    "override",
    "metric",
    "mode",
    "cpu",
    "gpu",
    "grace_period",
    "bogus",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(
        ["relax", "paper", "triangular", "cosine", "float", "int", "categorical", "fixed", "max"]
    ),
)
json_like = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), children, max_size=5),
    ),
    max_leaves=25,
)

BASES = [yaml.safe_load(example_path(name).read_text()) for name in list_examples()]


def _check(call: Any) -> None:
    try:
        call()
    except SpecError as error:
        assert error.field, error
        assert str(error).startswith(f"{error.field}: ")


@st.composite
def mutated_specs(draw: st.DrawFn) -> dict[str, Any]:
    """A valid example spec with a few values replaced, removed or added at random paths."""
    spec = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        node: Any = spec
        while isinstance(node, dict) and node and draw(st.booleans()):
            child = node[draw(st.sampled_from(sorted(node)))]
            if not isinstance(child, dict) or not child:
                break
            node = child
        if not isinstance(node, dict):
            continue
        action = draw(st.sampled_from(["replace", "drop", "add"]))
        if action == "add" or not node:
            node[draw(st.sampled_from(KEYS))] = draw(json_like)
        elif action == "drop":
            del node[draw(st.sampled_from(sorted(node)))]
        else:
            node[draw(st.sampled_from(sorted(node)))] = draw(json_like)
    return spec


@SETTINGS
@given(json_like)
def test_random_values_only_raise_spec_error(data: Any) -> None:
    _check(lambda: parse_spec(data, tasks=TASKS) if isinstance(data, dict) else None)
    _check(lambda: SearchSpace.from_dict(data))


@SETTINGS
@given(mutated_specs())
def test_mutated_specs_only_raise_spec_error(spec: dict[str, Any]) -> None:
    def round_trip() -> None:
        parsed = parse_spec(spec, tasks=TASKS, gpu_available=lambda: False)
        # Whatever is accepted survives its own canonical form.
        assert parse_spec(parsed.to_dict(), tasks=TASKS).to_dict() == parsed.to_dict()
        parsed.resolved_space().sample_defaults()

    _check(round_trip)


@SETTINGS
@given(st.text(max_size=200) | st.binary(max_size=200))
def test_random_documents_only_raise_spec_error(text: str | bytes) -> None:
    _check(lambda: parse_spec(text, tasks=TASKS))


@SETTINGS
@given(mutated_specs())
def test_mutated_spec_text_only_raises_spec_error(spec: dict[str, Any]) -> None:
    _check(lambda: parse_spec(json.dumps(spec, allow_nan=True), tasks=TASKS))
    _check(lambda: parse_spec(yaml.safe_dump(spec), tasks=TASKS))


@SETTINGS
@given(st.dictionaries(st.sampled_from(list(default_hparams())), json_like, max_size=4))
def test_random_overrides_of_a_preset_only_raise_spec_error(override: dict[str, Any]) -> None:
    def merge() -> None:
        space = load_preset("relax").merged(override)
        assert SearchSpace.from_dict(space.to_dict()) == space
        point = space.sample_random(0)
        assert set(point) == set(default_hparams())

    _check(merge)


@SETTINGS
@given(st.lists(st.text(max_size=30), max_size=4))
def test_random_set_overrides_only_raise_spec_error(items: list[str]) -> None:
    _check(lambda: parse_set_overrides(items))
