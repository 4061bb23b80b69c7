"""The world a simulation runs: topology, workload, timeline and hub settings.

Everything is a frozen dataclass with defaults, so a world can be written in code
(``WorldConfig(topology=Topology(replicas=2))``) or read from a TOML or JSON file whose
tables mirror the dataclasses. Validation is declarative (the annotations) and runs in
strict mode: a string is never read as a number, an unknown key is an error, and every
error names the file and the dotted key.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    TypeAdapter,
    ValidationError,
)

from hub.core import (
    EVENT_TYPE_PATTERN,
    SEVERITIES,
    TENANT_PATTERN,
    Catalog,
    ConfigError,
    CoreSettings,
    Faults,
    Latency,
)

from ._random import Distribution, exponential, parse_distribution, uniform

_STRICT = ConfigDict(extra="forbid", strict=True)

Dist = Annotated[
    Distribution,
    PlainValidator(parse_distribution),
    PlainSerializer(str, return_type=str),
]


def parse_latency(value: object) -> Latency:
    """A bus delay in the bus's own spec language (``exp:2ms``, ``50ms``)."""
    if isinstance(value, Latency):
        return value
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("expected a latency spec like '50ms' or 'exp:2ms'")
    try:
        return (
            Latency.fixed(float(value))
            if not isinstance(value, str)
            else (Latency.parse(value))
        )
    except ConfigError as error:
        raise ValueError(str(error)) from None


BusLatency = Annotated[
    Latency,
    PlainValidator(parse_latency),
    PlainSerializer(lambda latency: latency.spec(), return_type=str),
]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0)]
PositiveCount = Annotated[int, Field(ge=1)]
ReplicaName = Annotated[str, Field(pattern=r"^r[1-9][0-9]*$")]


class WorldConfigError(ConfigError):
    """A world file or value cannot be used; the message names the file and key."""

    def __init__(self, message: str, *, source: str, key: str | None = None) -> None:
        where = source if key is None else f"{source}: key '{key}'"
        super().__init__(f"{where}: {message}")
        self.source = source
        self.key = key


@dataclass(frozen=True, slots=True)
class HubSettings:
    """The hub settings under study, as the contract names them."""

    __pydantic_config__ = _STRICT

    queue_size: PositiveCount = 256
    evict_after_s: Positive = 30.0
    quiet_window_ms: PositiveCount = 5000
    retry_ms: Count = 3000
    # How long a closing replica waits for its streams before aborting them.
    shutdown_grace_s: NonNegative = 3.0
    # server_shutdown carries retry_ms plus a uniform draw from [0, this].
    shutdown_retry_spread_ms: Count = 5000
    # Last-Event-ID replay: per tenant, this many recent events for this long
    # (either at zero turns replay off).
    replay_max_events: Count = 1000
    replay_max_age_s: NonNegative = 300.0
    max_streams_per_tenant: PositiveCount = 10_000
    max_streams_per_token: PositiveCount = 20

    def core_settings(self) -> CoreSettings:
        return CoreSettings(
            queue_size=self.queue_size,
            evict_after_s=self.evict_after_s,
            quiet_window_s=self.quiet_window_ms / 1000,
            retry_ms=self.retry_ms,
            shutdown_retry_spread_ms=self.shutdown_retry_spread_ms,
            replay_max_events=self.replay_max_events,
            replay_max_age_s=self.replay_max_age_s,
            max_streams_per_tenant=self.max_streams_per_tenant,
            max_streams_per_token=self.max_streams_per_token,
        )


DEFAULT_ROLE_WEIGHTS: Mapping[str, float] = {
    "BILLING_SPECIALIST": 4.0,
    "DENIALS_ANALYST": 2.0,
    "PAYMENT_POSTER": 2.0,
    "AUTHORIZATION_COORDINATOR": 1.0,
    "REVENUE_CYCLE_MANAGER": 1.0,
}


Behaviour = Literal["steady", "slow", "flapping", "half_open"]
GroupName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]


