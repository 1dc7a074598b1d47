"""How a job spends its trial budget: the ``strategy`` section of a job spec.

    strategy: joint                                    # one search over the whole space
    strategy: two_stage                                # stage1_fraction 0.5
    strategy: {name: two_stage, stage1_fraction: 0.4}

``joint`` samples every parameter of the space in every trial. ``two_stage`` splits the
budget: stage 1 tunes the optimiser (the space's ``optim.*`` parameters) with the relaxation
off (θ = 0 throughout, schedule ``none``); stage 2 searches only the relaxation (every other
parameter of the space) with the optimiser fixed to stage 1's best trial. Stage 1's best is
then the θ = 0 arm of every stage-2 trial (same optimiser, same seed, relaxation off), and
as both stages are trials of one study the job's best can only match or beat that tuned
baseline on validation.

Pure and torch-free: the spec reader validates with it, the search driver
(``service/strategy.py``) plans the stages with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

from search_spaces._errors import SpecError
from search_spaces._params import CategoricalParam, FixedParam, SearchSpace

STRATEGIES: tuple[str, ...] = ("joint", "two_stage")

#: Keys of the optimiser: what stage 1 tunes and stage 2 keeps fixed.
OPTIMISER_PREFIX = "optim."

#: The Optuna trial user attribute that holds a two-stage trial's stage (1 or 2).
STAGE_ATTR = "stage"

#: Share of the budget stage 1 gets when the spec does not say.
DEFAULT_STAGE1_FRACTION = 0.5


class Strategy(BaseModel):
    """The ``strategy`` section: ``joint`` or ``two_stage`` (with its stage-1 share)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["joint", "two_stage"]
    stage1_fraction: Annotated[
        float | None, Field(strict=True, allow_inf_nan=False, gt=0, lt=1)
    ] = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"name": data}
        if not isinstance(data, Mapping):
            raise SpecError(
                "strategy",
                f"give {' or '.join(STRATEGIES)}, or {{name: two_stage, stage1_fraction: F}}; "
                f"got {data!r}",
            )
        return data

    @model_validator(mode="after")
    def _fraction_for_two_stage(self) -> Strategy:
        if self.name == "two_stage" and self.stage1_fraction is None:
            # frozen model: fill the default in place, so the canonical form shows it
            object.__setattr__(self, "stage1_fraction", DEFAULT_STAGE1_FRACTION)
        if self.name != "two_stage" and self.stage1_fraction is not None:
            raise SpecError(
                "strategy.stage1_fraction", f"only two_stage has stages, not {self.name}"
            )
        return self

    @model_serializer(mode="wrap")
    def _without_unset_fraction(self, handler: Any) -> dict[str, Any]:
        # joint has no stages: its canonical form is {name: joint}
        return {k: v for k, v in handler(self).items() if v is not None}


# -- the two stages of a space ----------------------------------------------------------------


def is_optimiser_key(key: str) -> bool:
    """Whether ``key`` belongs to the optimiser (stage 1) rather than the relaxation."""
    return key.startswith(OPTIMISER_PREFIX)


def optimiser_keys(space: SearchSpace) -> tuple[str, ...]:
    """The searched optimiser keys of ``space``: what stage 1 tunes."""
    return tuple(k for k in space.searched_keys() if is_optimiser_key(k))


def relaxation_keys(space: SearchSpace) -> tuple[str, ...]:
    """The searched keys of ``space`` that are not the optimiser's: what stage 2 searches."""
    return tuple(k for k in space.searched_keys() if not is_optimiser_key(k))


def can_relax(space: SearchSpace) -> bool:
    """Whether some trial of ``space`` trains with a free term (a schedule other than none)."""
    schedule = space.params.get("relax.schedule")
    if isinstance(schedule, FixedParam):
        return schedule.value != "none"
    if isinstance(schedule, CategoricalParam):
        return any(choice != "none" for choice in schedule.choices)
    return False  # not in the space: the default, none


def two_stage_problem(space: SearchSpace, trials: int) -> str | None:
    """Why ``two_stage`` cannot run ``space`` with ``trials`` trials, or ``None`` if it can."""
    if trials < 2:
        return f"needs at least 2 trials, one per stage (budget.trials is {trials})"
    if not can_relax(space):
        return "needs a space that relaxes (relax.schedule other than none)"
    if not optimiser_keys(space):
        return "needs searched optimiser parameters (optim.*) for stage 1"
    if not relaxation_keys(space):
        return "needs searched relaxation parameters (relax.*) for stage 2"
    for key in optimiser_keys(space):
        for ref, _values in space.params[key].when:
            if not is_optimiser_key(ref):
                return (
                    f"tunes the optimiser with the relaxation off, but {key} is conditional "
                    f"on {ref}"
                )
    return None


def default_strategy(space: SearchSpace, trials: int) -> Strategy:
    """``two_stage`` for a space that searches both the optimiser and a relaxation (so
    the job's best cannot lose to its own tuned baseline), else ``joint``."""
    if two_stage_problem(space, trials) is None:
        return Strategy(name="two_stage")
    return Strategy(name="joint")


def stage_trials(strategy: Strategy, trials: int) -> tuple[int, int]:
    """The budget of stage 1 and stage 2: ``round(trials · stage1_fraction)``, at least one
    trial each."""
    fraction = strategy.stage1_fraction or DEFAULT_STAGE1_FRACTION
    first = min(max(1, round(trials * fraction)), trials - 1)
    return first, trials - first


def stage1_space(space: SearchSpace) -> SearchSpace:
    """Stage 1's space: the optimiser parameters of ``space``, relaxation off."""
    params: list[tuple[str, Any]] = [("relax.schedule", FixedParam("none"))]
    params += [(k, p) for k, p in space.params.items() if is_optimiser_key(k)]
    return SearchSpace(params)


def space_for_stage(space: SearchSpace, stage: int | None) -> SearchSpace:
    """The space a trial of ``stage`` was sampled from: stage 1's for stage 1, else the
    whole space (stage 2 samples it with the optimiser held fixed by the sampler)."""
    return stage1_space(space) if stage == 1 else space


def startup_trials(dimensions: int, trials: int) -> int:
    """Random trials before TPE models a search of ``dimensions`` over ``trials`` trials:
    one per searched dimension, at most a third of the trials, at least 2."""
    return max(2, min(dimensions, trials // 3))
