"""A job's progress: one typed shape written by the search, kept by the store, served by the
API and drawn by the dashboard.

The search driver reports it (``service.search.progress_of``), the store validates it on
every write and reads it back as this model, ``GET /v1/jobs/{id}`` returns it, and the pages
draw their progress bar from :attr:`Progress.fraction`. Nothing here imports torch or Ray.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = ["Progress", "ReportProgress"]


class ReportProgress(BaseModel):
    """Progress of a job's gain report (its retraining runs)."""

    model_config = ConfigDict(extra="allow")

    done: int = Field(0, ge=0, description="runs finished")
    total: int | None = Field(None, ge=0, description="runs the report needs")
    running: int = Field(0, ge=0)
    failed: int = Field(0, ge=0)


class Progress(BaseModel):
    """Trials of a job by state, its budget, and the best projected value so far."""

    model_config = ConfigDict(extra="ignore")

    complete: int = Field(0, ge=0, description="trials that finished their epochs")
    pruned: int = Field(0, ge=0, description="trials the scheduler stopped early")
    failed: int = Field(0, ge=0, description="trials that failed (not counting re-queued ones)")
    running: int = Field(0, ge=0, description="trials running now")
    total: int | None = Field(None, ge=0, description="the trial budget (budget.trials)")
    best_value: float | None = Field(
        None, description="the best projected objective so far (None before a complete trial)"
    )
    stage: int | None = Field(None, description="a two-stage job's latest stage with trials")
    report: ReportProgress | None = Field(None, description="the gain report's runs, once asked")

    @field_validator("best_value", mode="before")
    @classmethod
    def _finite(cls, value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value

    @property
    def finished(self) -> int:
        """Trials that used up budget: complete, pruned and failed."""
        return self.complete + self.pruned + self.failed

    @property
    def fraction(self) -> float | None:
        """Share of the trial budget used, in [0, 1] (``None`` without a budget)."""
        if not self.total:
            return None
        return min(max(self.finished / self.total, 0.0), 1.0)

    @classmethod
    def read(cls, value: Any) -> Progress:
        """The progress a store row holds; a row written by a release that stored another
        shape reads as empty rather than failing the page or the API."""
        if isinstance(value, Progress):
            return value
        try:
            return cls.model_validate(value if isinstance(value, dict) else {})
        except ValidationError:
            return cls()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (absent stage and report left out)."""
        absent = {key for key in ("stage", "report") if getattr(self, key) is None}
        return self.model_dump(exclude=absent)