@dataclass(frozen=True, slots=True)
class SubscriberGroup:
    """Identical browser tabs of one tenant, each its own user and token.

    Behaviour parameters left out come from ``[clients]``.
    """

    __pydantic_config__ = _STRICT

    name: GroupName
    tenant: str
    count: PositiveCount = 1
    roles: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()
    behaviour: Behaviour = "steady"
    # Pinned to this replica (reconnects go back to it); None: any replica.
    replica: ReplicaName | None = None
    # The first connections, evenly spaced from connect_at_s over connect_over_s.
    connect_at_s: NonNegative = 0.0
    connect_over_s: NonNegative = 0.0
    # slow: frames read per second.
    read_rate_per_s: Positive | None = None
    # flapping: connected time before each dark spell, and its length;
    # half_open: connected time before the connection dies.
    dark_after: Dist | None = None
    dark_for: Dist | None = None


@dataclass(frozen=True, slots=True)
class Topology:
    """Replicas, tenants, their users and open streams, and the load balancer."""

    __pydantic_config__ = _STRICT

    replicas: Annotated[int, Field(ge=1, le=1000)] = 3
    tenants: Annotated[int, Field(ge=1, le=100_000)] = 5
    subscribers: Annotated[int, Field(ge=0, le=10_000_000)] = 100
    # Slugs for the first tenants; the rest are made up from company names.
    tenant_names: tuple[str, ...] = ()
    # Tenant k (0-based) weighs 1 / (k + 1) ** skew, for both streams and events.
    tenant_skew: NonNegative = 0.0
    # Streams per user on average (browser tabs); users = subscribers / this.
    streams_per_user: Annotated[float, Field(ge=1, allow_inf_nan=False)] = 1.5
    # Roles drawn for each user, by weight; each role seeds scopes from the catalog.
    roles: dict[str, Positive] = field(
        default_factory=lambda: dict(DEFAULT_ROLE_WEIGHTS)
    )
    max_roles_per_user: PositiveCount = 2
    trading_partners: PositiveCount = 4
    # How a stream finds its replica. ``client_rotation`` has no balancer: each
    # client walks the replicas in order, starting at its place in its group, one
    # step per connection attempt (a ready replica or not), as a client that holds
    # the list of replica addresses does.
    balancer: Literal[
        "random", "round_robin", "least_connections", "client_rotation"
    ] = "random"
    # The first connections spread evenly over this many seconds from the start.
    connect_over_s: NonNegative = 1.0
    # Explicit groups of streams, besides the ``subscribers`` drawn above; their
    # tenants join the world (after ``tenant_names``).
    groups: tuple[SubscriberGroup, ...] = ()


@dataclass(frozen=True, slots=True)
class BusModel:
    """Each replica's subscription delivers in order after this latency, written
    as the bus's faults write theirs (``exp:2ms``, ``fixed:0``, ``uniform:1ms,5ms``)."""

    __pydantic_config__ = _STRICT

    latency: BusLatency = field(default_factory=lambda: Latency.exponential(0.002))


@dataclass(frozen=True, slots=True)
class ClientMix:
    """Relative weights of client behaviours; they need not sum to one."""

    __pydantic_config__ = _STRICT

    steady: NonNegative = 0.94
    slow: NonNegative = 0.02
    flapping: NonNegative = 0.02
    half_open: NonNegative = 0.02


