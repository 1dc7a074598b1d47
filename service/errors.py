"""The exception hierarchy of the service.

Every error relaxtune raises on purpose derives from :class:`RelaxtuneError` (defined in
``search_spaces._errors``, the lowest layer, so the workers' errors share it), so callers
(the HTTP layer, the CLI) can map them to status codes and exit codes in one place, and
anything else reaching them is a bug.
"""

from __future__ import annotations

from search_spaces._errors import RelaxtuneError, SpecError

__all__ = [
    "Conflict",
    "ExportFailed",
    "LimitExceeded",
    "NotFound",
    "RelaxtuneError",
    "SearchFailed",
    "SpecError",
    "StoreError",
]


class NotFound(RelaxtuneError):
    """The object does not exist, or the caller may not see it.

    Both cases share one type so that a tenant cannot probe for other tenants' job ids.
    """


class Conflict(RelaxtuneError):
    """The object exists but is in a state that does not allow the operation."""


class LimitExceeded(RelaxtuneError):
    """A per-tenant limit would be exceeded.

    ``field`` names the offending spec field (dotted path) when the limit is on the job spec
    (``budget.trials``), and is ``None`` for limits on the tenant's state (active jobs).
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class StoreError(RelaxtuneError):
    """A database operation failed; wraps the SQLAlchemy error with what was being done."""

    def __init__(self, operation: str, cause: BaseException) -> None:
        super().__init__(f"database error while {operation}: {type(cause).__name__}")
        self.operation = operation
        self.__cause__ = cause


class SearchFailed(RelaxtuneError, RuntimeError):
    """A search ended without a result. The message is the job's ``error`` as users read it:
    why, starting with the first failed trial's reason (``trial 0: ValueError: …``)."""


class ExportFailed(RelaxtuneError, RuntimeError):
    """The best trial could not be exported (no completed trial, no saved state, or the
    exported checkpoint does not verify); the trials are kept and the export can be retried."""
