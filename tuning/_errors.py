"""The tuner's one error, a branch of the project's exception tree.

    RealtimeError (hub.core)
    └── TuningInputError   a model, log or flag the tuner cannot use

The message always says where (file and line, file and key, or flag) and what was
expected, so the command line prints it as is, without a traceback.
"""

from __future__ import annotations

from hub.core import RealtimeError


class TuningInputError(RealtimeError):
    """An input of the tuner is invalid; ``where`` is file and line or key, or flag."""

    def __init__(self, message: str, *, where: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.reason = message
