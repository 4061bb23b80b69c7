"""The replay buffer: a replica's recent events per tenant, for ``Last-Event-ID``.

Bounded by count and by age per tenant. Events are kept in the order this replica
dispatched them, which is the bus's order, so "after the client's last id" means
the events this replica dispatched after it.
"""

from __future__ import annotations

from collections import deque

from ._frames import EncodedEvent


class ReplayBuffer:
    def __init__(self, *, max_events: int, max_age_s: float) -> None:
        self.max_events = max_events
        self.max_age_s = max_age_s
        self._tenants: dict[str, deque[tuple[float, EncodedEvent]]] = {}

    @property
    def enabled(self) -> bool:
        return self.max_events > 0 and self.max_age_s > 0

    def record(self, encoded: EncodedEvent, now: float) -> None:
        tenant = encoded.envelope.tenant_id
        kept = self._tenants.get(tenant)
        if kept is None:
            kept = self._tenants[tenant] = deque(maxlen=self.max_events)
        kept.append((now, encoded))
        self._expire(kept, now)

    def since(
        self, tenant_id: str, last_event_id: str, now: float
    ) -> list[EncodedEvent] | None:
        """Events after ``last_event_id``, oldest first; None when it is not held
        (too old, never seen here, or another tenant's), so nothing safe can be
        replayed and the client must reload."""
        kept = self._tenants.get(tenant_id)
        if not kept:
            return None
        self._expire(kept, now)
        for position in range(len(kept) - 1, -1, -1):
            if kept[position][1].envelope.id == last_event_id:
                return [encoded for _, encoded in list(kept)[position + 1 :]]
        return None

    def held(self, tenant_id: str) -> int:
        return len(self._tenants.get(tenant_id, ()))

    def _expire(self, kept: deque[tuple[float, EncodedEvent]], now: float) -> None:
        oldest_allowed = now - self.max_age_s
        while kept and kept[0][0] < oldest_allowed:
            kept.popleft()