@dataclass(frozen=True, slots=True)
class Clients:
    """How the browsers behave."""

    __pydantic_config__ = _STRICT

    mix: ClientMix = field(default_factory=ClientMix)
    # Steady readers take their frames this long after the queue turns non-empty.
    read_delay_s: NonNegative = 0.0
    # Slow readers take one frame at a time, each after a drain time of this mean.
    slow_drain_rate_per_s: Positive = 5.0
    slow_drain: Literal["exponential", "fixed"] = "exponential"
    # Flapping clients: connected time between dark spells, and their length;
    # after a spell the client either reads on if its stream survived, or drops
    # the socket and reconnects.
    flap_every: Dist = field(default_factory=lambda: exponential(300.0))
    flap_dark: Dist = field(default_factory=lambda: uniform(5.0, 90.0))
    flap_drops_socket: bool = False
    # Frames the network and kernel buffers absorb before writes to a stream that
    # is not being read stall.
    socket_buffer_frames: Count = 32
    # The same allowance in bytes instead, a frame taken only when it fits whole:
    # closer to real sockets when frame sizes vary. With it, slow readers read
    # through their socket too, so what sits there counts as delivered, as it does
    # on a real hub.
    socket_buffer_bytes: PositiveCount | None = None
    # With a byte-sized socket: once the socket is full, the hub's writer keeps
    # writing into its own buffer and waits for that to drain only when this many
    # bytes went there since its last wait (aiohttp waits every 64 KiB); the
    # waiting frame stays queued until the socket has room. A stream that stops
    # reading then takes both allowances.
    write_drain_bytes: PositiveCount | None = None
    # Half-open clients: time until the connection dies without a FIN, and the time
    # until the user is back and reloads (never when absent).
    half_open_after: Dist = field(default_factory=lambda: exponential(900.0))
    half_open_return: Dist | None = field(default_factory=lambda: exponential(600.0))
    # A write to a half-open connection fails after this long.
    tcp_timeout_s: Positive = 900.0
    # Reconnects wait the stream's retry: times uniform(1 - jitter, 1 + jitter).
    reconnect_jitter: Fraction = 0.3
    reconnect_elsewhere: bool = True
    reconnect_after_admin: bool = True
    # Reconnects send the id of the last event read, as EventSource does, so the
    # hub can replay what was missed; a reload after a half-open spell does not.
    send_last_event_id: bool = True
    # Flapping and half-open clients count the connected time before going dark
    # from each connection's start (``connection``), or (``client``) from their
    # first connection and then from the end of their last dark spell, whatever
    # reconnects came in between: a client that keeps one clock of its own.
    dark_clock: Literal["connection", "client"] = "connection"
    # Each client keeps how many times it read each event id, for callers that
    # judge every event (slower: every frame is counted one by one).
    record_reads: bool = False


FAMILIES = ("claims", "denials", "remittance", "authorizations")


@dataclass(frozen=True, slots=True)
class Emitter:
    """A source of one family's events: steady (Poisson), bursty or daily."""

    __pydantic_config__ = _STRICT

    rate_per_s: Positive
    # The permission family (``claims``) whose catalog types are drawn, or the
    # types themselves (drawn uniformly); one of the two is needed.
    family: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")] | None = None
    types: tuple[str, ...] = ()
    # Only these tenants (slugs), by their weights; empty: every tenant.
    tenants: tuple[str, ...] = ()
    start_s: NonNegative = 0.0
    stop_s: Positive | None = None
    # Padding in each payload, for realistic frame sizes.
    payload_bytes: Count = 0
    process: Literal["poisson", "bursty", "daily"] = "poisson"
    # bursty: calm and burst spells alternate; the burst rate is this multiple of
    # the calm rate, and the long-run mean stays rate_per_s.
    burst_factor: Annotated[float, Field(ge=1, allow_inf_nan=False)] = 10.0
    burst: Dist = field(default_factory=lambda: exponential(20.0))
    calm: Dist = field(default_factory=lambda: exponential(300.0))
    # daily: a cosine over the day peaking at peak_hour (UTC); the trough rate is
    # trough_ratio of the peak, and the daily mean stays rate_per_s.
    peak_hour: Annotated[float, Field(ge=0, lt=24, allow_inf_nan=False)] = 14.0
    trough_ratio: Fraction = 0.2

    def __post_init__(self) -> None:
        if self.family is None and not self.types:
            raise ValueError("an emitter needs a 'family' or a list of 'types'")


def default_emitters() -> tuple[Emitter, ...]:
    return (
        Emitter(family="claims", rate_per_s=3.0),
        Emitter(family="denials", rate_per_s=0.5, process="bursty"),
        Emitter(family="remittance", rate_per_s=0.5),
        Emitter(family="authorizations", rate_per_s=1.0, process="daily"),
    )


@dataclass(frozen=True, slots=True)
class Interchanges:
    """Clearinghouse interchanges: ISA-13 batches arriving as trains of events."""

    __pydantic_config__ = _STRICT

    per_partner_per_hour: NonNegative = 6.0
    # Events per interchange (rounded, at least one).
    size: Dist = field(default_factory=lambda: uniform(5.0, 40.0))
    # Gaps between the events of one interchange; with pause_probability a gap is a
    # long pause drawn from ``pause`` instead.
    gap: Dist = field(default_factory=lambda: exponential(0.5))
    pause_probability: Fraction = 0.02
    pause: Dist = field(default_factory=lambda: uniform(4.0, 20.0))
    first_type: str | None = "remittance.batch.received"
    types: dict[str, Positive] = field(
        default_factory=lambda: {"remittance.payment.posted": 1.0}
    )


