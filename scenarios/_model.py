"""The scenario format: what a scenario file says, read and checked.

A scenario names a topology (replicas, tenants and their subscriber groups), a
workload (event streams and clearinghouse interchanges), a timeline of faults and
operations, the hub settings under test, and expectations on the contract's metrics
and on client truth. Every time in a file is in scenario seconds; the hub target
multiplies them by its time scale, the simulator runs them as they are.

Every error names the file, the key and what was expected.
"""

from __future__ import annotations

import enum
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hub.core import (
    EVENT_TYPE_PATTERN,
    SEVERITIES,
    TENANT_PATTERN,
    RealtimeError,
)


class ScenarioError(RealtimeError):
    """A scenario file cannot be used; the message names file, key and expectation."""


class Behaviour(enum.StrEnum):
    STEADY = "steady"  # reads everything as it comes
    SLOW = "slow"  # reads read_rate_per_s frames a second at most
    FLAPPING = "flapping"  # goes dark (stops reading), then drops and reconnects
    HALF_OPEN = "half_open"  # goes dark for good without closing its socket


class Action(enum.StrEnum):
    ROLLING_DEPLOY = "rolling_deploy"  # each replica closes and comes back in turn
    ADMIN_DISCONNECT = "admin_disconnect"  # eject one tenant on every replica
    DEPLOY_EVENT_TYPE = "deploy_event_type"  # a catalog row lands on every replica
    RECORD_BATCH_FAILURE = "record_batch_failure"  # POST a batch failure
    PAUSE_SUBSCRIPTION = "pause_subscription"  # a replica's bus subscription stalls
    RESUME_SUBSCRIPTION = "resume_subscription"


class Op(enum.StrEnum):
    EQ = "=="
    NE = "!="
    GT = ">"
    GE = ">="
    LT = "<"
    LE = "<="

    def holds(self, left: float, right: float) -> bool:
        return {
            Op.EQ: left == right,
            Op.NE: left != right,
            Op.GT: left > right,
            Op.GE: left >= right,
            Op.LT: left < right,
            Op.LE: left <= right,
        }[self]


class Check(enum.StrEnum):
    VALUE = "value"  # the value at `at_s` (default: the end)
    INCREASE = "increase"  # value at to_s minus value at from_s
    MAX = "max"  # largest value sampled in [from_s, to_s]
    MIN = "min"  # smallest value sampled in [from_s, to_s]
    REACHES = "reaches"  # holds at some sample in [from_s, from_s + within_s]


class Truth(enum.StrEnum):
    MISSED_EVENTS = "missed_events"  # entitled events a client never received
    SILENT_MISSES = "silent_misses"  # missed by clients never told to reload
    LEAKED_EVENTS = "leaked_events"  # received though another tenant's or forbidden
    RECEIVED_EVENTS = "received_events"
    DUPLICATES = "duplicates"  # the same event id received twice
    SHUTDOWN_FRAMES = "shutdown_frames"  # server_shutdown frames received
    RELOAD_NOTICES = "reload_notices"  # in-band "reload" notices received
    CONNECTS = "connects"  # stream openings, reconnects included
    PREMATURE_COMPLETIONS = "premature_completions"  # batch.completed too early
    COMPLETIONS = "completions"  # batch.completed synthesized per interchange
    MAX_CONNECT_RATE = "max_connect_rate"  # most connects in one scenario second


@dataclass(frozen=True, slots=True)
class SubscriberGroup:
    name: str
    tenant: str
    count: int
    roles: tuple[str, ...]
    scopes: tuple[str, ...]
    behaviour: Behaviour
    replica: int | None  # 1-based; None spreads the group over every replica
    read_rate_per_s: float
    dark_after_s: float
    dark_for_s: float
    connect_at_s: float
    connect_over_s: float = 0.0  # first connections spread evenly over this long


@dataclass(frozen=True, slots=True)
class EventStream:
    tenant: str
    types: tuple[str, ...]
    rate_per_s: float
    start_s: float
    stop_s: float | None
    payload_bytes: int = 0  # padding in each payload, for realistic frame sizes


@dataclass(frozen=True, slots=True)
class Interchanges:
    """Clearinghouse ISA-13 batches: trains of events with gaps and rare pauses."""

    tenant: str
    trading_partner: str
    count: int
    events_per_interchange: int
    gap_s: float  # mean of the exponential gap between events of one interchange
    pause_probability: float  # chance that a gap is a long pause instead
    pause_s: float  # length of a long pause
    between_s: float  # quiet time between interchanges
    start_s: float
    event_type: str


