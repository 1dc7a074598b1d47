"""The job spec users submit (README.md, "The job spec"), validated with errors naming the field.

    name: rotmnist-c8
    task: rotated_mnist            # a name in the entry point group relaxtune.tasks
    model: {group: C8}             # free-form, read by the task
    data: {train_size: 1000}       # free-form, read by the task
    search_space: relax            # preset | {preset: P, override: {...}} | {KEY: PARAM, ...}
    budget: {trials: 16, epochs: 8, max_concurrent: 2}
    objective: {metric: val_accuracy, mode: max}
    resources: {cpu: 1, gpu: 0}    # per trial; fractional gpu allowed
    scheduler: asha                # asha | none; options under asha: {grace_period, reduction_factor}
    seed: 0
    retries: 0                     # per-trial retry budget
    timeout_s: 3600                # optional wall-clock limit of the whole search
    strategy: two_stage            # joint | two_stage | {name: two_stage, stage1_fraction: 0.5}
    report: {seeds: 5}             # optional gain report after the search (default: none)

Read specs with :func:`parse_spec`: it accepts YAML/JSON text or a mapping and raises only
:class:`SpecError`. ``JobSpec.model_validate`` works too but raises pydantic's errors.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from search_spaces._document import check_tree, load_document
from search_spaces._errors import SpecError
from search_spaces._params import SearchSpace
from search_spaces._presets import list_presets, load_preset
from search_spaces._strategy import Strategy, default_strategy, two_stage_problem
from search_spaces._suggest import did_you_mean

#: Entry point group through which tasks (built-in and plugins) register.
TASK_ENTRY_POINT_GROUP = "relaxtune.tasks"

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")

MAX_TRIALS = 10_000
MAX_EPOCHS = 10_000
#: Seeds of a gain report: at least 2 (a paired interval needs two differences).
MIN_REPORT_SEEDS = 2
MAX_REPORT_SEEDS = 50

StrictInt = Annotated[int, Field(strict=True)]
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]


def registered_tasks() -> tuple[str, ...]:
    """Names of the tasks registered under ``relaxtune.tasks`` (sorted).

    Only the entry point *names* are read; the task modules (which import torch) are not
    loaded, so this is safe in the API process.
    """
    return tuple(sorted({ep.name for ep in entry_points(group=TASK_ENTRY_POINT_GROUP)}))


def gpu_available() -> bool:
    """Whether GPU trials can be placed: ``nvidia-smi`` is on the PATH here, or
    ``RAY_ADDRESS`` names a Ray cluster (whose GPU workers the cluster itself schedules)."""
    return shutil.which("nvidia-smi") is not None or bool(os.environ.get("RAY_ADDRESS"))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Budget(_Section):
    """How much a search may spend: trials, epochs per trial, trials running at once."""

    trials: StrictInt = Field(ge=1, le=MAX_TRIALS)
    epochs: StrictInt = Field(ge=1, le=MAX_EPOCHS)
    max_concurrent: StrictInt = Field(default=1, ge=1, le=MAX_TRIALS)

    @model_validator(mode="after")
    def _concurrency_within_trials(self) -> Budget:
        if self.max_concurrent > self.trials:
            raise SpecError(
                "budget.max_concurrent",
                f"max_concurrent ({self.max_concurrent}) cannot exceed trials ({self.trials})",
            )
        return self


class Objective(_Section):
    """The metric to optimise, always measured on the projected model (``val_<metric>``)."""

    metric: str = Field(strict=True, pattern=r"^val_[a-z][a-z0-9_]*$", max_length=64)
    mode: Literal["max", "min"]


class Resources(_Section):
    """Per-trial resources; ``gpu`` may be fractional (several trials share a GPU)."""

    cpu: Number = Field(default=1.0, gt=0, le=1024)
    gpu: Number = Field(default=0.0, ge=0, le=64)

    @field_validator("gpu")
    @classmethod
    def _gpu_present(cls, gpu: float, info: ValidationInfo) -> float:
        context = info.context or {}
        check: Callable[[], bool] = context.get("gpu_available") or gpu_available
        if gpu > 0 and not check():
            raise SpecError(
                "resources.gpu",
                f"gpu is {gpu:g} but no GPU is available here (no nvidia-smi, no RAY_ADDRESS); "
                "use gpu: 0",
            )
        return gpu


class AshaOptions(_Section):
    """Options of the ASHA scheduler (Ray Tune ``ASHAScheduler``)."""

    grace_period: StrictInt = Field(default=1, ge=1, le=MAX_EPOCHS)
    reduction_factor: Number = Field(default=2.0, gt=1, le=100)


class ReportOptions(_Section):
    """The gain report run after the search: the best configuration retrained on ``seeds``
    fixed seeds, as found and with the relaxation switched off (``service/report.py``)."""

    seeds: StrictInt = Field(ge=MIN_REPORT_SEEDS, le=MAX_REPORT_SEEDS)


class JobSpec(BaseModel):
    """A validated search job. Build it with :func:`parse_spec`.

    Guarantees: the task is registered; the search space resolves (:meth:`resolved_space`)
    to a valid :class:`SearchSpace`; ``max_concurrent <= trials``; ``asha`` is set exactly
    when ``scheduler`` is ``asha`` (defaults filled in) and its grace period fits in the
    epochs; ``model``/``data`` hold only JSON values; ``strategy`` is set (its default
    depends on the space) and ``two_stage`` only where it can run; ``to_dict()``
    round-trips through :func:`parse_spec`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(strict=True)
    task: str = Field(strict=True)
    model: dict[str, Any] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict)
    search_space: Any
    budget: Budget
    objective: Objective
    resources: Resources = Field(default_factory=Resources)
    scheduler: Literal["asha", "none"] = "asha"
    asha: AshaOptions | None = None
    seed: StrictInt = Field(default=0, ge=0, lt=2**32)
    retries: StrictInt = Field(default=0, ge=0, le=100)
    timeout_s: Number | None = Field(default=None, gt=0)
    #: filled in from the space when not given (``search_spaces._strategy.default_strategy``)
    strategy: Strategy | None = None
    report: ReportOptions | None = None

    _space: SearchSpace = PrivateAttr()

    @field_validator("name")
    @classmethod
    def _name_form(cls, name: str) -> str:
        if not _NAME.fullmatch(name):
            raise SpecError(
                "name", f"must be 1-64 characters of A-Z a-z 0-9 _ . - (got {name[:80]!r})"
            )
        return name

    @field_validator("task")
    @classmethod
    def _task_registered(cls, task: str, info: ValidationInfo) -> str:
        context = info.context or {}
        known = tuple(context["tasks"]) if context.get("tasks") is not None else registered_tasks()
        if task not in known:
            if not known:
                raise SpecError(
                    "task",
                    f"unknown task {task!r}: no tasks are registered (is relaxtune installed?)",
                )
            raise SpecError("task", f"unknown task {task!r}; registered tasks: {', '.join(known)}")
        return task

    @field_validator("model", "data", mode="before")
    @classmethod
    def _json_values(cls, value: Any, info: ValidationInfo) -> Any:
        field = info.field_name or "model"
        if not isinstance(value, Mapping):
            raise SpecError(field, f"must be a mapping of options, got {value!r}")
        check_tree(value, field)
        # A deep copy through JSON: the spec must not alias the caller's mutable data.
        return json.loads(json.dumps(dict(value)))

    @field_validator("search_space", mode="before")
    @classmethod
    def _canonical_space(cls, value: Any) -> Any:
        return _canonical_search_space(value)

    @model_validator(mode="before")
    @classmethod
    def _asha_defaults(cls, data: Any) -> Any:
        # Fill ASHA's defaults here so the canonical form always shows what will run.
        if isinstance(data, Mapping) and data.get("scheduler", "asha") == "asha":
            if data.get("asha") is None:
                data = {**data, "asha": {}}
        return data

    @model_validator(mode="after")
    def _cross_checks(self, info: ValidationInfo) -> JobSpec:
        self._check_task(info.context or {})
        if self.scheduler == "asha":
            if self.asha is not None and self.asha.grace_period > self.budget.epochs:
                raise SpecError(
                    "asha.grace_period",
                    f"grace_period ({self.asha.grace_period}) cannot exceed budget.epochs "
                    f"({self.budget.epochs})",
                )
        elif self.asha is not None:
            raise SpecError("asha", "asha options are given but scheduler is 'none'")
        self._space = _resolve_search_space(self.search_space)
        self._check_strategy()
        return self

    def _check_task(self, context: Mapping[str, Any]) -> None:
        """``model``/``data``/``objective`` against the task's torch-free schema."""
        from search_spaces.tasks import check_task_config, task_schema

        local = context.get("local", True)
        schema = task_schema(self.task)
        if schema is None:
            if not local:
                raise SpecError(
                    "task",
                    f"task {self.task!r} declares no schema (entry point group "
                    "relaxtune.task_schemas); it can run only locally",
                )
            return
        check_task_config(
            schema, self.model, self.data, local=local, data_root=context.get("data_root")
        )
        metrics = schema.objective_metrics()
        if self.objective.metric not in metrics:
            raise SpecError(
                "objective.metric",
                f"unknown metric {self.objective.metric!r} for task {self.task}"
                f"{did_you_mean(self.objective.metric, metrics)} (metrics: {', '.join(metrics)})",
            )
        if self.objective.metric == metrics[0] and self.objective.mode != schema.mode:
            verb = "maximised" if schema.mode == "max" else "minimised"
            raise SpecError("objective.mode", f"{metrics[0]} must be {verb}: use {schema.mode!r}")

    def _check_strategy(self) -> None:
        trials = self.budget.trials
        if self.strategy is None:
            # frozen model: fill the default in place, so the canonical form shows what runs
            object.__setattr__(self, "strategy", default_strategy(self._space, trials))
        elif self.strategy.name == "two_stage":
            problem = two_stage_problem(self._space, trials)
            if problem is not None:
                raise SpecError("strategy", f"two_stage {problem}; use strategy: joint")

    def resolved_space(self) -> SearchSpace:
        """The search space: the preset with its overrides merged, or the explicit space."""
        return self._space

    def to_dict(self) -> dict[str, Any]:
        """Canonical JSON-able form (defaults filled in); ``parse_spec`` accepts it back."""
        return self.model_dump(mode="json")

    def to_json(self) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict())


