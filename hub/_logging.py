"""Structured log lines: ``event=... key=value`` with tenant and replica on each."""

from __future__ import annotations

import logging
import sys
from typing import Any

log = logging.getLogger("hub")


def _value(value: Any) -> str:
    text = str(value)
    if not text or any(ch in text for ch in ' ="\n\r\t'):
        escaped = text.replace("\\", "\\\\").replace('"', '\\"')
        escaped = escaped.replace("\n", "\\n").replace("\r", "\\r")
        return f'"{escaped}"'
    return text


def log_event(level: int, event: str, **fields: Any) -> None:
    """One line per meaningful event; never pass a token here."""
    if not log.isEnabledFor(level):
        return
    rendered = " ".join(f"{key}={_value(value)}" for key, value in fields.items())
    log.log(level, "event=%s %s", event, rendered)


def configure_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(
            "ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # The RabbitMQ bus reports a lost connection itself, once per outage; the
    # client library would add a traceback and a line per reconnection attempt.
    logging.getLogger("aiormq.connection").setLevel(logging.CRITICAL)
