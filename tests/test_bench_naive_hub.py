"""The benchmark's naive baseline hub serves the same two endpoints as the hub,
so the same client and publisher drive both."""

from __future__ import annotations

import json

import aiohttp
from aiohttp import web

from benchmarks.naive_hub import NaiveHub

from .sse import SseParser
from .support import PUBLISHER, SECRET, token


async def test_a_published_event_reaches_the_naive_hubs_subscribers_in_scope(
    session: aiohttp.ClientSession,
) -> None:
    """Subscribers with the event's scope read it; one without reads only what it
    may."""
    runner = web.AppRunner(NaiveHub(SECRET).app(), handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    base = f"http://127.0.0.1:{port}"
    try:
        readers = []
        for scopes in (["claims.read"], ["claims.read"], ["denials.read"]):
            response = await session.get(
                f"{base}/v1/realtime/stream",
                headers={"Authorization": f"Bearer {token(scopes=scopes)}"},
            )
            assert response.status == 200
            readers.append((response, SseParser()))

        for event_type in ("claim.submitted", "denial.created"):
            async with session.post(
                f"{base}/v1/realtime/events",
                json=[{"type": event_type, "tenantId": "acme", "payload": {"n": 1}}],
                headers={"Authorization": f"Bearer {PUBLISHER}"},
            ) as answer:
                assert answer.status == 202

        for response, parser in readers[:2]:
            while len(parser.events) < 2:
                parser.feed_bytes(await response.content.readany())
            assert parser.events[1].type == "claim.submitted"
            assert json.loads(parser.events[1].data)["payload"] == {"n": 1}
        # Events reach a subscriber in order: the denial after a claim it never got.
        silent, silent_parser = readers[2]
        while len(silent_parser.events) < 2:
            silent_parser.feed_bytes(await silent.content.readany())
        assert [e.type for e in silent_parser.events] == ["ready", "denial.created"]
        for response, _ in readers:
            response.close()
    finally:
        await runner.cleanup()