def _canonical_search_space(value: Any) -> Any:
    """Check the shape of ``search_space`` and return its canonical (JSON-able) form."""
    field = "search_space"
    if isinstance(value, str):
        load_preset(value, field)
        return value
    if not isinstance(value, Mapping):
        raise SpecError(
            field,
            f"give a preset name ({', '.join(list_presets())}), "
            f"{{preset: NAME, override: {{...}}}} or a mapping of parameters; got {value!r}",
        )
    if "preset" in value:
        for key in value:
            if key not in ("preset", "override"):
                raise SpecError(
                    f"{field}.{key}",
                    f"unknown field {key!r} next to 'preset'; allowed: preset, override",
                )
        preset = value["preset"]
        if not isinstance(preset, str):
            raise SpecError(f"{field}.preset", f"must be a preset name, got {preset!r}")
        base = load_preset(preset, f"{field}.preset")
        override = value.get("override") or {}
        merged = base.merged(override, field).to_dict()
        return {
            "preset": preset,
            "override": {key: merged.get(key) for key in override},
        }
    return SearchSpace.from_dict(value, field).to_dict()


def _resolve_search_space(canonical: Any) -> SearchSpace:
    if isinstance(canonical, str):
        return load_preset(canonical)
    if "preset" in canonical:
        return load_preset(canonical["preset"]).merged(canonical["override"])
    return SearchSpace.from_dict(canonical)


