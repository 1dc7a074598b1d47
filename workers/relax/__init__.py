"""Constraint relaxation for equivariant networks (docs/METHOD.md).

Relaxed layers compute ``f_eq(x) + θ·W(x)``; schedules drive θ to 0; penalties keep W
near the equivariant subspace; projection maps the model back to an exactly equivariant
one; export turns it into plain torch.
"""

from ._adaptive import DualStrengths
from ._base import (
    FreeInit,
    ProjectionMode,
    RelaxedLayer,
    copy_module,
    free_parameters,
    record_inputs,
    relaxed_layers,
    reset_free,
    set_free_scale,
    set_layer_strengths,
    set_theta,
)
from ._equivariance import make_certificate, relative_error
from ._escnn import (
    BlockProjector,
    RelaxedLinear,
    RelaxedR2Conv,
    field_generator_action,
    relax_model,
)
from ._export import (
    NotExportableError,
    check_exportable,
    export_module,
    register_exporter,
    to_torchscript,
)
from ._normalisation import normalisation_layers, recompute_normalisation, sample_batches
from ._penalties import PENALTIES, PENALTY_FORMS, compute_penalties
from ._projection import project_model, reset_free_terms
from ._scalar_vector import (
    RelaxedScalarVectorLinear,
    ScalarVectorLinear,
    act_on_features,
    project_scalar_vector_map,
)
from ._schedules import (
    SCHEDULE_FAMILIES,
    Schedule,
    make_schedule,
    relaxation_end,
    tail_fraction,
)
from ._vector import SO3_GENERATORS, RelaxedVectorLinear, VectorLinear, project_vector_map

__all__ = [
    "PENALTIES",
    "PENALTY_FORMS",
    "SCHEDULE_FAMILIES",
    "SO3_GENERATORS",
    "BlockProjector",
    "DualStrengths",
    "FreeInit",
    "NotExportableError",
    "ProjectionMode",
    "RelaxedLayer",
    "RelaxedLinear",
    "RelaxedR2Conv",
    "RelaxedScalarVectorLinear",
    "RelaxedVectorLinear",
    "ScalarVectorLinear",
    "Schedule",
    "VectorLinear",
    "act_on_features",
    "check_exportable",
    "compute_penalties",
    "copy_module",
    "export_module",
    "field_generator_action",
    "free_parameters",
    "make_certificate",
    "make_schedule",
    "project_model",
    "project_scalar_vector_map",
    "project_vector_map",
    "normalisation_layers",
    "recompute_normalisation",
    "record_inputs",
    "register_exporter",
    "relax_model",
    "relaxation_end",
    "relative_error",
    "relaxed_layers",
    "reset_free",
    "reset_free_terms",
    "sample_batches",
    "set_free_scale",
    "set_layer_strengths",
    "set_theta",
    "tail_fraction",
    "to_torchscript",
]
