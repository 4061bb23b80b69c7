"""What a load publisher posts: single events, batches and ISA-13 interchanges.

Every event carries ``loadStream`` and ``loadSeq`` in its payload: a number per
(publisher, tenant, permission), so that every subscriber allowed to read that
stream sees 1, 2, 3... and can tell gaps and duplicates apart from filtering.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ._setup import LoadCatalog

EVENTS_PATH = "/v1/realtime/events"
FAILURES_PATH = "/v1/realtime/batches/failures"
TRADING_PARTNERS = ("availity", "change-healthcare", "waystar", "trizetto", "claimmd")
KINDS = ("event", "batch", "interchange")
KIND_WEIGHTS = (6, 3, 1)
BATCH_SIZES = (2, 20)
INTERCHANGE_SIZES = (4, 40)
FAILED_INTERCHANGE_SHARE = 0.05


@dataclass(frozen=True, slots=True)
class Post:
    """One request: its path, JSON body, and how many events the hub will take."""

    kind: str
    path: str
    body: Any
    tenant_id: str
    events: int


def iso_now(now: float | None = None) -> str:
    moment = time.time() if now is None else now
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment))
    return f"{whole}.{int(moment * 1000) % 1000:03d}Z"


@dataclass(slots=True)
class EventFactory:
    publisher_id: str
    run_id: str
    tenants: list[str]
    catalog: LoadCatalog
    rng: random.Random = field(default_factory=random.Random)
    sequences: Counter[str] = field(default_factory=Counter)
    _isa13: int = 0

    def __post_init__(self) -> None:
        # Publishers start far apart so their interchange numbers do not meet.
        self._isa13 = self.rng.randrange(10**8, 9 * 10**8)

    def next_posts(self) -> list[Post]:
        kind = self.rng.choices(KINDS, KIND_WEIGHTS)[0]
        tenant = self.rng.choice(self.tenants)
        if kind == "event":
            return [self._events_post("event", tenant, [self._event(tenant)])]
        if kind == "batch":
            size = self.rng.randint(*BATCH_SIZES)
            return [
                self._events_post(
                    "batch", tenant, [self._event(tenant) for _ in range(size)]
                )
            ]
        return self._interchange(tenant)

    def _interchange(self, tenant: str) -> list[Post]:
        """One interchange in two posts, within the quiet window; now and then the
        clearinghouse rejects it and a failure is recorded too."""
        self._isa13 += 1
        ref = {
            "tradingPartnerId": self.rng.choice(TRADING_PARTNERS),
            "isa13": f"{self._isa13 % 10**9:09d}",
        }
        members = [
            t
            for t in self.catalog.publishable
            if t.startswith(("claim.", "remittance."))
        ] or list(self.catalog.publishable)
        size = self.rng.randint(*INTERCHANGE_SIZES)
        events = [
            self._event(tenant, self.rng.choice(members), batch=ref)
            for _ in range(size)
        ]
        half = size // 2
        posts = [
            self._events_post("interchange", tenant, events[:half]),
            self._events_post("interchange", tenant, events[half:]),
        ]
        if self.rng.random() < FAILED_INTERCHANGE_SHARE:
            body = {
                "tenantId": tenant,
                "reason": "rejected_by_clearinghouse",
                "message": "TA1 rejected the interchange",
                **ref,
            }
            posts.append(Post("failure", FAILURES_PATH, body, tenant, 1))
        return posts

    def _events_post(
        self, kind: str, tenant: str, events: list[dict[str, Any]]
    ) -> Post:
        body: Any = events[0] if len(events) == 1 else events
        return Post(kind, EVENTS_PATH, body, tenant, len(events))

    def _event(
        self,
        tenant: str,
        event_type: str | None = None,
        *,
        batch: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        event_type = event_type or self.rng.choice(self.catalog.publishable)
        permission = self.catalog.permission_of[event_type]
        stream = f"{self.publisher_id}/{tenant}/{permission}"
        self.sequences[stream] += 1
        envelope: dict[str, Any] = {
            "type": event_type,
            "tenantId": tenant,
            "occurredAt": iso_now(),
            "payload": {
                "claimId": f"C-{self.rng.randrange(10**8):08d}",
                "amountCents": self.rng.randrange(1000, 5_000_000),
                "loadRun": self.run_id,
                "loadStream": stream,
                "loadSeq": self.sequences[stream],
            },
        }
        if batch is not None:
            envelope["batch"] = dict(batch)
        return envelope
