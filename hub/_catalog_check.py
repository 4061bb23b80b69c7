"""``rcm-realtime catalog check``: every finding in a catalog file, not just the first.

The hub's own parser stops at the first bad row; this check reads the file leniently
and lists everything an operator must fix before a deploy:

- each row has a valid type, ``requiredPermission``, ``defaultUiSeverity`` and
  ``label``, and no type appears twice;
- the role table is well formed, and every permission a row requires is seeded by at
  least one role (otherwise no token carries it and every subscriber drops the type);
- every event type in use has a row (otherwise the hub drops it as ``unknown_type``).

"In use" comes from pluggable sources, each yielding ``TypeUse`` records:

- the types the hub emits itself (``batch.completed``, ``batch.failed``);
- scenario files (``*.toml`` under a directory, see ``scenario_type_uses``);
- plain lists given with ``--uses FILE`` (one type per line, ``#`` comments);
- any installed package that declares an entry point in the group
  ``rcm_realtime.event_types``: a callable with no arguments returning event types
  (strings) or ``(type, where)`` pairs. The simulator's emitters and the scenario
  runner plug in this way without the hub importing them.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._config import SHIPPED_CATALOG, settings_from_env
from .core import (
    EVENT_TYPE_PATTERN,
    PERMISSION_PATTERN,
    ROLE_PATTERN,
    SEVERITIES,
    CatalogError,
    parse_catalog,
)

ENTRY_POINT_GROUP = "rcm_realtime.event_types"
ROW_KEYS = ("type", "requiredPermission", "defaultUiSeverity", "label")
# Types the hub itself puts on streams: synthesized completions and recorded failures.
HUB_EMITTED_TYPES = ("batch.completed", "batch.failed")

# How scenario files name event types (documented in the README):
TYPE_VALUE_KEYS = frozenset({"event_type", "eventType"})
TYPE_LIST_KEYS = frozenset({"event_types", "eventTypes"})
# ``type = "..."`` and ``types = [...]`` count only inside a table or array under one
# of these keys, so a fault's ``type = "bus.pause"`` is never taken for an event type.
EVENT_CONTAINER_KEYS = frozenset(
    {"events", "emitters", "emitter", "workload", "publish", "publishers"}
)
# A table under one of these keys (inside an event container) maps types to weights.
MIX_KEYS = frozenset({"mix", "event_mix", "eventMix", "types"})
# A table that names an event type together with its permission declares a row (a
# scenario deploying a new type), so that type is not a use needing a catalog row.
DECLARING_KEYS = frozenset({"permission", "requiredPermission"})


@dataclass(frozen=True, slots=True)
class TypeUse:
    event_type: str
    where: str


@dataclass(frozen=True, slots=True)
class CheckFinding:
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass(frozen=True, slots=True)
class UseSource:
    """One place event types in use come from, with what it yielded."""

    name: str
    uses: tuple[TypeUse, ...]
    problems: tuple[CheckFinding, ...] = ()


@dataclass(frozen=True, slots=True)
class CheckReport:
    source: str
    rows: int
    roles: int
    sources: tuple[UseSource, ...]
    findings: tuple[CheckFinding, ...] = field(default_factory=tuple)

    @property
    def exit_status(self) -> int:
        return 1 if self.findings else 0

    def as_json(self) -> dict[str, Any]:
        return {
            "catalog": self.source,
            "rows": self.rows,
            "roles": self.roles,
            "sources": [
                {"name": s.name, "types": sorted({u.event_type for u in s.uses})}
                for s in self.sources
            ],
            "findings": [
                {"where": f.where, "message": f.message} for f in self.findings
            ],
        }

    def render(self) -> str:
        lines = [f"catalog {self.source}: {self.rows} rows, {self.roles} roles"]
        for source in self.sources:
            kinds = len({use.event_type for use in source.uses})
            lines.append(f"types in use from {source.name}: {kinds}")
        if not self.findings:
            lines.append("no findings")
        else:
            lines.append(f"{len(self.findings)} finding(s):")
            lines += [f"  {finding}" for finding in self.findings]
        return "\n".join(lines) + "\n"


# -- sources of types in use ---------------------------------------------------------


def hub_type_uses() -> UseSource:
    where = "the hub (synthesized or recorded)"
    return UseSource("the hub", tuple(TypeUse(t, where) for t in HUB_EMITTED_TYPES))


def list_file_uses(path: Path) -> UseSource:
    """One event type per line; blank lines and ``#`` comments are ignored."""
    name = str(path)
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        return UseSource(name, (), (CheckFinding(name, f"cannot read ({reason})"),))
    uses: list[TypeUse] = []
    problems: list[CheckFinding] = []
    for number, line in enumerate(text.splitlines(), start=1):
        item = line.split("#", 1)[0].strip()
        if not item:
            continue
        if EVENT_TYPE_PATTERN.match(item):
            uses.append(TypeUse(item, f"{name}:{number}"))
        else:
            problems.append(
                CheckFinding(
                    f"{name}:{number}",
                    f"'{item}' is not an event type like 'claim.submitted'",
                )
            )
    return UseSource(name, tuple(uses), tuple(problems))