@dataclass(frozen=True, slots=True)
class Workload:
    __pydantic_config__ = _STRICT

    emitters: tuple[Emitter, ...] = field(default_factory=default_emitters)
    interchanges: Interchanges = field(default_factory=Interchanges)


@dataclass(frozen=True, slots=True)
class RollingDeploy:
    """Each replica in turn closes (``server_shutdown``) and comes back as a new
    process; its clients reconnect elsewhere."""

    __pydantic_config__ = _STRICT

    at_s: NonNegative
    kind: Literal["rolling_deploy"] = "rolling_deploy"
    # Between one replica closing and the next.
    interval_s: NonNegative = 20.0
    # From a replica closing to its new process being ready.
    restart_s: NonNegative = 5.0
    replicas: tuple[ReplicaName, ...] = ()
    # Count interval_s from the previous replica's new process being ready
    # rather than from its closing: a deploy tool that waits for each replica to
    # be back (a slow close then delays every later step).
    wait_for_restart: bool = False


@dataclass(frozen=True, slots=True)
class DeployNewType:
    """A deploy that lands a catalog row, and producers that start emitting its
    type when the deploy starts (at ``rate_per_s``; zero for none).

    With ``restart`` the row comes with a rolling deploy (each replica restarts on
    the new catalog); without, it lands on every running replica at once.
    """

    __pydantic_config__ = _STRICT

    at_s: NonNegative
    kind: Literal["deploy_new_type"] = "deploy_new_type"
    restart: bool = True
    interval_s: NonNegative = 20.0
    restart_s: NonNegative = 5.0
    replicas: tuple[ReplicaName, ...] = ()
    type: str = "eligibility.checked"
    required_permission: str = "eligibility.read"
    severity: str = "info"
    label: str = "Eligibility checked"
    rate_per_s: NonNegative = 1.0


@dataclass(frozen=True, slots=True)
class AdminDisconnect:
    """An admin ejects a tenant: its streams get ``server_shutdown`` (admin)."""

    __pydantic_config__ = _STRICT

    at_s: NonNegative
    # A tenant slug, or its rank (0 is the largest tenant).
    tenant: str | Annotated[int, Field(ge=0)]
    kind: Literal["admin_disconnect"] = "admin_disconnect"
    replicas: tuple[ReplicaName, ...] = ()


Operation = Annotated[
    RollingDeploy | DeployNewType | AdminDisconnect, Field(discriminator="kind")
]


@dataclass(frozen=True, slots=True)
class FaultWindow:
    """A bus fault on one replica's subscription for a while, in the vocabulary
    of the hub's bus (``hub.core.Faults``).

    ``pause``: messages wait in the subscription; ``latency``: each message waits
    this delay more; ``drop``: this fraction of messages is lost; ``cut``: messages
    published meanwhile are lost, and the subscription is not live, so the replica
    is not ready.
    """

    __pydantic_config__ = _STRICT

    kind: Literal["pause", "latency", "drop", "cut"]
    replica: ReplicaName
    at_s: NonNegative
    duration_s: Positive
    latency: BusLatency | None = None
    fraction: Fraction | None = None

    def __post_init__(self) -> None:
        if self.kind == "latency" and self.latency is None:
            raise ValueError("a latency fault needs 'latency', like 'fixed:2s'")
        if self.kind == "drop" and self.fraction is None:
            raise ValueError("a drop fault needs 'fraction', like 0.1")
        if self.kind != "latency" and self.latency is not None:
            raise ValueError(f"'latency' applies to latency faults, not {self.kind}")
        if self.kind != "drop" and self.fraction is not None:
            raise ValueError(f"'fraction' applies to drop faults, not {self.kind}")

    def faults(self) -> Faults:
        """This fault alone, as the bus applies it."""
        if self.kind == "pause":
            return Faults(paused=True)
        if self.kind == "cut":
            return Faults(cut=True)
        if self.kind == "drop":
            assert self.fraction is not None
            return Faults(drop=self.fraction)
        return Faults(latency=self.latency)