@dataclass(frozen=True, slots=True)
class Step:
    at_s: float
    action: Action
    replica: int | None = None
    tenant: str | None = None
    event_type: str | None = None
    permission: str | None = None
    severity: str = "info"
    label: str = ""
    every_s: float = 0.0  # rolling deploy: time between two replicas
    trading_partner: str | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class HubSettings:
    quiet_window_ms: int = 5000
    queue_size: int = 256
    evict_after_s: float = 30.0
    heartbeat_s: float = 15.0
    retry_ms: int = 3000
    shutdown_retry_spread_ms: int = 5000
    replay: bool = True


@dataclass(frozen=True, slots=True)
class Expectation:
    name: str
    metric: str | None
    truth: Truth | None
    labels: Mapping[str, str]
    replica: int | None  # None: summed over every replica
    group: str | None
    tenant: str | None
    check: Check
    op: Op
    value: float
    at_s: float | None
    from_s: float
    to_s: float | None
    within_s: float
    aggregate: str  # over clients: sum, max, min


@dataclass(frozen=True, slots=True)
class Fidelity:
    """How closely the simulator and the hub must agree on final counters."""

    relative: float = 0.25
    absolute: float = 10.0
    compare: tuple[str, ...] = (
        "rcm_realtime_events_dispatched_total",
        "rcm_realtime_fanout_total",
        "rcm_realtime_delivered_total",
        "rcm_realtime_dropped_total",
        "rcm_realtime_batches_completed_total",
    )
    # Label sets to leave out, e.g. {reason = "backpressure"} where the simulator
    # has no socket buffers to absorb a dark client's frames.
    ignore: tuple[Mapping[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    source: str
    duration_s: float
    seed: int
    replicas: int
    hub: HubSettings
    groups: tuple[SubscriberGroup, ...]
    streams: tuple[EventStream, ...]
    interchanges: tuple[Interchanges, ...]
    timeline: tuple[Step, ...]
    expectations: tuple[Expectation, ...]
    fidelity: Fidelity
    targets: tuple[str, ...] = ("sim", "hub")
    # The hub target never compresses time more than this: thousands of real
    # sockets in one process cannot be sped up without the run itself lagging.
    min_time_scale: float = 0.0

    @property
    def tenants(self) -> list[str]:
        names = {g.tenant for g in self.groups}
        names |= {s.tenant for s in self.streams}
        names |= {i.tenant for i in self.interchanges}
        return sorted(names)


# -- reading -------------------------------------------------------------------------


NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,80}\Z")
PERMISSION_PATTERN = EVENT_TYPE_PATTERN


class _Table:
    """One TOML table with its dotted path, for reads that explain themselves."""

    def __init__(self, data: Any, source: str, path: str) -> None:
        if not isinstance(data, dict):
            raise ScenarioError(f"{source}: key '{path}': expected a table")
        self.data: dict[str, Any] = data
        self.source = source
        self.path = path
        self.read: set[str] = set()

    def _key(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def fail(self, key: str, expected: str, got: Any = None) -> ScenarioError:
        shown = "" if got is None else f", got {got!r}"
        return ScenarioError(
            f"{self.source}: key '{self._key(key)}': expected {expected}{shown}"
        )

    def has(self, key: str) -> bool:
        return key in self.data

    def text(
        self,
        key: str,
        default: str | None = None,
        *,
        pattern: re.Pattern[str] | None = None,
        choices: tuple[str, ...] | None = None,
    ) -> str:
        self.read.add(key)
        value = self.data.get(key, default)
        if value is None:
            raise self.fail(key, "a string (required)")
        if not isinstance(value, str):
            raise self.fail(key, "a string", value)
        if pattern is not None and not pattern.match(value):
            raise self.fail(key, f"a string matching {pattern.pattern}", value)
        if choices is not None and value not in choices:
            raise self.fail(key, f"one of {', '.join(choices)}", value)
        return value

    def optional_text(
        self, key: str, *, pattern: re.Pattern[str] | None = None
    ) -> str | None:
        if key not in self.data:
            self.read.add(key)
            return None
        return self.text(key, pattern=pattern)

    def number(
        self,
        key: str,
        default: float | None = None,
        *,
        minimum: float = 0.0,
        strictly_above: bool = False,
    ) -> float:
        self.read.add(key)
        value = self.data.get(key, default)
        if value is None:
            raise self.fail(key, "a number (required)")
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise self.fail(key, "a number", value)
        if value < minimum or (strictly_above and value == minimum):
            relation = "above" if strictly_above else "at least"
            raise self.fail(key, f"a number {relation} {minimum:g}", value)
        return float(value)

    def optional_number(self, key: str, *, minimum: float = 0.0) -> float | None:
        if key not in self.data:
            self.read.add(key)
            return None
        return self.number(key, minimum=minimum)

    def integer(self, key: str, default: int | None = None, *, minimum: int = 0) -> int:
        self.read.add(key)
        value = self.data.get(key, default)
        if value is None:
            raise self.fail(key, "a whole number (required)")
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, "a whole number", value)
        if value < minimum:
            raise self.fail(key, f"a whole number of at least {minimum}", value)
        return value

    def flag(self, key: str, default: bool) -> bool:
        self.read.add(key)
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, "true or false", value)
        return value

    def strings(
        self, key: str, *, pattern: re.Pattern[str] | None = None
    ) -> tuple[str, ...]:
        self.read.add(key)
        value = self.data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(key, "a list of strings", value)
        if pattern is not None:
            for item in value:
                if not pattern.match(item):
                    raise self.fail(key, f"strings matching {pattern.pattern}", item)
        return tuple(value)

    def tables(self, key: str) -> list[_Table]:
        self.read.add(key)
        value = self.data.get(key, [])
        if isinstance(value, dict):
            value = [value]
        if not isinstance(value, list):
            raise self.fail(
                key, "an array of tables ([[" + self._key(key) + "]])", value
            )
        return [
            _Table(item, self.source, f"{self._key(key)}[{n}]")
            for n, item in enumerate(value)
        ]

    def table(self, key: str) -> _Table:
        self.read.add(key)
        return _Table(self.data.get(key, {}), self.source, self._key(key))

    def labels(self, key: str) -> dict[str, str]:
        self.read.add(key)
        value = self.data.get(key, {})
        if not isinstance(value, dict) or not all(
            isinstance(v, str) for v in value.values()
        ):
            raise self.fail(
                key,
                'an inline table of label strings, like { tenant_id = "acme" }',
                value,
            )
        return dict(value)

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.read)
        if unknown:
            raise ScenarioError(
                f"{self.source}: key '{self._key(unknown[0])}': unknown key; expected "
                f"one of {', '.join(sorted(self.read))}"
            )