def scenario_type_uses(directory: Path) -> UseSource:
    """Event types named in ``*.toml`` files under ``directory`` (recursively).

    A type the same file declares (a step that deploys it with its permission)
    is left out: the scenario brings its own row.
    """
    uses: list[TypeUse] = []
    problems: list[CheckFinding] = []
    files = sorted(directory.rglob("*.toml")) if directory.is_dir() else []
    for path in files:
        try:
            document = tomllib.loads(path.read_text("utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
            problems.append(CheckFinding(str(path), f"cannot read as TOML ({error})"))
            continue
        declared = set(_declared_in(document))
        for event_type, key_path in _types_in(document, (), inside_events=False):
            if event_type not in declared:
                uses.append(TypeUse(event_type, f"{path} ({key_path})"))
    name = f"{len(files)} scenario file(s) under {directory}"
    return UseSource(name, tuple(uses), tuple(problems))


def _declared_in(node: Any) -> Iterator[str]:
    if isinstance(node, list):
        for item in node:
            yield from _declared_in(item)
    elif isinstance(node, dict):
        if DECLARING_KEYS & node.keys():
            for key in TYPE_VALUE_KEYS | {"type"}:
                value = node.get(key)
                if isinstance(value, str):
                    yield value
        for value in node.values():
            yield from _declared_in(value)


def _types_in(
    node: Any, path: tuple[str, ...], *, inside_events: bool
) -> Iterator[tuple[str, str]]:
    if isinstance(node, list):
        for index, item in enumerate(node):
            indexed = (*path[:-1], f"{path[-1]}[{index}]") if path else (f"[{index}]",)
            yield from _types_in(item, indexed, inside_events=inside_events)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        child = (*path, key)
        key_path = ".".join(child)
        if key in TYPE_VALUE_KEYS or (key == "type" and inside_events):
            if isinstance(value, str) and EVENT_TYPE_PATTERN.match(value):
                yield value, key_path
        elif key in TYPE_LIST_KEYS or (key in MIX_KEYS and inside_events):
            members = value if isinstance(value, list) else list(value or ())
            for member in members:
                if isinstance(member, str) and EVENT_TYPE_PATTERN.match(member):
                    yield member, key_path
        if isinstance(value, dict | list):
            yield from _types_in(
                value,
                child,
                inside_events=inside_events or key in EVENT_CONTAINER_KEYS,
            )


def entry_point_uses(
    load: Callable[[], Iterable[importlib.metadata.EntryPoint]] | None = None,
) -> UseSource:
    """Types declared by installed packages through the entry point group."""
    points = list(load() if load is not None else _entry_points())
    uses: list[TypeUse] = []
    problems: list[CheckFinding] = []
    for point in points:
        where = f"entry point {point.name} ({point.value})"
        try:
            provider = point.load()
            provided = list(provider())
        except Exception as error:  # a broken plug-in is a finding, never a crash
            problems.append(CheckFinding(where, f"failed: {error!r}"))
            continue
        for item in provided:
            event_type, origin = (item, where) if isinstance(item, str) else item
            uses.append(TypeUse(str(event_type), str(origin)))
    return UseSource(f"{len(points)} entry point(s)", tuple(uses), tuple(problems))


def _entry_points() -> Iterable[importlib.metadata.EntryPoint]:
    return importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)


def default_scenario_dirs() -> list[Path]:
    """The ``scenarios`` package's directory, found without importing it."""
    try:
        spec = importlib.util.find_spec("scenarios")
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(location) for location in spec.submodule_search_locations]


