"""The steady load: events posted to the replicas at a constant rate.

Each event carries an id chosen here, so a request refused while the broker is
down, or left without an answer, is sent again with the same ids: a replica skips
ids it has already dispatched, and the count of events published stays exact.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from hub import new_event_id, now_iso

TICK_S = 0.1
RETRY_S = 0.25
MAX_PENDING = 1000  # the hub takes at most 1000 events a request
FLUSH_S = 30.0
REQUEST_TIMEOUT_S = 10.0
BATCH_SHARE = 0.15
PARTNERS = ("availity", "change-healthcare", "waystar")
EVENT_TYPES = (
    "claim.submitted",
    "claim.accepted",
    "claim.rejected",
    "claim.status_checked",
    "denial.created",
    "remittance.batch.received",
    "remittance.payment.posted",
    "authorization.approved",
    "authorization.denied",
)
BATCHED_TYPES = ("claim.submitted", "claim.accepted")


@dataclass(slots=True)
class _Bucket:
    partner: str
    isa13: int
    left: int


@dataclass(slots=True)
class PublisherStatistics:
    published: int = 0
    requests: int = 0
    refused: int = 0  # answered 503 (bus down) and sent again
    unanswered: int = 0  # no answer (connection failed or timed out), sent again
    rejected: int = 0  # refused for good (4xx): a fault of the soak itself
    rejected_reason: str | None = None
    held_back: int = 0  # not generated while too many waited to be published
    left_unpublished: int = 0  # still waiting when the flush gave up
    left_uncertain: int = 0  # of those, sent at least once without an answer
    per_tenant: dict[str, int] = field(default_factory=dict)


class Publisher:
    def __init__(
        self,
        *,
        base_urls: Callable[[], Sequence[str]],
        bearer: str,
        rate_per_s: float,
        tenants: Sequence[str],
        rng: random.Random,
        now: Callable[[], float],
    ) -> None:
        self.base_urls = base_urls
        self.bearer = bearer
        self.rate = rate_per_s
        self.tenants = tenants
        self.rng = rng
        self.now = now
        self.stats = PublisherStatistics()
        self._sequence = 0
        self._isa13 = 100_000_000
        self._buckets: dict[str, _Bucket] = {}
        self._pending: list[dict[str, Any]] = []
        self._pending_uncertain = False

    async def run(self, session: aiohttp.ClientSession, until_s: float) -> None:
        """Publish at the rate until ``until_s``, then flush what waits."""
        started = self.now()
        generated = 0
        loop = asyncio.get_running_loop()
        while self.now() < until_s:
            due = int((self.now() - started) * self.rate) - generated
            generated += due
            room = MAX_PENDING - len(self._pending)
            take = min(due, room)
            self.stats.held_back += due - take
            self._pending.extend(self._event() for _ in range(take))
            tick_at = loop.time() + TICK_S
            if self._pending and not await self._send(session):
                tick_at = loop.time() + RETRY_S
            await asyncio.sleep(max(0.0, tick_at - loop.time()))
        deadline = self.now() + FLUSH_S
        while self._pending and self.now() < deadline:
            if not await self._send(session):
                await asyncio.sleep(RETRY_S)
        self.stats.left_unpublished = len(self._pending)
        self.stats.left_uncertain = len(self._pending) if self._pending_uncertain else 0

    async def _send(self, session: aiohttp.ClientSession) -> bool:
        urls = self.base_urls()
        if not urls:
            return False
        body = self._pending
        self.stats.requests += 1
        try:
            async with session.post(
                self.rng.choice(urls) + "/v1/realtime/events",
                json=body,
                headers={"Authorization": f"Bearer {self.bearer}"},
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
            ) as response:
                status = response.status
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError):
            self.stats.unanswered += 1
            self._pending_uncertain = True
            return False
        if status == 202:
            self._accepted(body)
            return True
        if status >= 500 or status == 429:
            self.stats.refused += 1
            return False
        self.stats.rejected += len(body)
        self.stats.rejected_reason = f"{status}: {text[:300]}"
        self._pending = []
        self._pending_uncertain = False
        return True

    def _accepted(self, body: list[dict[str, Any]]) -> None:
        stats = self.stats
        stats.published += len(body)
        for event in body:
            tenant = event["tenantId"]
            stats.per_tenant[tenant] = stats.per_tenant.get(tenant, 0) + 1
        self._pending = []
        self._pending_uncertain = False

    def _event(self) -> dict[str, Any]:
        self._sequence += 1
        tenant = self.rng.choice(self.tenants)
        event: dict[str, Any] = {
            "id": new_event_id(),
            "tenantId": tenant,
            "occurredAt": now_iso(),
            "payload": {
                "sequence": self._sequence,
                "claimId": f"C-{self.rng.randrange(10**8):08d}",
                "amountCents": self.rng.randrange(100, 500_000),
            },
        }
        if self.rng.random() < BATCH_SHARE:
            bucket = self._bucket(tenant)
            event["type"] = self.rng.choice(BATCHED_TYPES)
            event["batch"] = {
                "tradingPartnerId": bucket.partner,
                "isa13": f"{bucket.isa13:09d}",
            }
        else:
            event["type"] = self.rng.choice(EVENT_TYPES)
        return event

    def _bucket(self, tenant: str) -> _Bucket:
        """The tenant's interchange being submitted; a new one after a few events,
        so buckets go quiet and complete all along the run."""
        bucket = self._buckets.get(tenant)
        if bucket is None or bucket.left <= 0:
            self._isa13 += 1
            bucket = _Bucket(
                self.rng.choice(PARTNERS), self._isa13, self.rng.randint(2, 12)
            )
            self._buckets[tenant] = bucket
        bucket.left -= 1
        return bucket
