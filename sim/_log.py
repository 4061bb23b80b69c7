"""Structured log lines of the simulator: ``event=... key=value``.

One line per meaningful event of the world (a replica closing, a fault, an admin
disconnect), never per frame; each names its replica or tenant.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("sim")


def _value(value: Any) -> str:
    text = str(value)
    if not text or any(ch in text for ch in ' ="\n\r\t'):
        escaped = text.replace("\\", "\\\\").replace('"', '\\"')
        return '"' + escaped.replace("\n", "\\n").replace("\r", "\\r") + '"'
    return text


def log_event(level: int, event: str, **fields: Any) -> None:
    if not log.isEnabledFor(level):
        return
    rendered = " ".join(f"{key}={_value(value)}" for key, value in fields.items())
    log.log(level, "event=%s %s", event, rendered)