# -- the check -----------------------------------------------------------------------


def check_catalog_text(
    text: str, *, source: str, sources: Iterable[UseSource] = ()
) -> CheckReport:
    """Every finding in the catalog ``text``; ``sources`` tell the types in use."""
    used_sources = tuple(sources)
    findings: list[CheckFinding] = [p for s in used_sources for p in s.problems]
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        findings.insert(0, CheckFinding(source, f"not valid TOML ({error})"))
        return CheckReport(source, 0, 0, used_sources, tuple(findings))

    catalog_findings: list[CheckFinding] = []
    for key in sorted(set(document) - {"events", "roles"}):
        catalog_findings.append(
            CheckFinding(
                source, f"unknown top-level key '{key}'; expected events, roles"
            )
        )
    rows = _check_rows(document.get("events"), source, catalog_findings)
    roles = _check_roles(document.get("roles", {}), source, catalog_findings)

    seeded = set().union(*roles.values()) if roles else set()
    needing: dict[str, list[str]] = {}
    for event_type, permission in rows.items():
        if permission is not None:
            needing.setdefault(permission, []).append(event_type)
    for permission, types in sorted(needing.items()):
        if permission not in seeded:
            catalog_findings.append(
                CheckFinding(
                    source,
                    f"permission '{permission}' (needed by {', '.join(sorted(types))}) "
                    "is seeded by no role: no token carries it, so every subscriber "
                    "drops these types; add it to the scopes of a role",
                )
            )

    reported: set[str] = set()
    for use in (use for s in used_sources for use in s.uses):
        if use.event_type in rows or use.event_type in reported:
            continue
        reported.add(use.event_type)
        catalog_findings.append(
            CheckFinding(
                use.where,
                f"type '{use.event_type}' is used but has no row in {source}: the hub "
                "drops it as unknown_type",
            )
        )

    if not catalog_findings:
        # The lenient pass must never pass what the hub itself refuses.
        try:
            parse_catalog(text, source=source)
        except CatalogError as error:
            catalog_findings.append(CheckFinding(source, str(error)))
    findings = catalog_findings + findings
    return CheckReport(source, len(rows), len(roles), used_sources, tuple(findings))


def _check_rows(
    events: Any, source: str, findings: list[CheckFinding]
) -> dict[str, str | None]:
    """Type -> permission (None when the permission itself is bad), per valid type."""
    rows: dict[str, str | None] = {}
    if not isinstance(events, list) or not events:
        findings.append(CheckFinding(source, "expected at least one [[events]] row"))
        return rows
    for index, raw in enumerate(events):
        where = f"{source}: events[{index}]"
        if not isinstance(raw, dict):
            findings.append(CheckFinding(where, "expected a table"))
            continue
        event_type = raw.get("type")
        if isinstance(event_type, str):
            where += f" (type '{event_type}')"
        for key in raw:
            if key not in ROW_KEYS:
                findings.append(
                    CheckFinding(where, f"unknown key '{key}'; a row has {_keys()}")
                )
        valid_type = _check_text(raw, "type", where, findings) and bool(
            EVENT_TYPE_PATTERN.match(str(event_type))
        )
        if isinstance(event_type, str) and event_type.strip() and not valid_type:
            findings.append(
                CheckFinding(
                    where, f"type '{event_type}' is not like 'claim.submitted'"
                )
            )
        permission = raw.get("requiredPermission")
        valid_permission = _check_text(raw, "requiredPermission", where, findings)
        if valid_permission and not PERMISSION_PATTERN.match(str(permission)):
            valid_permission = False
            findings.append(
                CheckFinding(
                    where,
                    f"requiredPermission '{permission}' is not a scope like "
                    "'claims.read'",
                )
            )
        severity = raw.get("defaultUiSeverity")
        if _check_text(raw, "defaultUiSeverity", where, findings) and (
            severity not in SEVERITIES
        ):
            findings.append(
                CheckFinding(
                    where,
                    f"defaultUiSeverity '{severity}' is not one of "
                    f"{', '.join(SEVERITIES)}",
                )
            )
        label = raw.get("label")
        if _check_text(raw, "label", where, findings) and (
            "\n" in str(label) or "\r" in str(label)
        ):
            findings.append(CheckFinding(where, "label must be one line"))
        if not valid_type:
            continue
        assert isinstance(event_type, str)
        if event_type in rows:
            findings.append(CheckFinding(where, f"type '{event_type}' appears twice"))
            continue
        rows[event_type] = str(permission) if valid_permission else None
    return rows


