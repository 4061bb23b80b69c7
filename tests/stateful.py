"""A Hypothesis state machine that holds a hub replica to the contract's laws.

The machine drives any replica through ``HubUnderTest``: subscribe, leave, publish,
drain, stall and resume clients, let virtual time pass, eject a tenant, close. It
keeps a reference model of what every stream must hold (queue, frames written, state)
and of every counter, and after each step checks the laws operators rely on:

- the ledger ``fanout = delivered + dropped{permission,backpressure,disconnected} +
  queued`` holds per tenant, and each gauge equals what is really open or waiting;
- no counter ever shrinks;
- no frame is queued or written for another tenant or without the row's permission;
- a stream that ended gets nothing afterwards, and carries at most one farewell;
- after close, once every client has read to the end, every gauge is zero and every
  stream that was live at close ended with exactly one ``server_shutdown``.

``CoreAdapter`` runs the bare ``HubCore`` with a fake clock and plays the edge (it
writes frames the way the aiohttp writer does). Another adapter, over another
replica built on the same core, plugs in by implementing ``HubUnderTest``.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Protocol

from hypothesis import event as tally_event
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from hub import load_catalog
from hub.core import (
    Catalog,
    CoreSettings,
    DisconnectReason,
    Envelope,
    HubCore,
    HubStatistics,
    Principal,
    StreamLimitError,
    Subscriber,
    SubscriberState,
    TenantCounters,
    batch_failure_from_json,
    completion_id,
    envelope_from_json,
    format_timestamp,
    ready_frame,
)

from .sse import SseEvent, SseParser

# Virtual time starts here so that occurredAt values look like real ones.
EPOCH_S = 1_800_000_000.0
TENANTS = ("acme", "globex")
# Events also go to a tenant nobody on this replica subscribes to.
EVENT_TENANTS = (*TENANTS, "initech")
SCOPES = (
    "claims.read",
    "denials.read",
    "remittance.read",
    "authorizations.read",
    "batches.read",
    "metrics.read",
)
UNKNOWN_TYPES = ("claim.archived", "widget.created")
PARTNERS = ("availity",)
ISA13S = ("000000001", "000000002")
# Small numbers so that full queues, evictions and quiet windows happen often.
MACHINE_SETTINGS = CoreSettings(
    queue_size=3,
    evict_after_s=10.0,
    quiet_window_s=5.0,
    replay_max_events=6,
    replay_max_age_s=20.0,
    max_streams_per_tenant=4,
    max_streams_per_token=2,
)
TOKENS = ("", "token-a", "token-b")
# Steps of virtual time around the quiet window's edges (also half the eviction
# time), and around the eviction time's.
STEPS_S = (0.0, 0.5, 1.0, 2.5, 4.5, 5.0, 5.5, 9.5, 10.0, 10.5)
FAREWELL_CAUSE = {
    "admin_disconnect": DisconnectReason.ADMIN,
    "shutdown": DisconnectReason.SHUTDOWN,
}


# -- the replica under test --------------------------------------------------------


@dataclass(eq=False)
class Connection:
    """One stream as its client sees it: every byte the edge wrote, parsed."""

    subscriber: Subscriber
    parser: SseParser = field(default_factory=SseParser)
    written: int = 0
    stalled: bool = False

    def receive(self, data: bytes) -> None:
        self.written += len(data)
        self.parser.feed_bytes(data)

    @property
    def events(self) -> list[SseEvent]:
        return self.parser.events


class HubUnderTest(Protocol):
    """What the machine needs of a replica; all of it synchronous, time virtual."""

    settings: CoreSettings
    catalog: Catalog
    # True when time can pass without the replica's timer firing (a busy loop);
    # the machine then also lets events arrive before an overdue tick.
    defers_ticks: bool

    def now(self) -> float: ...

    def subscribe(
        self, principal: Principal, last_event_id: str | None = None
    ) -> Connection:
        """Open a stream, replaying what followed ``last_event_id`` when given;
        raises RuntimeError once the replica is closed, StreamLimitError over a
        cap."""
        ...

    def unsubscribe(self, connection: Connection) -> None:
        """The client went away."""
        ...

    def publish(self, envelope: Envelope) -> None:
        """The event arrives from the replica's bus subscription."""
        ...

    def drain(self, connection: Connection, max_frames: int | None) -> None:
        """The client reads: the edge writes up to ``max_frames`` queued frames and,
        when the stream is closing and nothing is left, its farewell."""
        ...

    def stall(self, connection: Connection) -> None: ...

    def resume(self, connection: Connection) -> None: ...

    def advance(self, seconds: float, *, tick: bool = True) -> list[Envelope]:
        """Let time pass; returns the ``batch.completed`` events synthesized."""
        ...

    def admin_disconnect(self, tenant_id: str) -> int:
        """Eject the tenant; the edge then writes the farewell of every stream
        whose client still reads."""
        ...

    def close(self) -> None:
        """Close the replica; the edge writes every reading client's farewell."""
        ...

    def statistics(self) -> HubStatistics: ...

    def counters(self, tenant_id: str) -> TenantCounters: ...

    def subscribers(self) -> list[Subscriber]: ...


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t