def combined_faults(windows: list[FaultWindow]) -> Faults:
    """The faults of a replica while ``windows`` (in start order) are open."""
    paused = any(window.kind == "pause" for window in windows)
    cut = any(window.kind == "cut" for window in windows)
    kept = 1.0
    latency: Latency | None = None
    for window in windows:
        if window.fraction is not None:
            # Independent losses: a message survives every one of them or none.
            kept *= 1 - window.fraction
        if window.latency is not None:
            latency = window.latency
    return Faults(paused=paused, cut=cut, drop=1 - kept, latency=latency)


@dataclass(frozen=True, slots=True)
class CpuModel:
    """What a replica process's work costs on its one CPU (seconds of CPU each).

    Leave the table out and replicas work for free: frames are written the instant
    their event arrives. With it, each replica process serves its events one spell
    at a time and events wait for the CPU; see ``sim._cpu``.
    """

    __pydantic_config__ = _STRICT

    # Each frame queued for a subscriber (the write that follows is most of it).
    per_delivery_s: NonNegative = 0.0
    # Each event taken from the subscription (ingest, envelope, frame encoding).
    per_event_s: NonNegative = 0.0
    # Each stream opened (handshake, token check, subscriber).
    per_connection_s: NonNegative = 0.0
    # fixed: every unit of work costs exactly its figure; exponential: a draw of
    # that mean (for comparing with queueing theory).
    service: Literal["fixed", "exponential"] = "fixed"
    # Events taken per spell; none: every event waiting, as the hub's consumer does.
    max_batch: PositiveCount | None = None


@dataclass(frozen=True, slots=True)
class Checks:
    __pydantic_config__ = _STRICT

    # Check the ledger after every simulation step, not only at samples (slow).
    ledger_every_step: bool = False


@dataclass(frozen=True, slots=True)
class WorldConfig:
    """One world: run ``duration_s`` of traffic, then ``settle_s`` for stragglers."""

    __pydantic_config__ = _STRICT

    seed: int = 1
    duration_s: Positive = 600.0
    # Time after the traffic stops in which queues drain and batches complete;
    # by default the quiet window plus two seconds.
    settle_s: NonNegative | None = None
    start: str = "2026-12-03T08:00:00Z"
    sample_interval_s: Positive = 10.0
    catalog: str | None = None
    hub: HubSettings = field(default_factory=HubSettings)
    topology: Topology = field(default_factory=Topology)
    bus: BusModel = field(default_factory=BusModel)
    clients: Clients = field(default_factory=Clients)
    workload: Workload = field(default_factory=Workload)
    operations: tuple[Operation, ...] = ()
    faults: tuple[FaultWindow, ...] = ()
    checks: Checks = field(default_factory=Checks)
    # None: replicas do their work in no time.
    cpu: CpuModel | None = None

    @property
    def settle(self) -> float:
        if self.settle_s is not None:
            return self.settle_s
        return self.hub.quiet_window_ms / 1000 + 2.0

    @property
    def start_epoch(self) -> float:
        return datetime.fromisoformat(self.start).timestamp()

    @property
    def replica_names(self) -> list[str]:
        return [f"r{n}" for n in range(1, self.topology.replicas + 1)]

    def with_changes(self, **changes: Any) -> WorldConfig:
        """A copy with top-level fields or dotted ones (``topology.replicas``)."""
        nested: dict[str, dict[str, Any]] = {}
        flat: dict[str, Any] = {}
        for key, value in changes.items():
            head, _, rest = key.partition(".")
            if rest:
                nested.setdefault(head, {})[rest] = value
            else:
                flat[key] = value
        for head, inner in nested.items():
            flat[head] = replace(getattr(self, head), **inner)
        updated = replace(self, **flat)
        check_world(updated, source="<arguments>")
        return updated


_ADAPTER: TypeAdapter[WorldConfig] = TypeAdapter(WorldConfig)