def _keys() -> str:
    return ", ".join(ROW_KEYS)


def _check_text(
    raw: Mapping[str, Any], key: str, where: str, findings: list[CheckFinding]
) -> bool:
    value = raw.get(key)
    if isinstance(value, str) and value.strip():
        return True
    problem = "is missing" if value is None else "must be a non-empty string"
    findings.append(CheckFinding(where, f"{key} {problem}"))
    return False


def _check_roles(
    raw: Any, source: str, findings: list[CheckFinding]
) -> dict[str, frozenset[str]]:
    roles: dict[str, frozenset[str]] = {}
    if not isinstance(raw, dict):
        findings.append(CheckFinding(source, "roles must be a table of roles"))
        return roles
    if not raw:
        findings.append(CheckFinding(source, "no [roles.NAME] table: no role seeds"))
    for role, entry in raw.items():
        where = f"{source}: roles.{role}"
        if not ROLE_PATTERN.match(role):
            findings.append(
                CheckFinding(where, "role names are upper case like BILLING_SPECIALIST")
            )
        scopes = entry.get("scopes") if isinstance(entry, dict) else None
        if not isinstance(scopes, list):
            findings.append(
                CheckFinding(where, 'expected scopes = ["claims.read", ...]')
            )
            continue
        good = set()
        for scope in scopes:
            if isinstance(scope, str) and PERMISSION_PATTERN.match(scope):
                good.add(scope)
            else:
                findings.append(
                    CheckFinding(where, f"scope {scope!r} is not like 'claims.read'")
                )
        roles[role] = frozenset(good)
    return roles


def check_catalog_file(path: str | None, sources: Iterable[UseSource]) -> CheckReport:
    """Check the catalog at ``path`` (the shipped one when None)."""
    file = Path(path) if path is not None else SHIPPED_CATALOG
    name = path if path is not None else "hub/catalog.toml"
    try:
        text = file.read_text("utf-8")
    except OSError as error:
        raise CatalogError(
            f"cannot read the catalog ({error.strerror})", source=name
        ) from error
    except UnicodeDecodeError as error:
        raise CatalogError("the catalog is not UTF-8 text", source=name) from error
    return check_catalog_text(text, source=name, sources=sources)


# -- command line --------------------------------------------------------------------


def add_catalog(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("catalog", help="work with the event catalog")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = actions.add_parser(
        "check",
        help="list every problem in a catalog; exit 1 when there is any",
        description=(
            "Check every row (type, permission, severity, label), that every "
            "permission is seeded by a role, and that every event type in use has "
            "a row. Types in use come from the hub itself, scenario files, --uses "
            f"lists and installed '{ENTRY_POINT_GROUP}' entry points."
        ),
    )
    check.add_argument(
        "--catalog",
        help="the catalog file (default: RCM_REALTIME_CATALOG or the shipped one)",
    )
    check.add_argument(
        "--uses",
        action="append",
        default=[],
        metavar="FILE",
        help="a file of event types in use, one a line; repeatable",
    )
    check.add_argument(
        "--scenarios",
        action="append",
        default=None,
        metavar="DIR",
        help="scan *.toml under DIR for event types (default: the scenarios "
        "package's directory, when there is one); repeatable",
    )
    check.add_argument("--json", action="store_true", help="one JSON document")
    check.set_defaults(run=run_catalog_check)


def run_catalog_check(args: argparse.Namespace) -> int:
    directories = (
        [Path(d) for d in args.scenarios]
        if args.scenarios is not None
        else default_scenario_dirs()
    )
    sources = [hub_type_uses()]
    sources += [scenario_type_uses(directory) for directory in directories]
    sources += [list_file_uses(Path(file)) for file in args.uses]
    sources.append(entry_point_uses())
    report = check_catalog_file(
        args.catalog or settings_from_env().catalog_path, sources
    )
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        print(report.render(), end="")
    return report.exit_status
