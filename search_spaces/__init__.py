"""Job specs and declarative hyperparameter search spaces (no torch, escnn or ray).

The public surface: :func:`parse_spec` reads a job spec into a :class:`JobSpec`; its
:meth:`JobSpec.resolved_space` is a :class:`SearchSpace` whose :meth:`SearchSpace.suggest`
samples a trial's flat hyperparameters (:func:`default_hparams` lists every key). Presets live
in ``presets/*.yaml``, example specs in ``examples/*.yaml``. Every refusal is a
:class:`SpecError` naming the offending field.
"""

from search_spaces._defaults import (
    CHOICES,
    INITS,
    PROJECTIONS,
    SCHEDULE_FAMILIES,
    SCHEDULE_PARAMS,
    check_hparams,
    default_hparams,
    hparam_keys,
    is_relaxing,
    parse_set_overrides,
    relaxation_off,
)
from search_spaces._document import MAX_DEPTH, MAX_DOCUMENT_BYTES, load_document
from search_spaces._errors import RelaxtuneError, SpecError
from search_spaces._examples import example_path, list_examples
from search_spaces._hparams import Hyperparameters, OptimParams, RelaxParams
from search_spaces._params import (
    CategoricalParam,
    FixedParam,
    FloatParam,
    IntParam,
    Param,
    SearchSpace,
)
from search_spaces._presets import list_presets, load_preset
from search_spaces._spec import (
    MAX_REPORT_SEEDS,
    MIN_REPORT_SEEDS,
    TASK_ENTRY_POINT_GROUP,
    AshaOptions,
    Budget,
    JobSpec,
    Objective,
    ReportOptions,
    Resources,
    gpu_available,
    parse_spec,
    registered_tasks,
)
from search_spaces._strategy import (
    STAGE_ATTR,
    STRATEGIES,
    Strategy,
    is_optimiser_key,
    relaxation_keys,
    space_for_stage,
    stage1_space,
    stage_trials,
    startup_trials,
)

__all__ = [
    "CHOICES",
    "INITS",
    "MAX_DEPTH",
    "MAX_DOCUMENT_BYTES",
    "MAX_REPORT_SEEDS",
    "MIN_REPORT_SEEDS",
    "PROJECTIONS",
    "SCHEDULE_FAMILIES",
    "SCHEDULE_PARAMS",
    "STAGE_ATTR",
    "STRATEGIES",
    "TASK_ENTRY_POINT_GROUP",
    "AshaOptions",
    "Budget",
    "CategoricalParam",
    "FixedParam",
    "FloatParam",
    "IntParam",
    "Hyperparameters",
    "JobSpec",
    "Objective",
    "OptimParams",
    "Param",
    "ReportOptions",
    "Resources",
    "SearchSpace",
    "RelaxParams",
    "RelaxtuneError",
    "SpecError",
    "Strategy",
    "check_hparams",
    "default_hparams",
    "example_path",
    "gpu_available",
    "hparam_keys",
    "is_optimiser_key",
    "is_relaxing",
    "list_examples",
    "list_presets",
    "load_document",
    "load_preset",
    "parse_set_overrides",
    "relaxation_off",
    "parse_spec",
    "registered_tasks",
    "relaxation_keys",
    "space_for_stage",
    "stage1_space",
    "stage_trials",
    "startup_trials",
]
