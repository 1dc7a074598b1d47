"""Schema of the ``nbody`` task (the task itself: ``workers/tasks/nbody.py``).

The field bounds are the task's size caps (EGNN width and depth, simulated systems).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from search_spaces.tasks import TaskSchema

Int = Annotated[int, Field(strict=True)]


class NBodyModel(BaseModel):
    """``model:`` of an nbody spec."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hidden: Int = Field(64, ge=1, le=512)
    layers: Int = Field(4, ge=1, le=12)
    vector_channels: Int = Field(4, ge=1, le=64)


class NBodyData(BaseModel):
    """``data:`` of an nbody spec (systems are simulated, then cached)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    train_size: Int = Field(3000, ge=1, le=100_000)
    val_size: Int = Field(2000, ge=1, le=20_000)
    test_size: Int = Field(2000, ge=1, le=20_000)
    data_seed: Int = Field(0, ge=0, lt=2**32)
    #: local runs only: the cache folder of simulated systems
    cache_dir: str | None = Field(None, strict=True, max_length=4096)


SCHEMA = TaskSchema(
    name="nbody",
    model=NBodyModel,
    data=NBodyData,
    metric="mse",
    mode="min",
    path_keys=("cache_dir",),
)