# -- reading ---------------------------------------------------------------------------------


def parse_spec(
    source: str | bytes | Mapping[str, Any],
    *,
    tasks: tuple[str, ...] | list[str] | None = None,
    gpu_available: Callable[[], bool] | None = None,
    local: bool = True,
    data_root: str | os.PathLike[str] | None = None,
) -> JobSpec:
    """Read and validate a job spec; raise :class:`SpecError` (never anything else) if refused.

    ``source`` is YAML or JSON text (str or UTF-8 bytes; see
    :func:`search_spaces._document.load_document` for the limits) or an already parsed
    mapping. ``tasks`` replaces the registered task names and ``gpu_available`` the GPU
    check (both for tests and for services that know better).

    ``local=False`` reads a tenant's spec (over HTTP): no option may name a filesystem path,
    and a named dataset must exist under ``data_root`` (the server's dataset root).
    """
    if isinstance(source, Mapping):
        check_tree(source, "")
        data: Any = source
    else:
        data = load_document(source)
    if data is None:
        raise SpecError("spec", "the document is empty; a job spec is a mapping")
    if not isinstance(data, Mapping):
        raise SpecError("spec", f"a job spec must be a mapping, got {type(data).__name__}")
    context = {
        "tasks": tasks,
        "gpu_available": gpu_available,
        "local": local,
        "data_root": data_root,
    }
    try:
        return JobSpec.model_validate(dict(data), context=context)
    except ValidationError as exc:
        raise spec_error_from_validation(exc) from None


_SECTIONS: dict[tuple[str, ...], type[BaseModel]] = {
    (): JobSpec,
    ("budget",): Budget,
    ("objective",): Objective,
    ("resources",): Resources,
    ("asha",): AshaOptions,
    ("strategy",): Strategy,
    ("report",): ReportOptions,
}


def spec_error_from_validation(exc: ValidationError) -> SpecError:
    """Turn pydantic's first error into a :class:`SpecError` (loc joined with dots)."""
    error = exc.errors(include_url=False)[0]
    inner = (error.get("ctx") or {}).get("error")
    if isinstance(inner, SpecError):
        return inner
    loc = tuple(str(part) for part in error["loc"])
    field = ".".join(loc) or "spec"
    kind = error["type"]
    if kind == "extra_forbidden":
        section = _SECTIONS.get(loc[:-1])
        known = list(section.model_fields) if section else []
        allowed = f" (allowed: {', '.join(known)})" if section else ""
        return SpecError(field, f"unknown field {loc[-1]!r}{did_you_mean(loc[-1], known)}{allowed}")
    if kind == "missing":
        return SpecError(field, "required field is missing")
    shown = repr(error.get("input"))
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return SpecError(field, f"{error['msg']} (got {shown})")