def load_scenario(path: Path) -> Scenario:
    source = str(path)
    try:
        raw = tomllib.loads(path.read_text("utf-8"))
    except OSError as error:
        raise ScenarioError(f"{source}: cannot read ({error.strerror})") from error
    except UnicodeDecodeError as error:
        raise ScenarioError(f"{source}: not UTF-8 text") from error
    except tomllib.TOMLDecodeError as error:
        raise ScenarioError(f"{source}: not valid TOML ({error})") from error
    return parse_scenario(raw, source=source)


def parse_scenario(raw: dict[str, Any], *, source: str) -> Scenario:
    top = _Table(raw, source, "")
    name = top.text("name", pattern=NAME_PATTERN)
    description = top.text("description")
    duration_s = top.number("duration_s", minimum=0.0, strictly_above=True)
    seed = top.integer("seed", 1)
    min_time_scale = top.number("min_time_scale", 0.0)
    targets = top.strings("targets") or ("sim", "hub")
    for target in targets:
        if target not in ("sim", "hub"):
            raise top.fail("targets", "a list of 'sim' and 'hub'", target)

    topology = top.table("topology")
    replicas = topology.integer("replicas", 1, minimum=1)
    groups = tuple(_group(t, replicas) for t in topology.tables("subscribers"))
    topology.done()
    names = [g.name for g in groups]
    if len(set(names)) != len(names):
        raise top.fail("topology.subscribers", "distinct group names", names)

    hub = _hub_settings(top.table("hub"))
    workload = top.table("workload")
    streams = tuple(_stream(t, duration_s) for t in workload.tables("events"))
    interchanges = tuple(_interchanges(t) for t in workload.tables("interchanges"))
    workload.done()
    timeline = tuple(
        sorted(
            (_step(t, replicas) for t in top.tables("timeline")), key=lambda s: s.at_s
        )
    )
    expectations = tuple(
        _expectation(t, replicas, set(names)) for t in top.tables("expect")
    )
    if not expectations:
        raise top.fail("expect", "at least one [[expect]] table")
    fidelity = _fidelity(top.table("fidelity"))
    top.done()
    return Scenario(
        name=name,
        description=description,
        source=source,
        duration_s=duration_s,
        seed=seed,
        replicas=replicas,
        hub=hub,
        groups=groups,
        streams=streams,
        interchanges=interchanges,
        timeline=timeline,
        expectations=expectations,
        fidelity=fidelity,
        targets=targets,
        min_time_scale=min_time_scale,
    )


