"""Constraint relaxation for equivariant networks (METHOD.md).

Relaxed layers compute ``f_eq(x) + θ·W(x)``; schedules drive θ to 0; penalties keep W
near the equivariant subspace; projection maps the model back to an exactly equivariant
one; export turns it into plain torch.
"""

from ._base import (
    FreeInit,
    ProjectionMode,
    RelaxedLayer,
    record_inputs,
    relaxed_layers,
    set_layer_strengths,
    set_theta,
)
from ._vector import SO3_GENERATORS, RelaxedVectorLinear, VectorLinear, project_vector_map

__all__ = [
    "FreeInit",
    "ProjectionMode",
    "RelaxedLayer",
    "RelaxedVectorLinear",
    "SO3_GENERATORS",
    "VectorLinear",
    "project_vector_map",
    "record_inputs",
    "relaxed_layers",
    "set_layer_strengths",
    "set_theta",
]
