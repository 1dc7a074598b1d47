"""The one error type of the package: a refused spec, search space or override."""

from __future__ import annotations


class SpecError(ValueError):
    """A job spec, search space or hyperparameter override was refused.

    ``field`` is the dotted path of the offending value (``budget.trials``,
    ``search_space.relax.theta_max.low``, ``spec`` for the document as a whole); it is
    never empty. ``message`` says what is wrong and, where there is a closed set, what is
    allowed. ``str(error)`` is ``"<field>: <message>"``.

    It derives from :class:`ValueError` so pydantic validators may raise it; the pydantic
    conversion in :mod:`search_spaces._spec` unwraps it again, keeping the inner path.
    """

    #: Longest message kept: messages quote user values, which may be large.
    MAX_MESSAGE = 1000

    def __init__(self, field: str, message: str) -> None:
        self.field = field or "spec"
        if len(message) > self.MAX_MESSAGE:
            message = message[: self.MAX_MESSAGE - 3] + "..."
        self.message = message
        super().__init__(f"{self.field}: {message}")

    def __reduce__(self) -> tuple[type[SpecError], tuple[str, str]]:
        # Keep the two-argument constructor picklable (errors cross process boundaries).
        return (type(self), (self.field, self.message))