def world_from_mapping(document: Mapping[str, Any], *, source: str) -> WorldConfig:
    """Validate a parsed document; errors name ``source`` and the dotted key."""
    try:
        text = json.dumps(document, allow_nan=False, default=_unjsonable)
        world = _ADAPTER.validate_json(text)
    except _Unsupported as error:
        raise WorldConfigError(str(error), source=source) from None
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        raise WorldConfigError(
            _message(first), source=source, key=_dotted(first["loc"])
        ) from None
    except ValueError as error:
        raise WorldConfigError(f"not usable ({error})", source=source) from None
    check_world(world, source=source)
    return world


def load_world(path: str | Path) -> WorldConfig:
    """Read a world from a ``.toml`` or ``.json`` file."""
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text("utf-8")
    except OSError as error:
        raise WorldConfigError(
            f"cannot read the file ({error.strerror})", source=source
        ) from error
    except UnicodeDecodeError as error:
        raise WorldConfigError("the file is not UTF-8 text", source=source) from error
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            document: Any = tomllib.loads(text)
        elif suffix == ".json":
            document = json.loads(text)
        else:
            raise WorldConfigError(
                "expected a .toml or .json file", source=source
            ) from None
    except tomllib.TOMLDecodeError as error:
        raise WorldConfigError(f"not valid TOML ({error})", source=source) from error
    except json.JSONDecodeError as error:
        raise WorldConfigError(
            f"not valid JSON ({error.msg} at line {error.lineno} column {error.colno})",
            source=source,
        ) from error
    if not isinstance(document, dict):
        raise WorldConfigError("expected a table (object) at the top", source=source)
    world = world_from_mapping(document, source=source)
    if world.catalog is not None and not Path(world.catalog).is_absolute():
        world = replace(world, catalog=str(path.parent / world.catalog))
    return world


def check_world(world: WorldConfig, *, source: str) -> None:
    """The cross-field rules the annotations cannot say."""

    def fail(key: str, message: str) -> None:
        raise WorldConfigError(message, source=source, key=key)

    try:
        moment = datetime.fromisoformat(world.start)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        fail("start", "expected an RFC 3339 time with a zone, like 2026-12-03T08:00Z")
    names = set(world.replica_names)
    for index, name in enumerate(world.topology.tenant_names):
        if not TENANT_PATTERN.match(name):
            fail(f"topology.tenant_names.{index}", f"'{name}' is not a tenant slug")
    if len(set(world.topology.tenant_names)) != len(world.topology.tenant_names):
        fail("topology.tenant_names", "the names must be different")
    if len(world.topology.tenant_names) > world.topology.tenants:
        fail("topology.tenant_names", "more names than topology.tenants")
    for index, group in enumerate(world.topology.groups):
        key = f"topology.groups.{index}"
        if not TENANT_PATTERN.match(group.tenant):
            fail(f"{key}.tenant", f"'{group.tenant}' is not a tenant slug")
        if group.replica is not None and group.replica not in names:
            fail(
                f"{key}.replica",
                f"no replica '{group.replica}'; the world has r1..r{len(names)}",
            )
        if not group.roles and not group.scopes:
            fail(key, "a group needs roles or scopes")
    group_names = [group.name for group in world.topology.groups]
    if len(set(group_names)) != len(group_names):
        fail("topology.groups", "group names must be different")
    mix = world.clients.mix
    if world.topology.subscribers and not (
        mix.steady + mix.slow + mix.flapping + mix.half_open > 0
    ):
        fail("clients.mix", "at least one behaviour needs a weight above zero")
    for index, emitter in enumerate(world.workload.emitters):
        for position, tenant in enumerate(emitter.tenants):
            if not TENANT_PATTERN.match(tenant):
                fail(
                    f"workload.emitters.{index}.tenants.{position}",
                    f"'{tenant}' is not a tenant slug",
                )
        if emitter.stop_s is not None and emitter.stop_s <= emitter.start_s:
            fail(f"workload.emitters.{index}.stop_s", "must come after start_s")
        for position, event_type in enumerate(emitter.types):
            if not EVENT_TYPE_PATTERN.match(event_type):
                fail(
                    f"workload.emitters.{index}.types.{position}",
                    f"'{event_type}' is not an event type like 'claim.submitted'",
                )
    for index, operation in enumerate(world.operations):
        key = f"operations.{index}"
        for position, replica in enumerate(operation.replicas):
            if replica not in names:
                fail(
                    f"{key}.replicas.{position}",
                    f"no replica '{replica}'; the world has r1..r{len(names)}",
                )
        if isinstance(operation, DeployNewType):
            if not EVENT_TYPE_PATTERN.match(operation.type):
                fail(f"{key}.type", f"'{operation.type}' is not an event type")
            if not EVENT_TYPE_PATTERN.match(operation.required_permission):
                fail(
                    f"{key}.required_permission",
                    f"'{operation.required_permission}' is not a scope like "
                    "'claims.read'",
                )
            if operation.severity not in SEVERITIES:
                fail(f"{key}.severity", f"expected one of {', '.join(SEVERITIES)}")
        if isinstance(operation, AdminDisconnect):
            ejected = operation.tenant
            if isinstance(ejected, int) and ejected >= world.topology.tenants:
                fail(
                    f"{key}.tenant",
                    f"tenant rank {ejected} but the world has {world.topology.tenants}",
                )
            if isinstance(ejected, str) and not TENANT_PATTERN.match(ejected):
                fail(f"{key}.tenant", f"'{ejected}' is not a tenant slug")
    for index, fault in enumerate(world.faults):
        if fault.replica not in names:
            fail(
                f"faults.{index}.replica",
                f"no replica '{fault.replica}'; the world has r1..r{len(names)}",
            )