class CoreAdapter:
    """The bare core, with the edge's writing loop reduced to its decisions."""

    defers_ticks = True

    def __init__(self, settings: CoreSettings, catalog: Catalog) -> None:
        self.settings = settings
        self.catalog = catalog
        self.clock = FakeClock()
        self.core = HubCore(
            catalog=catalog,
            clock=self.clock,
            replica_id="r1",
            settings=settings,
            rng=random.Random(0),
        )
        self.connections: list[Connection] = []
        self._completed: list[Envelope] = []
        self.core.on_batch_completed = self._completed.append

    def now(self) -> float:
        return self.clock.t

    def subscribe(
        self, principal: Principal, last_event_id: str | None = None
    ) -> Connection:
        subscriber = self.core.subscribe(principal, last_event_id=last_event_id)
        connection = Connection(subscriber)
        connection.receive(
            ready_frame(
                subscriber_id=subscriber.id,
                replica_id=self.core.replica_id,
                tenant_id=principal.tenant_id,
                retry_ms=self.settings.retry_ms,
            )
        )
        if subscriber.notice is not None:
            connection.receive(subscriber.notice)
        self.connections.append(connection)
        return connection

    def unsubscribe(self, connection: Connection) -> None:
        self.core.disconnect(connection.subscriber)

    def publish(self, envelope: Envelope) -> None:
        self.core.dispatch(envelope)

    def drain(self, connection: Connection, max_frames: int | None) -> None:
        subscriber = connection.subscriber
        if subscriber.state is SubscriberState.CLOSED:
            return
        frames = subscriber.pending(max_frames)
        if frames:
            connection.receive(b"".join(frame.frame for frame in frames))
            self.core.mark_written(subscriber, len(frames))
        if subscriber.state is SubscriberState.CLOSING and not subscriber.queue:
            assert subscriber.farewell is not None
            connection.receive(subscriber.farewell)
            self.core.disconnect(subscriber)

    def stall(self, connection: Connection) -> None:
        connection.stalled = True

    def resume(self, connection: Connection) -> None:
        connection.stalled = False

    def advance(self, seconds: float, *, tick: bool = True) -> list[Envelope]:
        self.clock.t += seconds
        self._completed.clear()
        if tick:
            self.core.tick()
        return list(self._completed)

    def admin_disconnect(self, tenant_id: str) -> int:
        ejected = [
            c
            for c in self.connections
            if c.subscriber.tenant_id == tenant_id
            and c.subscriber.state is SubscriberState.OPEN
        ]
        count = self.core.disconnect_tenant(tenant_id)
        self._write_farewells(ejected)
        return count

    def close(self) -> None:
        self.core.close()
        self._write_farewells(self.connections)

    def _write_farewells(self, connections: list[Connection]) -> None:
        for connection in connections:
            if not connection.stalled:
                self.drain(connection, None)

    def statistics(self) -> HubStatistics:
        return self.core.statistics()

    def counters(self, tenant_id: str) -> TenantCounters:
        return self.core.counters(tenant_id)

    def subscribers(self) -> list[Subscriber]:
        return self.core.subscribers()


# -- the reference model -----------------------------------------------------------


