"""A first end-to-end check: an event published reaches a subscriber's stream."""

from __future__ import annotations

import json

import aiohttp

from .support import (
    assert_ledger,
    open_stream,
    publish,
    running_replicas,
    scrape,
    token,
)


async def test_published_event_reaches_subscriber(
    session: aiohttp.ClientSession,
) -> None:
    """One event posted to the ingest endpoint arrives once, as one JSON data line."""
    async with running_replicas() as [replica]:
        async with open_stream(session, replica, token()) as stream:
            [event_id] = await publish(
                session,
                replica,
                {"type": "claim.submitted", "tenantId": "acme", "payload": {"n": 1}},
            )
            await stream.wait_for_events(2)
            event = stream.events[1]
            assert event.type == "claim.submitted"
            assert event.last_event_id == event_id
            assert json.loads(event.data)["payload"] == {"n": 1}
        assert_ledger(await scrape(session, replica))