def check_against_catalog(world: WorldConfig, catalog: Catalog, source: str) -> None:
    """Rules that need the catalog: roles, families and types must exist."""

    def fail(key: str, message: str) -> None:
        raise WorldConfigError(message, source=source, key=key)

    for role in world.topology.roles:
        if role not in catalog.roles:
            fail(
                f"topology.roles.{role}",
                f"the catalog ({catalog.source}) has no role '{role}'; it has "
                + ", ".join(sorted(catalog.roles)),
            )
    if world.topology.subscribers and not world.topology.roles:
        fail("topology.roles", "users need at least one role to draw from")
    for index, group in enumerate(world.topology.groups):
        for position, role in enumerate(group.roles):
            if role not in catalog.roles:
                fail(
                    f"topology.groups.{index}.roles.{position}",
                    f"the catalog ({catalog.source}) has no role '{role}'",
                )
    families = {row.family for row in catalog.rows.values()}
    for index, emitter in enumerate(world.workload.emitters):
        if emitter.family is not None and emitter.family not in families:
            fail(
                f"workload.emitters.{index}.family",
                f"the catalog has no family '{emitter.family}'; it has "
                + ", ".join(sorted(families)),
            )
    interchanges = world.workload.interchanges
    if interchanges.per_partner_per_hour > 0:
        if not interchanges.types:
            fail("workload.interchanges.types", "at least one event type is needed")
        named = list(interchanges.types)
        keys = [f"workload.interchanges.types.{name}" for name in named]
        if interchanges.first_type is not None:
            named.append(interchanges.first_type)
            keys.append("workload.interchanges.first_type")
        for key, event_type in zip(keys, named, strict=True):
            if not EVENT_TYPE_PATTERN.match(event_type):
                fail(key, f"'{event_type}' is not an event type")


def _message(error: Mapping[str, Any]) -> str:
    message = str(error["msg"])
    if error["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        return "unknown key"
    if error["type"] == "missing":
        return "required"
    if error["type"] == "union_tag_invalid":
        return "unknown kind; expected " + str(
            error.get("ctx", {}).get("expected_tags", "")
        )
    message = message.removeprefix("Value error, ")
    return message.replace("Input should be", "must be", 1)


def _dotted(location: tuple[int | str, ...]) -> str:
    tags = {"rolling_deploy", "deploy_new_type", "admin_disconnect", "function-before"}
    parts = [str(part) for part in location if str(part) not in tags]
    parts = [part for part in parts if not part.startswith("function-")]
    return ".".join(parts) or "<top>"


class _Unsupported(ValueError):
    pass


def _unjsonable(value: object) -> Any:
    raise _Unsupported(
        f"a {type(value).__name__} value is not supported here ({value!r}); "
        "write times as strings and durations as seconds"
    )