def _group(table: _Table, replicas: int) -> SubscriberGroup:
    behaviour = Behaviour(
        table.text("behaviour", "steady", choices=tuple(b.value for b in Behaviour))
    )
    replica = table.integer("replica", 0, minimum=0)
    if replica > replicas:
        raise table.fail("replica", f"a replica number from 1 to {replicas}", replica)
    group = SubscriberGroup(
        name=table.text("name", pattern=NAME_PATTERN),
        tenant=table.text("tenant", pattern=TENANT_PATTERN),
        count=table.integer("count", 1, minimum=1),
        roles=table.strings("roles"),
        scopes=table.strings("scopes", pattern=PERMISSION_PATTERN),
        behaviour=behaviour,
        replica=replica or None,
        read_rate_per_s=table.number("read_rate_per_s", 5.0, strictly_above=True),
        dark_after_s=table.number("dark_after_s", 5.0),
        dark_for_s=table.number("dark_for_s", 5.0),
        connect_at_s=table.number("connect_at_s", 0.0),
        connect_over_s=table.number("connect_over_s", 0.0),
    )
    table.done()
    if not group.roles and not group.scopes:
        raise table.fail("roles", "roles or scopes for the group's tokens")
    return group


def _hub_settings(table: _Table) -> HubSettings:
    settings = HubSettings(
        quiet_window_ms=table.integer("quiet_window_ms", 5000, minimum=1),
        queue_size=table.integer("queue_size", 256, minimum=1),
        evict_after_s=table.number("evict_after_s", 30.0, strictly_above=True),
        heartbeat_s=table.number("heartbeat_s", 15.0, strictly_above=True),
        retry_ms=table.integer("retry_ms", 3000, minimum=1),
        shutdown_retry_spread_ms=table.integer("shutdown_retry_spread_ms", 5000),
        replay=table.flag("replay", True),
    )
    table.done()
    return settings


def _stream(table: _Table, duration_s: float) -> EventStream:
    stream = EventStream(
        tenant=table.text("tenant", pattern=TENANT_PATTERN),
        types=table.strings("types", pattern=EVENT_TYPE_PATTERN),
        rate_per_s=table.number("rate_per_s", strictly_above=True),
        start_s=table.number("start_s", 0.0),
        stop_s=table.optional_number("stop_s"),
        payload_bytes=table.integer("payload_bytes", 0),
    )
    table.done()
    if not stream.types:
        raise table.fail("types", "at least one event type")
    return stream


def _interchanges(table: _Table) -> Interchanges:
    spec = Interchanges(
        tenant=table.text("tenant", pattern=TENANT_PATTERN),
        trading_partner=table.text(
            "trading_partner", pattern=re.compile(r"^[\x21-\x7e]{1,128}\Z")
        ),
        count=table.integer("count", 1, minimum=1),
        events_per_interchange=table.integer("events_per_interchange", 10, minimum=1),
        gap_s=table.number("gap_s", 0.5, strictly_above=True),
        pause_probability=table.number("pause_probability", 0.0),
        pause_s=table.number("pause_s", 0.0),
        between_s=table.number("between_s", 10.0),
        start_s=table.number("start_s", 0.0),
        event_type=table.text(
            "event_type", "claim.accepted", pattern=EVENT_TYPE_PATTERN
        ),
    )
    table.done()
    if spec.pause_probability > 1:
        raise table.fail(
            "pause_probability", "a probability from 0 to 1", spec.pause_probability
        )
    return spec


