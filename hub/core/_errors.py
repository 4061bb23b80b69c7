"""The project's one exception tree.

    RealtimeError
    ├── CatalogError      a catalog file or row is invalid (names file, row, field)
    ├── EnvelopeError     an ingested envelope is invalid (names member and field)
    ├── TokenError        a bearer token is missing, forged, expired or unusable
    ├── StreamLimitError  a token or tenant already holds its most open streams
    ├── ConfigError       a setting or flag has a value the hub cannot use
    ├── BusUnavailable    the bus cannot take messages now (broker unreachable)
    └── ScrapeError       a metrics scrape is not the Prometheus text the hub exposes

Foreign errors (TOML, JSON, JWT, OS) are translated into these at the one place that
meets them and raised ``from`` the original.
"""

from __future__ import annotations


class RealtimeError(Exception):
    """Base of every error the project raises on purpose."""


class CatalogError(RealtimeError):
    """The event catalog cannot be used; the message names file, row and field."""

    def __init__(
        self,
        message: str,
        *,
        source: str,
        row: str | None = None,
        field: str | None = None,
    ) -> None:
        where = source
        if row is not None:
            where += f": {row}"
        if field is not None:
            where += f": field '{field}'"
        super().__init__(f"{where}: {message}")
        self.source = source
        self.row = row
        self.field = field


class EnvelopeError(RealtimeError):
    """An envelope offered at ingest is refused; ``member`` is its index in the body."""

    def __init__(self, message: str, *, member: int | None, field: str | None) -> None:
        where = []
        if member is not None:
            where.append(f"member {member}")
        if field is not None:
            where.append(f"field '{field}'")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)
        self.member = member
        self.field = field
        self.reason = message


class TokenError(RealtimeError):
    """A bearer token was refused; ``status`` is 401 or 403, ``code`` the JSON code."""

    def __init__(self, message: str, *, code: str = "invalid_token", status: int = 401):
        super().__init__(message)
        self.code = code
        self.status = status


class ConfigError(RealtimeError):
    """A setting cannot be used; the message names the variable or flag."""


class StreamLimitError(RealtimeError):
    """Opening one more stream would pass a per-token or per-tenant cap."""


class BusUnavailable(RealtimeError):
    """The bus cannot take messages now; the message says why. Transient: the bus
    reconnects by itself, and the caller may retry with the same event ids."""


class ScrapeError(RealtimeError):
    """A replica's ``/metrics`` answer cannot be read as the hub's exposition."""