@dataclass(eq=False)
class Stream:
    """What one stream must look like, as the contract says."""

    connection: Connection
    principal: Principal
    state: SubscriberState = SubscriberState.OPEN
    queue: list[str] = field(default_factory=list)
    # Frames at the head of the queue that a reconnect replayed; they do not count
    # against the queue bound.
    replay_pending: int = 0
    # The Last-Event-ID the replica could not replay: a reload notice follows ready.
    reload_for: str | None = None
    delivered: list[str] = field(default_factory=list)
    backpressure_since: float | None = None
    farewell: str | None = None
    farewell_written: bool = False
    reason: DisconnectReason | None = None
    written_at_end: int | None = None
    ended_at: float | None = None

    @property
    def tenant_id(self) -> str:
        return self.principal.tenant_id

    @property
    def scopes(self) -> frozenset[str]:
        return self.principal.scopes

    live_at_close: bool = False


@dataclass(slots=True)
class Bucket:
    tenant_id: str
    count: int
    last_event_id: str
    deadline: float


@dataclass
class Model:
    settings: CoreSettings
    catalog: Catalog
    now: float = 0.0
    closed: bool = False
    streams: list[Stream] = field(default_factory=list)
    tallies: dict[str, TenantCounters] = field(default_factory=dict)
    buckets: dict[tuple[str, str, str], Bucket] = field(default_factory=dict)
    # Buckets whose quiet window passed before their next event arrived: complete,
    # waiting for the next tick to be announced.
    overdue: list[tuple[tuple[str, str, str], Bucket]] = field(default_factory=list)
    # Per tenant, what a reconnect can replay: (dispatched at, id, type), oldest first.
    replay: dict[str, list[tuple[float, str, str]]] = field(default_factory=dict)

    def tally(self, tenant_id: str) -> TenantCounters:
        return self.tallies.setdefault(tenant_id, TenantCounters())

    def live(self) -> list[Stream]:
        return [s for s in self.streams if s.state is not SubscriberState.CLOSED]

    def route(self, envelope: Envelope, *, from_bus: bool) -> None:
        tally = self.tally(envelope.tenant_id)
        row = self.catalog.row(envelope.type)
        if row is None:
            tally.dropped_unknown_type += 1
            return
        if from_bus:
            tally.dispatched[envelope.type] = tally.dispatched.get(envelope.type, 0) + 1
        self.remember(envelope)
        audience = [
            s
            for s in self.streams
            if s.tenant_id == envelope.tenant_id and s.state is SubscriberState.OPEN
        ]
        tally.fanout += len(audience)
        overflowing = []
        for stream in audience:
            if row.required_permission not in stream.scopes:
                tally.dropped_permission += 1
            elif len(stream.queue) - stream.replay_pending >= self.settings.queue_size:
                tally_event("dropped on backpressure")
                tally.dropped_backpressure += 1
                overflowing.append(stream)
            else:
                stream.queue.append(envelope.id)
                tally.queued += 1
        for stream in overflowing:
            if stream.backpressure_since is None:
                stream.backpressure_since = self.now
            elif self.now - stream.backpressure_since >= self.settings.evict_after_s:
                self.end(stream, DisconnectReason.EVICTED)
        if from_bus and envelope.batch is not None:
            self.observe(envelope)

    def remember(self, envelope: Envelope) -> None:
        kept = self.replay.setdefault(envelope.tenant_id, [])
        kept.append((self.now, envelope.id, envelope.type))
        del kept[: max(0, len(kept) - self.settings.replay_max_events)]
        self.expire(kept)

    def expire(self, kept: list[tuple[float, str, str]]) -> None:
        oldest_allowed = self.now - self.settings.replay_max_age_s
        while kept and kept[0][0] < oldest_allowed:
            del kept[0]

    def open_stream(self, stream: Stream, last_event_id: str | None) -> None:
        tally = self.tally(stream.tenant_id)
        if last_event_id is not None:
            kept = self.replay.get(stream.tenant_id, [])
            self.expire(kept)
            ids = [event_id for _, event_id, _ in kept]
            if last_event_id in ids:
                after = len(ids) - ids[::-1].index(last_event_id)
                for _, event_id, event_type in kept[after:]:
                    row = self.catalog.row(event_type)
                    if row is not None and row.required_permission in stream.scopes:
                        stream.queue.append(event_id)
                stream.replay_pending = len(stream.queue)
                tally.fanout += len(stream.queue)
                tally.queued += len(stream.queue)
            else:
                stream.reload_for = last_event_id
        self.streams.append(stream)
        tally.subscribers += 1

    def refusal(self, principal: Principal) -> str | None:
        """Why the replica must refuse this stream, if it must."""
        live = self.live()
        if sum(s.tenant_id == principal.tenant_id for s in live) >= (
            self.settings.max_streams_per_tenant
        ):
            return "tenant"
        token = principal.token_id
        if token and sum(s.principal.token_id == token for s in live) >= (
            self.settings.max_streams_per_token
        ):
            return "token"
        return None

    def observe(self, envelope: Envelope) -> None:
        assert envelope.batch is not None
        key = (
            envelope.tenant_id,
            envelope.batch.trading_partner_id,
            envelope.batch.isa13,
        )
        bucket = self.buckets.get(key)
        if bucket is not None and bucket.deadline <= self.now:
            tally_event("bucket completed by an event after a late tick")
            self.overdue.append((key, self.buckets.pop(key)))
            bucket = None
        deadline = self.now + self.settings.quiet_window_s
        if bucket is None:
            self.buckets[key] = Bucket(envelope.tenant_id, 1, envelope.id, deadline)
        else:
            bucket.count += 1
            bucket.last_event_id = envelope.id
            bucket.deadline = deadline

    def due(self) -> Counter[tuple[str, int]]:
        """Completions the next tick must announce, as (id, eventCount); taken."""
        ready = list(self.overdue)
        self.overdue.clear()
        for key, bucket in list(self.buckets.items()):
            if bucket.deadline <= self.now:
                ready.append((key, self.buckets.pop(key)))
        return Counter(
            (completion_id(key, bucket.last_event_id), bucket.count)
            for key, bucket in ready
        )

    def write(self, stream: Stream, max_frames: int | None) -> None:
        if stream.state is SubscriberState.CLOSED:
            return
        count = len(stream.queue) if max_frames is None else max_frames
        count = min(count, len(stream.queue))
        if count:
            stream.delivered += stream.queue[:count]
            del stream.queue[:count]
            stream.replay_pending = max(0, stream.replay_pending - count)
            tally = self.tally(stream.tenant_id)
            tally.delivered += count
            tally.queued -= count
            stream.backpressure_since = None
        if stream.state is SubscriberState.CLOSING and not stream.queue:
            assert stream.farewell is not None
            stream.farewell_written = True
            self.end(stream, FAREWELL_CAUSE[stream.farewell])

    def say_farewell(self, stream: Stream, farewell: str) -> None:
        stream.state = SubscriberState.CLOSING
        stream.farewell = farewell

    def end(self, stream: Stream, reason: DisconnectReason) -> None:
        tally_event(f"stream ended: {reason}")
        tally = self.tally(stream.tenant_id)
        tally.queued -= len(stream.queue)
        tally.dropped_disconnected += len(stream.queue)
        tally.subscribers -= 1
        tally.disconnects[reason] += 1
        stream.queue.clear()
        stream.state = SubscriberState.CLOSED
        stream.reason = reason

    def evict_overdue(self) -> None:
        for stream in self.live():
            since = stream.backpressure_since
            if since is not None and self.now - since >= self.settings.evict_after_s:
                self.end(stream, DisconnectReason.EVICTED)


