"""The event catalog: one row per event type, and the scopes each role seeds."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._errors import CatalogError

EVENT_TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+\Z")
PERMISSION_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+\Z")
ROLE_PATTERN = re.compile(r"^[A-Z][A-Z0-9_]*\Z")
SEVERITIES = ("silent", "info", "success", "warning", "error")


@dataclass(frozen=True, slots=True)
class CatalogRow:
    type: str
    required_permission: str
    default_ui_severity: str
    label: str

    @property
    def family(self) -> str:
        """The permission's family, ``claims`` for ``claims.read``."""
        return self.required_permission.split(".", 1)[0]


@dataclass(frozen=True, slots=True)
class Catalog:
    rows: Mapping[str, CatalogRow]
    roles: Mapping[str, frozenset[str]]
    source: str = "<memory>"
    _seeded: frozenset[str] = field(default=frozenset(), repr=False)

    def row(self, event_type: str) -> CatalogRow | None:
        return self.rows.get(event_type)

    def scopes_for_roles(self, roles: Iterable[str]) -> frozenset[str]:
        """Scopes seeded by ``roles``; unknown roles seed nothing."""
        seeded: set[str] = set()
        for role in roles:
            seeded |= self.roles.get(role, frozenset())
        return frozenset(seeded)

    def roles_seeding(self, scope: str) -> list[str]:
        """Roles whose table entry seeds ``scope``, sorted."""
        return sorted(name for name, scopes in self.roles.items() if scope in scopes)

    def is_seeded(self, scope: str) -> bool:
        return scope in self._seeded

    def with_row(self, row: CatalogRow) -> Catalog:
        """A copy with ``row`` added or replaced: how a deploy lands a new type."""
        rows = dict(self.rows)
        rows[row.type] = row
        return Catalog(rows, self.roles, self.source, self._seeded)


def parse_catalog(text: str, *, source: str) -> Catalog:
    """Parse and validate catalog TOML; every error names ``source``, row and field."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise CatalogError(f"not valid TOML ({error})", source=source) from error

    unknown = set(document) - {"events", "roles"}
    if unknown:
        raise CatalogError(
            f"unknown top-level keys {sorted(unknown)}; expected 'events' and 'roles'",
            source=source,
        )
    events = document.get("events")
    if not isinstance(events, list) or not events:
        raise CatalogError(
            "expected at least one [[events]] row", source=source, field="events"
        )

    rows: dict[str, CatalogRow] = {}
    for index, raw in enumerate(events):
        row = _parse_row(raw, index, source)
        if row.type in rows:
            raise CatalogError(
                f"type '{row.type}' appears twice",
                source=source,
                row=f"events[{index}]",
                field="type",
            )
        rows[row.type] = row

    roles = _parse_roles(document.get("roles", {}), source)
    seeded = frozenset().union(*roles.values()) if roles else frozenset()
    return Catalog(rows, roles, source, seeded)


def _parse_row(raw: Any, index: int, source: str) -> CatalogRow:
    name = f"events[{index}]"
    if not isinstance(raw, dict):
        raise CatalogError("expected a table", source=source, row=name)
    event_type = raw.get("type")
    if isinstance(event_type, str):
        name = f"events[{index}] (type '{event_type}')"
    allowed = {"type", "requiredPermission", "defaultUiSeverity", "label"}
    for key in raw:
        if key not in allowed:
            raise CatalogError(
                f"unknown key; expected one of {sorted(allowed)}",
                source=source,
                row=name,
                field=key,
            )

    def text(key: str) -> str:
        value = raw.get(key)
        if not isinstance(value, str) or not value.strip():
            raise CatalogError(
                "missing or empty; expected a non-empty string",
                source=source,
                row=name,
                field=key,
            )
        return value

    event_type = text("type")
    if not EVENT_TYPE_PATTERN.match(event_type):
        raise CatalogError(
            f"'{event_type}' is not an event type like 'claim.submitted'",
            source=source,
            row=name,
            field="type",
        )
    permission = text("requiredPermission")
    if not PERMISSION_PATTERN.match(permission):
        raise CatalogError(
            f"'{permission}' is not a scope like 'claims.read'",
            source=source,
            row=name,
            field="requiredPermission",
        )
    severity = text("defaultUiSeverity")
    if severity not in SEVERITIES:
        raise CatalogError(
            f"'{severity}' is not one of {', '.join(SEVERITIES)}",
            source=source,
            row=name,
            field="defaultUiSeverity",
        )
    label = text("label")
    if "\n" in label or "\r" in label:
        raise CatalogError("must be one line", source=source, row=name, field="label")
    return CatalogRow(event_type, permission, severity, label)


def _parse_roles(raw: Any, source: str) -> dict[str, frozenset[str]]:
    if not isinstance(raw, dict):
        raise CatalogError("expected a table of roles", source=source, field="roles")
    roles: dict[str, frozenset[str]] = {}
    for role, entry in raw.items():
        name = f"roles.{role}"
        if not ROLE_PATTERN.match(role):
            raise CatalogError(
                "role names are upper case like 'BILLING_SPECIALIST'",
                source=source,
                row=name,
            )
        scopes = entry.get("scopes") if isinstance(entry, dict) else None
        if not isinstance(scopes, list) or not all(
            isinstance(scope, str) and PERMISSION_PATTERN.match(scope)
            for scope in scopes
        ):
            raise CatalogError(
                "expected a list of scopes like ['claims.read']",
                source=source,
                row=name,
                field="scopes",
            )
        roles[role] = frozenset(scopes)
    return roles
