"""What the load clients saw, in plain counters that merge across processes.

Every Locust process keeps one ``ClientTally``; workers send theirs to the master at
test stop, and the master writes the sum for ``rcm-realtime load`` to reconcile
against the hubs' counters.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class SequenceTracker:
    """Gaps and duplicates per publisher sequence, across one client's connections.

    A publisher numbers the events of each of its streams (publisher, tenant,
    permission) 1, 2, 3...; a subscriber that may read the stream sees them in
    order. The first event of a stream that a client ever sees is its baseline
    (clients join mid-stream). Within one connection a jump is a gap (the hub
    dropped events for this client); across a reconnect a jump is what was missed
    while away, since the hub does not replay. A number not above the last one seen
    is a duplicate.
    """

    last: dict[str, int] = field(default_factory=dict)
    seen_this_connection: set[str] = field(default_factory=set)

    def new_connection(self) -> None:
        self.seen_this_connection = set()

    def observe(self, key: str, seq: int) -> tuple[str, int]:
        """Classify one event: ``("ok"|"gap"|"missed"|"duplicate", count)``."""
        previous = self.last.get(key)
        fresh = key not in self.seen_this_connection
        self.seen_this_connection.add(key)
        if previous is None:
            self.last[key] = seq
            return "ok", 0
        if seq <= previous:
            return "duplicate", 1
        self.last[key] = seq
        skipped = seq - previous - 1
        if skipped == 0:
            return "ok", 0
        return ("missed" if fresh else "gap"), skipped


@dataclass(slots=True)
class ClientTally:
    """Counters of one or more load processes; all of them only grow."""

    # Catalog events received (frames the hub counts as delivered), per tenant and
    # per type; control frames (ready, server_shutdown) are not among them.
    received: Counter[str] = field(default_factory=Counter)
    received_by_type: Counter[str] = field(default_factory=Counter)
    control_frames: Counter[str] = field(default_factory=Counter)
    heartbeats: int = 0
    connects: int = 0
    connect_failures: Counter[str] = field(default_factory=Counter)
    reconnects: int = 0
    farewells: Counter[str] = field(default_factory=Counter)
    ended_without_farewell: int = 0
    sessions: int = 0
    departures: int = 0
    gaps: int = 0
    gap_incidents: int = 0
    missed_while_away: int = 0
    duplicates: int = 0
    foreign_tenant: int = 0
    forbidden_type: int = 0
    malformed: int = 0
    open_streams: int = 0
    peak_open_streams: int = 0

    def stream_opened(self) -> None:
        self.open_streams += 1
        self.peak_open_streams = max(self.peak_open_streams, self.open_streams)

    def stream_closed(self) -> None:
        self.open_streams -= 1

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            document[name] = dict(value) if isinstance(value, Counter) else value
        return document

    def merge(self, document: dict[str, Any]) -> None:
        """Add another process's ``to_json`` to this one (peaks add up too: the
        processes' streams were open at the same time)."""
        for name in self.__slots__:
            if name not in document:
                continue
            mine = getattr(self, name)
            if isinstance(mine, Counter):
                mine.update({str(k): int(v) for k, v in document[name].items()})
            else:
                setattr(self, name, mine + int(document[name]))

    @property
    def total_received(self) -> int:
        return sum(self.received.values())
