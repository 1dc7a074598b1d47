"""The root of relaxtune's errors, and this package's one error type (a refused spec, search
space or override).

:class:`RelaxtuneError` lives here, in the lowest layer, so that every package (this one,
``workers`` and ``service``) derives its errors from it: a caller that catches it catches
every failure relaxtune raises on purpose, and anything else reaching the top is a bug.
"""

from __future__ import annotations


class RelaxtuneError(Exception):
    """Root of every error relaxtune raises on purpose."""


class SpecError(RelaxtuneError, ValueError):
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