def _step(table: _Table, replicas: int) -> Step:
    action = Action(table.text("action", choices=tuple(a.value for a in Action)))
    at_s = table.number("at_s")
    replica = table.integer("replica", 0, minimum=0) or None
    if replica is not None and replica > replicas:
        raise table.fail("replica", f"a replica number from 1 to {replicas}", replica)
    step = Step(
        at_s=at_s,
        action=action,
        replica=replica,
        tenant=table.optional_text("tenant", pattern=TENANT_PATTERN),
        event_type=table.optional_text("event_type", pattern=EVENT_TYPE_PATTERN),
        permission=table.optional_text("permission", pattern=PERMISSION_PATTERN),
        severity=table.text("severity", "info", choices=SEVERITIES),
        label=table.text("label", ""),
        every_s=table.number("every_s", 2.0),
        trading_partner=table.optional_text("trading_partner"),
        reason=table.text("reason", "rejected by the clearinghouse"),
    )
    table.done()
    needs: dict[Action, tuple[str, ...]] = {
        Action.ADMIN_DISCONNECT: ("tenant",),
        Action.DEPLOY_EVENT_TYPE: ("event_type", "permission"),
        Action.RECORD_BATCH_FAILURE: ("tenant", "trading_partner"),
        Action.PAUSE_SUBSCRIPTION: ("replica",),
        Action.RESUME_SUBSCRIPTION: ("replica",),
    }
    for key in needs.get(action, ()):
        if getattr(step, key) is None:
            raise table.fail(key, f"a value: action '{action.value}' needs it")
    return step


def _expectation(table: _Table, replicas: int, groups: set[str]) -> Expectation:
    metric = table.optional_text(
        "metric", pattern=re.compile(r"^rcm_realtime_[a-z_]+\Z")
    )
    truth_name = table.optional_text("truth")
    if (metric is None) == (truth_name is None):
        raise table.fail("metric", "exactly one of 'metric' or 'truth'")
    truth = None
    if truth_name is not None:
        if truth_name not in {t.value for t in Truth}:
            raise table.fail(
                "truth", f"one of {', '.join(t.value for t in Truth)}", truth_name
            )
        truth = Truth(truth_name)
    group = table.optional_text("group")
    if group is not None and group not in groups:
        raise table.fail(
            "group", f"a subscriber group ({', '.join(sorted(groups))})", group
        )
    replica = table.integer("replica", 0, minimum=0) or None
    if replica is not None and replica > replicas:
        raise table.fail("replica", f"a replica number from 1 to {replicas}", replica)
    check = Check(table.text("check", "value", choices=tuple(c.value for c in Check)))
    expectation = Expectation(
        name=table.text("name", metric or truth_name or ""),
        metric=metric,
        truth=truth,
        labels=table.labels("labels"),
        replica=replica,
        group=group,
        tenant=table.optional_text("tenant", pattern=TENANT_PATTERN),
        check=check,
        op=Op(table.text("op", "==", choices=tuple(o.value for o in Op))),
        value=table.number("value", minimum=-math.inf),
        at_s=table.optional_number("at_s"),
        from_s=table.number("from_s", 0.0),
        to_s=table.optional_number("to_s"),
        within_s=table.number("within_s", 0.0),
        aggregate=table.text("aggregate", "sum", choices=("sum", "max", "min")),
    )
    table.done()
    return expectation


def _fidelity(table: _Table) -> Fidelity:
    default = Fidelity()
    compare = table.strings("compare") or default.compare
    ignore: list[dict[str, str]] = []
    for item in table.tables("ignore"):
        ignore.append({k: item.text(k) for k in list(item.data)})
        item.done()
    fidelity = Fidelity(
        relative=table.number("relative", default.relative),
        absolute=table.number("absolute", default.absolute),
        compare=compare,
        ignore=tuple(ignore),
    )
    table.done()
    return fidelity


SHIPPED = Path(__file__).with_name("library")


def shipped_scenarios() -> list[Path]:
    return sorted(SHIPPED.glob("*.toml"))


def find_scenarios(names: list[str]) -> list[Path]:
    """Shipped scenarios by name, or files by path; all shipped when none named."""
    if not names:
        return shipped_scenarios()
    shipped = {path.stem: path for path in shipped_scenarios()}
    found: list[Path] = []
    for name in names:
        if name in shipped:
            found.append(shipped[name])
        elif Path(name).is_file():
            found.append(Path(name))
        else:
            raise ScenarioError(
                f"no scenario named '{name}'; shipped: {', '.join(sorted(shipped))}, "
                "or give a path to a .toml file"
            )
    return found


def scenario_field_defaults() -> Mapping[str, Any]:
    """For the format's documentation: defaults of every optional setting."""
    return {"hub": HubSettings(), "fidelity": Fidelity(), "_": field}
