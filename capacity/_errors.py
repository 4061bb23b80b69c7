"""The capacity tools' one error, a branch of the project's exception tree.

    RealtimeError (hub.core)
    └── CapacityError   a workload, calibration, flag or measurement that cannot be used

The message says where (file and key, or flag) and what was expected, so the command
line prints it as is, without a traceback.
"""

from __future__ import annotations

from hub.core import RealtimeError


class CapacityError(RealtimeError):
    """An input of the capacity tools is unusable, or a measurement failed;
    ``where`` names the file and key, the flag, or the step."""

    def __init__(self, message: str, *, where: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.reason = message
