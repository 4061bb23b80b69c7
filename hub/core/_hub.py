"""The hub core: subscribers, dispatch, the drop ledger, eviction and batches.

Nothing here does I/O or reads a clock of its own. The edges (the aiohttp server,
the SimPy replica) call in with events and with the passage of time, and drain each
subscriber's queue as their connection allows.

The ledger, per tenant, holds between any two calls into this module:

    fanout = delivered + dropped{permission, backpressure, disconnected} + queued

Every method below keeps it by moving a frame from one term to another in the same
synchronous step, never across an ``await`` of the caller.
"""

from __future__ import annotations

import enum
import itertools
import random
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from ._batches import BatchSynthesizer
from ._catalog import Catalog
from ._envelope import Envelope
from ._errors import StreamLimitError
from ._frames import EncodedEvent, control_frame, encode_event, shutdown_frame
from ._replay import ReplayBuffer


class Clock(Protocol):
    """The one source of time for the core: seconds, monotonic, any origin."""

    def now(self) -> float: ...


class DropReason(enum.StrEnum):
    PERMISSION = "permission"  # subscriber lacks the row's requiredPermission
    BACKPRESSURE = "backpressure"  # subscriber queue full
    DISCONNECTED = "disconnected"  # queued, then the subscriber went away
    UNKNOWN_TYPE = "unknown_type"  # no catalog row; counted per event


class DisconnectReason(enum.StrEnum):
    CLIENT = "client"  # the client went away or its connection failed
    EVICTED = "evicted"  # uninterrupted backpressure for the eviction time
    ADMIN = "admin"  # an admin ejected the tenant
    SHUTDOWN = "shutdown"  # the replica is closing


class SubscriberState(enum.Enum):
    OPEN = "open"  # receives events
    CLOSING = "closing"  # receives nothing more; farewell frame waits after its queue
    CLOSED = "closed"  # settled and forgotten by the core