# -- the machine -------------------------------------------------------------------

MONOTONIC_FIELDS = (
    "fanout",
    "delivered",
    "dropped_permission",
    "dropped_backpressure",
    "dropped_disconnected",
    "dropped_unknown_type",
    "batches_completed",
)


def monotonic_view(counters: TenantCounters) -> dict[str, int]:
    view = {name: getattr(counters, name) for name in MONOTONIC_FIELDS}
    view.update({f"dispatched[{k}]": v for k, v in counters.dispatched.items()})
    view.update({f"disconnects[{k}]": v for k, v in counters.disconnects.items()})
    return view


pick = st.integers(min_value=0, max_value=63)
# Tokens as roles seed them, and arbitrary ones.
scope_sets = st.sampled_from(
    sorted(
        {load_catalog().scopes_for_roles([role]) for role in load_catalog().roles},
        key=sorted,
    )
) | st.frozensets(st.sampled_from(SCOPES))


class HubMachine(RuleBasedStateMachine):
    """Drives one replica; subclasses choose it by overriding ``make_hub``."""

    catalog: ClassVar[Catalog] = load_catalog()

    def make_hub(self, settings: CoreSettings, catalog: Catalog) -> HubUnderTest:
        raise NotImplementedError

    def __init__(self) -> None:
        super().__init__()
        self.hub = self.make_hub(MACHINE_SETTINGS, self.catalog)
        self.model = Model(MACHINE_SETTINGS, self.catalog)
        self.published = 0
        self.ticked_at: float | None = None
        self.seen: dict[str, dict[str, int]] = {}
        self.types = sorted(t for t in self.catalog.rows if t != "batch.completed")

    # -- helpers -----------------------------------------------------------------

    def _choose(self, streams: list[Stream], index: int) -> Stream:
        return streams[index % len(streams)]

    def _reading(self) -> list[Stream]:
        return [s for s in self.model.live() if not s.connection.stalled]

    def _stalled(self) -> list[Stream]:
        return [s for s in self.model.live() if s.connection.stalled]

    def _settle_writes(self) -> None:
        """Record how much each stream that the replica just ended had been sent."""
        for stream in self.model.streams:
            ended = stream.connection.subscriber.state is SubscriberState.CLOSED
            if ended and stream.written_at_end is None:
                stream.written_at_end = stream.connection.written
                stream.ended_at = self.hub.now()

    def _envelope(
        self, event_type: str, tenant_id: str, batch: tuple[str, str] | None
    ) -> Envelope:
        self.published += 1
        event_id = f"e{self.published}"
        occurred_at = format_timestamp(EPOCH_S + self.model.now)
        if event_type == "batch.failed":
            partner = batch[0] if batch else PARTNERS[0]
            return batch_failure_from_json(
                {"tenantId": tenant_id, "tradingPartnerId": partner, "reason": "999"},
                new_id=lambda: event_id,
                now_iso=lambda: occurred_at,
            )
        document: dict[str, Any] = {
            "id": event_id,
            "type": event_type,
            "tenantId": tenant_id,
            "occurredAt": occurred_at,
            "payload": {"n": self.published},
        }
        if batch is not None:
            document["batch"] = {"tradingPartnerId": batch[0], "isa13": batch[1]}
        return envelope_from_json(
            document,
            catalog=self.catalog,
            member=None,
            new_id=lambda: event_id,
            now_iso=lambda: occurred_at,
        )

    # -- rules -------------------------------------------------------------------

    @initialize(
        streams=st.lists(
            st.tuples(st.sampled_from(TENANTS), scope_sets),
            min_size=1,
            max_size=4,
        )
    )
    def first_streams(self, streams: list[tuple[str, frozenset[str]]]) -> None:
        for tenant, scopes in streams:
            self.subscribe(tenant, scopes, "")

    @rule(
        tenant=st.sampled_from(TENANTS),
        scopes=scope_sets,
        token=st.sampled_from(TOKENS),
    )
    def subscribe(self, tenant: str, scopes: frozenset[str], token: str) -> None:
        principal = Principal("user", tenant, scopes, token_id=token)
        self._open(principal, None)

    def _open(self, principal: Principal, last_event_id: str | None) -> None:
        if self.model.closed:
            try:
                self.hub.subscribe(principal, last_event_id)
            except RuntimeError:
                return
            raise AssertionError("a closed replica accepted a new stream")
        refusal = self.model.refusal(principal)
        if refusal is not None:
            try:
                self.hub.subscribe(principal, last_event_id)
            except StreamLimitError:
                tally_event(f"refused over the {refusal} cap")
                return
            raise AssertionError(f"a stream over the {refusal} cap was accepted")
        connection = self.hub.subscribe(principal, last_event_id)
        self.model.open_stream(Stream(connection, principal), last_event_id)

    @precondition(lambda self: self.model.streams and not self.model.closed)
    @rule(
        index=pick,
        sends=st.sampled_from(("its last id", "another tenant's id", "an unknown id")),
    )
    def reconnect(self, index: int, sends: str) -> None:
        """A client reconnects, as EventSource does, with a Last-Event-ID."""
        candidates = self.model.streams
        if sends == "its last id":
            # A client that has read something; one that has not sends no id.
            candidates = [s for s in candidates if s.delivered] or candidates
        stream = self._choose(candidates, index)
        if stream.state is not SubscriberState.CLOSED:
            self.client_leaves(self.model.live().index(stream))
        if sends == "its last id":
            last_event_id = stream.delivered[-1] if stream.delivered else None
        elif sends == "another tenant's id":
            foreign = [
                event_id
                for tenant, kept in self.model.replay.items()
                if tenant != stream.tenant_id
                for _, event_id, _ in kept
            ]
            last_event_id = foreign[-1] if foreign else "e0"
        else:
            last_event_id = "never-sent"
        tally_event(f"reconnect sending {sends}")
        before = len(self.model.streams)
        self._open(stream.principal, last_event_id)
        if len(self.model.streams) > before and sends == "its last id":
            fresh = self.model.streams[-1]
            if fresh.replay_pending:
                tally_event("reconnect replayed events")
            repeated = set(stream.delivered) & {
                f.envelope.id for f in fresh.connection.subscriber.queue
            }
            assert not repeated, f"replay repeats what the client had: {repeated}"

    @precondition(lambda self: self.model.live())
    @rule(index=pick)
    def client_leaves(self, index: int) -> None:
        stream = self._choose(self.model.live(), index)
        self.hub.unsubscribe(stream.connection)
        farewell = stream.farewell
        self.model.end(
            stream, FAREWELL_CAUSE[farewell] if farewell else DisconnectReason.CLIENT
        )
        self._settle_writes()

    @rule(
        event_type=st.sampled_from(
            (
                "claim.submitted",
                "denial.created",
                "remittance.batch.received",
                "authorization.approved",
                "batch.failed",
                *UNKNOWN_TYPES,
            )
        ),
        tenant=st.sampled_from(EVENT_TENANTS),
        batch=st.none() | st.tuples(st.sampled_from(PARTNERS), st.sampled_from(ISA13S)),
        burst=st.integers(min_value=1, max_value=6),
    )
    def publish(
        self, event_type: str, tenant: str, batch: tuple[str, str] | None, burst: int
    ) -> None:
        for _ in range(burst):
            envelope = self._envelope(event_type, tenant, batch)
            self.hub.publish(envelope)
            self.model.route(envelope, from_bus=True)
        self._settle_writes()

    @precondition(lambda self: self._reading())
    @rule(index=pick, frames=st.integers(min_value=1, max_value=4))
    def drain(self, index: int, frames: int) -> None:
        reading = self._reading()
        # A client with something to read, when there is one.
        waiting = [s for s in reading if s.queue or s.state is SubscriberState.CLOSING]
        stream = self._choose(waiting or reading, index)
        self.hub.drain(stream.connection, frames)
        self.model.write(stream, frames)
        self._settle_writes()

    @precondition(lambda self: self.model.live())
    @rule(index=pick)
    def stall_or_resume(self, index: int) -> None:
        """A client stops reading, or a stalled one reads again."""
        stream = self._choose(self.model.live(), index)
        if stream.connection.stalled:
            self.hub.resume(stream.connection)
        else:
            self.hub.stall(stream.connection)

    @rule(seconds=st.sampled_from(STEPS_S), tick=st.booleans())
    def advance(self, seconds: float, tick: bool) -> None:
        tick = tick or not self.hub.defers_ticks
        completions = self.hub.advance(seconds, tick=tick)
        self.model.now += seconds
        if not tick:
            assert completions == [], "batches completed without a tick"
            return
        self.ticked_at = self.model.now
        self.model.evict_overdue()
        expected = self.model.due()
        announced = Counter(
            (envelope.id, envelope.payload["eventCount"]) for envelope in completions
        )
        assert announced == expected, (
            f"completions {dict(announced)} where the quiet windows give "
            f"{dict(expected)}"
        )
        for envelope in completions:
            tally_event("batch completed")
            self.model.tally(envelope.tenant_id).batches_completed += 1
            self.model.route(envelope, from_bus=False)
        self._settle_writes()

    @rule(tenant=st.sampled_from(TENANTS))
    def admin_disconnect(self, tenant: str) -> None:
        ejected = [
            s
            for s in self.model.streams
            if s.tenant_id == tenant and s.state is SubscriberState.OPEN
        ]
        assert self.hub.admin_disconnect(tenant) == len(ejected)
        for stream in ejected:
            self.model.say_farewell(stream, "admin_disconnect")
        for stream in ejected:
            if not stream.connection.stalled:
                self.model.write(stream, None)
        self._settle_writes()

    # Closing ends most of what can happen, so it waits for some traffic first;
    # teardown closes every run that did not.
    @precondition(lambda self: not self.model.closed and self.published >= 10)
    @rule()
    def close(self) -> None:
        self._close()

    def _close(self) -> None:
        self.hub.close()
        self.model.closed = True
        for subscriber in self.hub.subscribers():
            assert subscriber.state is not SubscriberState.OPEN, (
                f"{subscriber.id} still open after close"
            )
            assert subscriber.farewell is not None, f"{subscriber.id} has no farewell"
        for stream in self.model.live():
            stream.live_at_close = True
            if stream.state is SubscriberState.OPEN:
                self.model.say_farewell(stream, "shutdown")
        for stream in self._reading():
            self.model.write(stream, None)
        self._settle_writes()

    # -- invariants --------------------------------------------------------------
    # The contract's laws come first (Hypothesis checks invariants in name order),
    # so a broken law is reported as such before the model notices any difference.

    @invariant()
    def law_ledger_holds_per_tenant(self) -> None:
        for tenant, stats in self.hub.statistics().tenants.items():
            dropped = stats.dropped
            accounted = (
                stats.delivered
                + dropped["permission"]
                + dropped["backpressure"]
                + dropped["disconnected"]
                + stats.queued
            )
            assert stats.fanout == accounted, (
                f"ledger broken for {tenant}: fanout {stats.fanout} != {accounted}"
            )
            assert self.hub.counters(tenant).ledger_gap() == 0

    @invariant()
    def law_gauges_equal_open_streams_and_waiting_frames(self) -> None:
        statistics = self.hub.statistics()
        live = [
            s for s in self.hub.subscribers() if s.state is not SubscriberState.CLOSED
        ]
        assert statistics.subscribers == len(live)
        for tenant, stats in statistics.tenants.items():
            mine = [s for s in live if s.tenant_id == tenant]
            assert stats.subscribers == len(mine), (
                f"{tenant}: subscribers gauge {stats.subscribers}, live {len(mine)}"
            )
            assert stats.queued == sum(len(s.queue) for s in mine), (
                f"{tenant}: queued gauge {stats.queued}"
            )

    @invariant()
    def law_counters_never_shrink(self) -> None:
        for tenant in self.hub.statistics().tenants:
            now = monotonic_view(self.hub.counters(tenant))
            before = self.seen.get(tenant, {})
            shrunk = {
                k: (v, now.get(k, 0)) for k, v in before.items() if now.get(k, 0) < v
            }
            assert not shrunk, f"{tenant}: counters shrank (before, after): {shrunk}"
            self.seen[tenant] = now

    @invariant()
    def law_frames_stay_in_their_tenant_and_scope(self) -> None:
        for stream in self.model.streams:
            subscriber = stream.connection.subscriber
            written = [
                (e.type, json.loads(e.data)["tenantId"])
                for e in stream.connection.events[1:]
                if e.type not in ("server_shutdown", "reload")
            ]
            queued = [(f.envelope.type, f.envelope.tenant_id) for f in subscriber.queue]
            for event_type, tenant in queued + written:
                assert tenant == subscriber.tenant_id, (
                    f"{event_type} of {tenant} sent to {subscriber.id} of "
                    f"{subscriber.tenant_id}"
                )
                row = self.catalog.row(event_type)
                assert row is not None, f"{event_type} has no catalog row"
                assert row.required_permission in subscriber.principal.scopes, (
                    f"{event_type} sent to {subscriber.id} without "
                    f"{row.required_permission}"
                )

    @invariant()
    def law_ended_streams_get_nothing_more(self) -> None:
        for stream in self.model.streams:
            subscriber = stream.connection.subscriber
            if subscriber.state is not SubscriberState.CLOSED:
                continue
            assert not subscriber.queue, f"{subscriber.id} ended with frames queued"
            assert stream.connection.written == stream.written_at_end, (
                f"{subscriber.id} was written to after it ended"
            )

    @invariant()
    def law_no_stream_outstays_its_eviction(self) -> None:
        """Right after a tick, no stream has been overflowing for the eviction
        time; one that was is gone, as evicted."""
        if self.ticked_at != self.hub.now():
            return
        evict_after = self.hub.settings.evict_after_s
        for subscriber in self.hub.subscribers():
            since = subscriber.backpressure_since
            assert since is None or self.ticked_at - since < evict_after, (
                f"{subscriber.id} overflowing since {since}, still there at "
                f"{self.ticked_at}"
            )

    @invariant()
    def law_evicted_streams_overflowed_the_whole_time(self) -> None:
        evict_after = self.hub.settings.evict_after_s
        for stream in self.model.streams:
            subscriber = stream.connection.subscriber
            if subscriber.disconnect_reason is not DisconnectReason.EVICTED:
                continue
            since = subscriber.backpressure_since
            assert since is not None, f"{subscriber.id} evicted without backpressure"
            assert stream.ended_at is not None
            assert stream.ended_at - since >= evict_after, (
                f"{subscriber.id} evicted at {stream.ended_at}, overflowing since "
                f"{since}"
            )

    @invariant()
    def law_streams_are_well_formed(self) -> None:
        for stream in self.model.streams:
            events = stream.connection.events
            subscriber = stream.connection.subscriber
            assert events[0].type == "ready"
            assert json.loads(events[0].data)["subscriberId"] == subscriber.id
            farewells = [i for i, e in enumerate(events) if e.type == "server_shutdown"]
            assert len(farewells) <= 1, (
                f"{subscriber.id} got {len(farewells)} farewells"
            )
            assert farewells in ([], [len(events) - 1]), (
                f"{subscriber.id} got events after its farewell"
            )

    @invariant()
    def model_counters_agree(self) -> None:
        statistics = self.hub.statistics()
        for tenant in set(self.model.tallies) | set(statistics.tenants):
            expected = asdict(self.model.tally(tenant))
            actual = asdict(self.hub.counters(tenant))
            assert actual == expected, f"{tenant}: counters {actual}, model {expected}"
            open_buckets = sum(
                1 for b in self.model.buckets.values() if b.tenant_id == tenant
            )
            stats = statistics.tenants.get(tenant)
            assert (stats.batches_open if stats else 0) == open_buckets

    @invariant()
    def model_streams_agree(self) -> None:
        for stream in self.model.streams:
            subscriber = stream.connection.subscriber
            assert subscriber.state is stream.state, (
                f"{subscriber.id}: {subscriber.state} where the model has "
                f"{stream.state}"
            )
            assert [f.envelope.id for f in subscriber.queue] == stream.queue, (
                f"{subscriber.id} queue"
            )
            if stream.state is SubscriberState.CLOSED:
                assert subscriber.disconnect_reason is stream.reason
            body = stream.connection.events[1:]
            if stream.reload_for is not None:
                notice = body.pop(0)
                assert (notice.type, json.loads(notice.data)) == (
                    "reload",
                    {"reason": "replay_unavailable", "lastEventId": stream.reload_for},
                ), f"{subscriber.id} opened with {notice}"
            if stream.farewell_written:
                farewell = json.loads(body.pop().data)
                assert farewell == {"reason": stream.farewell}
            ids = [e.last_event_id for e in body]
            assert ids == stream.delivered, f"{subscriber.id} received {ids}"
            assert [json.loads(e.data)["id"] for e in body] == ids

    def teardown(self) -> None:
        """Close if the run did not, let every client read to the end, and check
        that each stream still open took exactly one farewell and nothing is left
        open or waiting."""
        if not self.model.closed:
            self._close()
        for stream in self._stalled():
            self.hub.resume(stream.connection)
        reading = self.model.live()
        for stream in reading:
            self.hub.drain(stream.connection, None)
            self.model.write(stream, None)
        self._settle_writes()
        self.law_ledger_holds_per_tenant()
        self.law_streams_are_well_formed()
        self.model_counters_agree()
        self.model_streams_agree()
        statistics = self.hub.statistics()
        assert statistics.subscribers == 0
        for tenant, stats in statistics.tenants.items():
            assert (stats.subscribers, stats.queued) == (0, 0), tenant
        for stream in reading:
            farewells = [
                e for e in stream.connection.events if e.type == "server_shutdown"
            ]
            assert len(farewells) == 1, (
                f"{stream.connection.subscriber.id} read {len(farewells)} farewells"
            )
