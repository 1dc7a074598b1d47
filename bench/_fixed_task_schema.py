"""Torch-free schema of the benchmark task ``fixed_time`` (``_fixed_task.py``), registered
through the entry point group ``relaxtune.task_schemas`` so the API accepts its specs."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from search_spaces.tasks import TaskSchema

SCHEMA_ENTRY_POINT = "fixed_time = _fixed_task_schema:SCHEMA"


class FixedTimeModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    epoch_seconds: float = Field(1.0, ge=0, le=3600, allow_inf_nan=False)


class FixedTimeData(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


SCHEMA = TaskSchema(
    name="fixed_time", model=FixedTimeModel, data=FixedTimeData, metric="mse", mode="min"
)