FAREWELL_REASONS = {
    DisconnectReason.ADMIN: "admin_disconnect",
    DisconnectReason.SHUTDOWN: "shutdown",
}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a stream belongs to, as the verified token says."""

    subject: str
    tenant_id: str
    scopes: frozenset[str]
    roles: frozenset[str] = frozenset()
    # Identifies the credential for the per-token stream cap (a digest, never the
    # token itself); empty when the edge has none.
    token_id: str = ""


@dataclass(frozen=True, slots=True)
class CoreSettings:
    queue_size: int = 256
    evict_after_s: float = 30.0
    quiet_window_s: float = 5.0
    retry_ms: int = 3000
    # server_shutdown carries retry_ms plus a uniform draw from [0, spread]; a
    # rolling deploy then spreads its reconnects instead of storming one replica.
    shutdown_retry_spread_ms: int = 5000
    replay_max_events: int = 1000
    replay_max_age_s: float = 300.0
    max_streams_per_tenant: int = 10_000
    max_streams_per_token: int = 20


class Subscriber:
    """One open stream: a bounded queue of shared frames and its own tallies."""

    __slots__ = (
        "backpressure_since",
        "connected_at",
        "delivered",
        "disconnect_reason",
        "dropped_backpressure",
        "dropped_permission",
        "farewell",
        "id",
        "last_event_id",
        "notice",
        "principal",
        "queue",
        "replay_pending",
        "state",
        "wake",
    )

    def __init__(self, subscriber_id: str, principal: Principal, now: float) -> None:
        self.id = subscriber_id
        self.principal = principal
        self.queue: deque[EncodedEvent] = deque()
        # Replayed frames at the head of the queue. They do not count against the
        # live bound: the replay buffer bounds them, and a client catching up after
        # a gap must not lose live events to its own catch-up.
        self.replay_pending = 0
        self.state = SubscriberState.OPEN
        self.connected_at = now
        self.backpressure_since: float | None = None
        self.delivered = 0
        self.dropped_permission = 0
        self.dropped_backpressure = 0
        self.last_event_id: str | None = None
        self.farewell: bytes | None = None
        # An in-band notice for the edge to write right after the ready frame.
        self.notice: bytes | None = None
        self.disconnect_reason: DisconnectReason | None = None
        # Called when the queue turns non-empty or the state changes, so the edge
        # that writes this stream wakes up; never called per frame otherwise.
        self.wake: Callable[[], None] = _nothing

    @property
    def tenant_id(self) -> str:
        return self.principal.tenant_id

    def pending(self, limit: int | None = None) -> list[EncodedEvent]:
        """Frames waiting, oldest first; they stay queued until ``mark_written``."""
        if limit is None or limit >= len(self.queue):
            return list(self.queue)
        return list(itertools.islice(self.queue, limit))

    def statistics(self) -> SubscriberStatistics:
        return SubscriberStatistics(
            subscriber_id=self.id,
            tenant_id=self.tenant_id,
            subject=self.principal.subject,
            scopes=tuple(sorted(self.principal.scopes)),
            roles=tuple(sorted(self.principal.roles)),
            state=self.state.value,
            connected_at=self.connected_at,
            queued=len(self.queue),
            delivered=self.delivered,
            dropped_permission=self.dropped_permission,
            dropped_backpressure=self.dropped_backpressure,
            backpressure_since=self.backpressure_since,
            last_event_id=self.last_event_id,
        )


def _nothing() -> None:
    return None


@dataclass(frozen=True, slots=True)
class SubscriberStatistics:
    subscriber_id: str
    tenant_id: str
    subject: str
    scopes: tuple[str, ...]
    roles: tuple[str, ...]
    state: str
    connected_at: float
    queued: int
    delivered: int
    dropped_permission: int
    dropped_backpressure: int
    backpressure_since: float | None
    last_event_id: str | None


@dataclass(slots=True)
class TenantCounters:
    """Plain integers, so counting costs an add; a collector renders them."""

    subscribers: int = 0
    fanout: int = 0
    delivered: int = 0
    dropped_permission: int = 0
    dropped_backpressure: int = 0
    dropped_disconnected: int = 0
    dropped_unknown_type: int = 0
    queued: int = 0
    batches_completed: int = 0
    dispatched: dict[str, int] = field(default_factory=dict)
    disconnects: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(DisconnectReason, 0)
    )

    def dropped(self) -> dict[str, int]:
        return {
            DropReason.PERMISSION: self.dropped_permission,
            DropReason.BACKPRESSURE: self.dropped_backpressure,
            DropReason.DISCONNECTED: self.dropped_disconnected,
            DropReason.UNKNOWN_TYPE: self.dropped_unknown_type,
        }

    def ledger_gap(self) -> int:
        """Zero while the ledger holds."""
        return self.fanout - (
            self.delivered
            + self.dropped_permission
            + self.dropped_backpressure
            + self.dropped_disconnected
            + self.queued
        )


@dataclass(frozen=True, slots=True)
class TenantStatistics:
    tenant_id: str
    subscribers: int
    fanout: int
    delivered: int
    dropped: dict[str, int]
    queued: int
    disconnects: dict[str, int]
    dispatched: dict[str, int]
    batches_open: int
    batches_completed: int


@dataclass(frozen=True, slots=True)
class HubStatistics:
    replica_id: str
    subscribers: int
    tenants: dict[str, TenantStatistics]
    batches_open: int


class HubCore:
    def __init__(
        self,
        *,
        catalog: Catalog,
        clock: Clock,
        replica_id: str,
        settings: CoreSettings | None = None,
        subscriber_ids: Iterator[str] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.catalog = catalog
        self.clock = clock
        self.replica_id = replica_id
        self.settings = settings or CoreSettings()
        self.batches = BatchSynthesizer(self.settings.quiet_window_s)
        self.replay = ReplayBuffer(
            max_events=self.settings.replay_max_events,
            max_age_s=self.settings.replay_max_age_s,
        )
        self.rng = rng or random.Random()
        self.closed = False
        self._per_token: Counter[str] = Counter()
        self._counters: dict[str, TenantCounters] = {}
        # Only OPEN subscribers are indexed here: dispatch never sees the others.
        self._open: dict[str, dict[str, Subscriber]] = {}
        self._all: dict[str, Subscriber] = {}
        self._stalled: dict[str, Subscriber] = {}
        self._ids = subscriber_ids or (f"{replica_id}-s{n}" for n in itertools.count(1))
        # Frames of synthesized completions, for edges that observe them (tests, sim).
        self.on_batch_completed: Callable[[Envelope], None] = _ignore_envelope

    # -- subscribers -------------------------------------------------------------

    def subscribe(
        self, principal: Principal, *, last_event_id: str | None = None
    ) -> Subscriber:
        """Open a stream; with ``last_event_id``, queue what it missed first.

        Replayed frames are queued before the subscriber is indexed for live events,
        in the same step, so nothing is missed or repeated between the two.
        """
        if self.closed:
            raise RuntimeError("the hub is closed")
        counters = self.counters(principal.tenant_id)
        settings = self.settings
        if counters.subscribers >= settings.max_streams_per_tenant:
            raise StreamLimitError(
                f"tenant '{principal.tenant_id}' already has "
                f"{settings.max_streams_per_tenant} open streams on this replica"
            )
        token_id = principal.token_id
        if token_id and self._per_token[token_id] >= settings.max_streams_per_token:
            raise StreamLimitError(
                f"this token already has {settings.max_streams_per_token} open "
                "streams; close one or use another token"
            )

        subscriber = Subscriber(next(self._ids), principal, self.clock.now())
        if last_event_id is not None:
            self._replay_into(subscriber, last_event_id, counters)
        self._open.setdefault(principal.tenant_id, {})[subscriber.id] = subscriber
        self._all[subscriber.id] = subscriber
        counters.subscribers += 1
        if token_id:
            self._per_token[token_id] += 1
        return subscriber

    def _replay_into(
        self, subscriber: Subscriber, last_event_id: str, counters: TenantCounters
    ) -> None:
        missed = (
            self.replay.since(subscriber.tenant_id, last_event_id, self.clock.now())
            if self.replay.enabled
            else None
        )
        if missed is None:
            subscriber.notice = control_frame(
                "reload",
                {"reason": "replay_unavailable", "lastEventId": last_event_id},
            )
            return
        scopes = subscriber.principal.scopes
        rows = self.catalog.rows
        # Only events the subscriber may see are considered: a replay is a second
        # look at past dispatches, and each frame it queues enters the ledger as a
        # fanout pair, so the ledger stays exact.
        for encoded in missed:
            row = rows.get(encoded.envelope.type)
            if row is None or row.required_permission not in scopes:
                continue
            subscriber.queue.append(encoded)
        replayed = len(subscriber.queue)
        subscriber.replay_pending = replayed
        counters.fanout += replayed
        counters.queued += replayed

    def mark_written(self, subscriber: Subscriber, count: int) -> None:
        """The oldest ``count`` pending frames reached the connection: delivered."""
        queue = subscriber.queue
        count = min(count, len(queue))
        if subscriber.state is SubscriberState.CLOSED or count <= 0:
            return
        if count == len(queue):
            last = queue[-1]
            queue.clear()
        else:
            for _ in range(count - 1):
                queue.popleft()
            last = queue.popleft()
        subscriber.delivered += count
        if subscriber.replay_pending:
            subscriber.replay_pending = max(0, subscriber.replay_pending - count)
        subscriber.last_event_id = last.envelope.id
        subscriber.backpressure_since = None
        self._stalled.pop(subscriber.id, None)
        counters = self._counters[subscriber.tenant_id]
        counters.delivered += count
        counters.queued -= count

    def disconnect(
        self, subscriber: Subscriber, reason: DisconnectReason | None = None
    ) -> None:
        """Forget ``subscriber``; whatever it still had queued is dropped.

        The reason defaults to the farewell it was given (admin, shutdown) or, when
        there was none, to the client having gone away. Idempotent.
        """
        if subscriber.state is SubscriberState.CLOSED:
            return
        reason = reason or subscriber.disconnect_reason or DisconnectReason.CLIENT
        counters = self._counters[subscriber.tenant_id]
        left = len(subscriber.queue)
        subscriber.queue.clear()
        counters.queued -= left
        counters.dropped_disconnected += left
        counters.subscribers -= 1
        counters.disconnects[reason] += 1
        subscriber.state = SubscriberState.CLOSED
        subscriber.disconnect_reason = reason
        self._unindex(subscriber)
        del self._all[subscriber.id]
        token_id = subscriber.principal.token_id
        if token_id:
            self._per_token[token_id] -= 1
            if not self._per_token[token_id]:
                del self._per_token[token_id]
        self._stalled.pop(subscriber.id, None)
        subscriber.wake()

    def say_farewell(
        self,
        subscriber: Subscriber,
        reason: DisconnectReason,
        frame: bytes | None = None,
    ) -> None:
        """Stop sending events; the edge writes what is queued, then the farewell.

        Without ``frame`` the farewell is ``server_shutdown`` with the reason and a
        randomized ``retry:`` so that the clients' reconnects spread out.
        """
        if subscriber.state is not SubscriberState.OPEN:
            return
        if frame is None:
            spread = self.settings.shutdown_retry_spread_ms
            retry_ms = self.settings.retry_ms + (
                self.rng.randint(0, spread) if spread > 0 else 0
            )
            frame = shutdown_frame(FAREWELL_REASONS[reason], retry_ms=retry_ms)
        subscriber.state = SubscriberState.CLOSING
        subscriber.disconnect_reason = reason
        subscriber.farewell = frame
        self._unindex(subscriber)
        subscriber.wake()

    def disconnect_tenant(self, tenant_id: str) -> int:
        """Admin ejection: every open stream of the tenant gets its farewell."""
        subscribers = list(self._open.get(tenant_id, {}).values())
        for subscriber in subscribers:
            self.say_farewell(subscriber, DisconnectReason.ADMIN)
        return len(subscribers)

    def close(self) -> None:
        """The replica is closing: farewell to everyone, accept no one new."""
        self.closed = True
        for tenant in list(self._open):
            for subscriber in list(self._open.get(tenant, {}).values()):
                self.say_farewell(subscriber, DisconnectReason.SHUTDOWN)

    def subscribers(self, tenant_id: str | None = None) -> list[Subscriber]:
        every = self._all.values()
        if tenant_id is None:
            return list(every)
        return [s for s in every if s.tenant_id == tenant_id]

    # -- events ------------------------------------------------------------------

    def dispatch(self, envelope: Envelope) -> None:
        """An event taken from this replica's bus subscription."""
        counters = self.counters(envelope.tenant_id)
        row = self.catalog.rows.get(envelope.type)
        if row is None:
            counters.dropped_unknown_type += 1
            return
        dispatched = counters.dispatched
        dispatched[envelope.type] = dispatched.get(envelope.type, 0) + 1
        self._fan_out(envelope, row.required_permission, counters)
        if envelope.batch is not None:
            self.batches.observe(envelope, self.clock.now())

    def _deliver_synthesized(self, envelope: Envelope) -> None:
        """A locally synthesized event: routed like any other, not counted as taken
        from the bus, since every replica synthesizes its own copy."""
        counters = self.counters(envelope.tenant_id)
        row = self.catalog.rows.get(envelope.type)
        if row is None:
            counters.dropped_unknown_type += 1
            return
        self._fan_out(envelope, row.required_permission, counters)

    def _fan_out(
        self, envelope: Envelope, permission: str, counters: TenantCounters
    ) -> None:
        subscribers = self._open.get(envelope.tenant_id)
        encoded: EncodedEvent | None = None
        if self.replay.enabled:
            encoded = encode_event(envelope)
            self.replay.record(encoded, self.clock.now())
        if not subscribers:
            return
        capacity = self.settings.queue_size
        refused = full = queued = 0
        overflowing: list[Subscriber] = []
        for subscriber in subscribers.values():
            if permission not in subscriber.principal.scopes:
                refused += 1
                subscriber.dropped_permission += 1
                continue
            queue = subscriber.queue
            if len(queue) - subscriber.replay_pending >= capacity:
                full += 1
                subscriber.dropped_backpressure += 1
                overflowing.append(subscriber)
                continue
            if encoded is None:
                encoded = encode_event(envelope)
            queue.append(encoded)
            queued += 1
            if len(queue) == 1:
                subscriber.wake()
        # All terms move together, after the loop and before any caller can await.
        counters.fanout += len(subscribers)
        counters.dropped_permission += refused
        counters.dropped_backpressure += full
        counters.queued += queued
        if overflowing:
            self._note_backpressure(overflowing)

    def _note_backpressure(self, overflowing: Iterable[Subscriber]) -> None:
        now = self.clock.now()
        evict_after = self.settings.evict_after_s
        for subscriber in overflowing:
            if subscriber.backpressure_since is None:
                subscriber.backpressure_since = now
                self._stalled[subscriber.id] = subscriber
            elif now - subscriber.backpressure_since >= evict_after:
                self.disconnect(subscriber, DisconnectReason.EVICTED)

    # -- time --------------------------------------------------------------------

    def tick(self) -> float | None:
        """Let time act: evictions and quiet batches. Returns the next deadline."""
        now = self.clock.now()
        evict_after = self.settings.evict_after_s
        next_deadline: float | None = None
        for subscriber in list(self._stalled.values()):
            since = subscriber.backpressure_since
            if since is None:
                continue
            if now - since >= evict_after:
                self.disconnect(subscriber, DisconnectReason.EVICTED)
            elif next_deadline is None or since + evict_after < next_deadline:
                next_deadline = since + evict_after
        for completion in self.batches.due(now):
            self.counters(completion.tenant_id).batches_completed += 1
            self.on_batch_completed(completion)
            self._deliver_synthesized(completion)
        batch_deadline = self.batches.next_deadline()
        if batch_deadline is not None and (
            next_deadline is None or batch_deadline < next_deadline
        ):
            next_deadline = batch_deadline
        return next_deadline

    # -- reporting ---------------------------------------------------------------

    def counters(self, tenant_id: str) -> TenantCounters:
        counters = self._counters.get(tenant_id)
        if counters is None:
            counters = self._counters[tenant_id] = TenantCounters()
        return counters

    def tenant_ids(self) -> list[str]:
        return sorted(self._counters)

    def statistics(self) -> HubStatistics:
        tenants = {
            tenant: TenantStatistics(
                tenant_id=tenant,
                subscribers=counters.subscribers,
                fanout=counters.fanout,
                delivered=counters.delivered,
                dropped=counters.dropped(),
                queued=counters.queued,
                disconnects=dict(counters.disconnects),
                dispatched=dict(counters.dispatched),
                batches_open=self.batches.open_count(tenant),
                batches_completed=counters.batches_completed,
            )
            for tenant, counters in self._counters.items()
        }
        return HubStatistics(
            replica_id=self.replica_id,
            subscribers=len(self._all),
            tenants=tenants,
            batches_open=sum(t.batches_open for t in tenants.values()),
        )

    def _unindex(self, subscriber: Subscriber) -> None:
        tenant = self._open.get(subscriber.tenant_id)
        if tenant is not None:
            tenant.pop(subscriber.id, None)
            if not tenant:
                del self._open[subscriber.tenant_id]


def _ignore_envelope(envelope: Envelope) -> None:
    return None
