"""θ schedules: defined torch-free in ``search_spaces._schedules`` (the dashboard draws them
too); re-exported here for the layers and the training loop."""

from search_spaces._schedules import (
    SCHEDULE_FAMILIES,
    AdaptiveGate,
    ConstantSchedule,
    CosineSchedule,
    LinearDecaySchedule,
    NoneSchedule,
    Schedule,
    StepSchedule,
    TailedSchedule,
    TriangularSchedule,
    WarmupHoldDecaySchedule,
    make_schedule,
    relaxation_end,
    tail_fraction,
)

__all__ = [
    "SCHEDULE_FAMILIES",
    "AdaptiveGate",
    "ConstantSchedule",
    "CosineSchedule",
    "LinearDecaySchedule",
    "NoneSchedule",
    "Schedule",
    "StepSchedule",
    "TailedSchedule",
    "TriangularSchedule",
    "WarmupHoldDecaySchedule",
    "make_schedule",
    "relaxation_end",
    "tail_fraction",
]
