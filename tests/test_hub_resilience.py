"""Resume by Last-Event-ID, stream caps, token expiry, slow senders, spread retry."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable

import aiohttp
import pytest

from hub.core import SubscriberState

from .sse import SseParser
from .support import (
    ADMIN,
    PUBLISHER,
    assert_ledger,
    hub_settings,
    open_stream,
    publish,
    running_replicas,
    scrape,
    stalled_client,
    token,
    url,
    wait_until,
)


def _event(event_id: str, tenant: str = "acme", kind: str = "claim.submitted") -> dict:
    return {"id": event_id, "type": kind, "tenantId": tenant, "payload": {}}


async def test_reconnect_with_last_event_id_replays_only_what_was_missed(
    session: aiohttp.ClientSession,
) -> None:
    """A reconnecting client gets exactly the events after its last id that it may
    see: none it had, none of another tenant, none its scopes forbid."""
    bearer = token(scopes=["claims.read"])
    async with running_replicas(2) as [first, second]:
        async with open_stream(session, first, bearer) as stream:
            await publish(session, first, [_event("e1"), _event("e2")])
            await stream.wait_for_events(3)
        await publish(
            session,
            first,
            [
                _event("e3"),
                _event("g1", tenant="globex"),
                _event("d1", kind="denial.created"),
                _event("e4"),
            ],
        )
        await wait_until(
            lambda: second.core.replay.held("acme") == 5,
            what="second replica to see all",
        )
        # Reconnect to the other replica: ids are the same everywhere.
        async with open_stream(
            session, second, bearer, headers={"Last-Event-ID": "e2"}
        ) as resumed:
            await resumed.wait_for_events(3)
            await publish(session, first, _event("e5"))
            await resumed.wait_for_events(4)
            assert [e.last_event_id for e in resumed.events[1:]] == ["e3", "e4", "e5"]
            assert_ledger(await scrape(session, second))


async def test_unknown_last_event_id_tells_the_client_to_reload(
    session: aiohttp.ClientSession,
) -> None:
    """When the last id is not held (too old, unknown), the stream says so in-band."""
    async with running_replicas() as [replica]:
        await publish(session, replica, _event("e1"))
        async with open_stream(
            session, replica, token(), headers={"Last-Event-ID": "long-gone"}
        ) as stream:
            await stream.wait_for_events(2)
            notice = stream.events[1]
            assert notice.type == "reload"
            assert json.loads(notice.data) == {
                "reason": "replay_unavailable",
                "lastEventId": "long-gone",
            }
            await publish(session, replica, _event("e2"))
            await stream.wait_for_events(3)
            assert stream.events[2].last_event_id == "e2"


async def test_replay_is_bounded_by_age(session: aiohttp.ClientSession) -> None:
    """Events older than the replay age are gone: the client is told to reload."""
    settings = hub_settings(replay_max_age_s=0.05)
    async with running_replicas(settings=settings) as [replica]:
        await publish(session, replica, _event("e1"))
        await wait_until(lambda: replica.core.replay.held("acme") == 1)
        await asyncio.sleep(0.1)  # let the one event age out of the buffer
        async with open_stream(
            session, replica, token(), headers={"Last-Event-ID": "e1"}
        ) as stream:
            await stream.wait_for_events(2)
            assert stream.events[1].type == "reload"


async def test_streams_per_token_are_capped_with_429(
    session: aiohttp.ClientSession,
) -> None:
    """One token past its stream cap gets 429 with a JSON error; another token not."""
    settings = hub_settings(max_streams_per_token=2)
    bearer = token()
    async with running_replicas(settings=settings) as [replica]:
        async with (
            open_stream(session, replica, bearer),
            open_stream(session, replica, bearer),
        ):
            async with session.get(
                url(replica, "/v1/realtime/stream"),
                headers={"Authorization": f"Bearer {bearer}"},
            ) as response:
                assert response.status == 429
                body = await response.json()
                assert body["error"] == "too_many_streams"
            async with open_stream(session, replica, token(subject="other")):
                pass
        # Closed streams free their places.
        await wait_until(lambda: replica.core.counters("acme").subscribers == 0)
        async with open_stream(session, replica, bearer):
            pass


async def test_streams_per_tenant_are_capped_with_429(
    session: aiohttp.ClientSession,
) -> None:
    """A tenant past its stream cap gets 429; other tenants are unaffected."""
    settings = hub_settings(max_streams_per_tenant=1)
    async with running_replicas(settings=settings) as [replica]:
        async with open_stream(session, replica, token("acme")):
            async with session.get(
                url(replica, "/v1/realtime/stream"),
                headers={"Authorization": f"Bearer {token('acme', subject='b')}"},
            ) as response:
                assert response.status == 429
            async with open_stream(session, replica, token("globex")):
                pass


async def test_stream_ends_with_notice_when_token_expires(
    session: aiohttp.ClientSession,
) -> None:
    """At the token's exp the stream gets token_expired and ends."""
    async with running_replicas() as [replica]:
        async with open_stream(session, replica, token(ttl_s=1)) as stream:
            await wait_until(lambda: stream.ended, timeout=5, what="expiry")
            assert stream.events[-1].type == "token_expired"
            counters = replica.core.counters("acme")
            await wait_until(lambda: counters.subscribers == 0)
            assert counters.disconnects["client"] == 1


async def test_shutdown_retry_is_spread_across_clients(
    session: aiohttp.ClientSession,
) -> None:
    """Each stream's server_shutdown carries its own retry within the spread."""
    settings = hub_settings(retry_ms=1000, shutdown_retry_spread_ms=9000)
    async with (
        running_replicas(settings=settings) as [replica],
        contextlib.AsyncExitStack() as stack,
    ):
        streams = [
            await stack.enter_async_context(
                open_stream(session, replica, token(subject=f"u{n}"))
            )
            for n in range(12)
        ]
        await replica.close()
        for stream in streams:
            await wait_until(lambda s=stream: s.ended)
        assert all(s.events[-1].type == "server_shutdown" for s in streams)
        retries = [stream.parser.retry_ms for stream in streams]
        assert all(r is not None and 1000 <= r <= 10_000 for r in retries)
        assert len(set(retries)) > 6, retries


async def test_slow_header_sender_is_disconnected() -> None:
    """A client that never finishes its request headers is cut off."""
    settings = hub_settings(header_timeout_s=0.3)
    async with running_replicas(settings=settings) as [replica]:
        reader, writer = await asyncio.open_connection("127.0.0.1", replica.port)
        writer.write(b"GET /v1/realtime/stream HTTP/1.1\r\nHost: x\r\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), timeout=10) == b""
        writer.close()


async def test_slow_body_sender_gets_408() -> None:
    """A body that does not arrive in time is refused with 408 and JSON."""
    settings = hub_settings(body_timeout_s=0.3)
    async with running_replicas(settings=settings) as [replica]:
        reader, writer = await asyncio.open_connection("127.0.0.1", replica.port)
        writer.write(
            b"POST /v1/realtime/events HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + PUBLISHER.encode() + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        assert head.startswith(b"HTTP/1.1 408")
        assert b"Connection: close" in head
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        body = await reader.readexactly(length)
        assert json.loads(body)["error"] == "request_timeout"
        writer.close()


def dechunk(body: bytes) -> bytes:
    """The payload of an HTTP/1.1 chunked body."""
    payload = bytearray()
    while body:
        size_line, body = body.split(b"\r\n", 1)
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        payload += body[:size]
        body = body[size + 2 :]
    return bytes(payload)


@pytest.mark.parametrize(
    ("ending", "farewell"),
    [
        pytest.param("admin", "server_shutdown", id="admin-disconnect"),
        pytest.param("expiry", "token_expired", id="token-expiry"),
        pytest.param("shutdown", "server_shutdown", id="replica-shutdown"),
    ],
)
async def test_a_client_behind_on_reading_still_gets_every_frame_and_the_farewell(
    session: aiohttp.ClientSession, ending: str, farewell: str
) -> None:
    """When the hub ends a stream while frames it counted delivered still wait
    in the connection's buffer for a client that is behind on reading, those
    frames and then the farewell reach the client before the connection closes."""
    send_buffer = 16384
    settings = hub_settings(stream_send_buffer_bytes=send_buffer)
    bearer = token(ttl_s=6 if ending == "expiry" else 3600)
    async with (
        running_replicas(settings=settings) as [replica],
        stalled_client(replica, bearer) as client,
    ):
        counters = replica.core.counters("acme")

        def written(count: int) -> Callable[[], bool]:
            return lambda: counters.delivered == count

        [subscriber] = replica.core.subscribers("acme")
        transport = replica._writers[subscriber.id]
        assert transport is not None
        published: list[str] = []
        # Fill the socket buffers until the connection's own buffer holds
        # frames, below the mark at which a write would wait for the client.
        for batch in range(40):
            published += await publish(
                session,
                replica,
                [
                    {
                        "id": f"e{batch:02d}{n}",
                        "type": "claim.submitted",
                        "tenantId": "acme",
                        "payload": {"note": "x" * 200},
                    }
                    for n in range(5)
                ],
            )
            await wait_until(written(len(published)), what="frames written")
            if transport.get_write_buffer_size() > 0:
                break
        assert 0 < transport.get_write_buffer_size() < send_buffer
        if ending == "admin":
            async with session.post(
                url(replica, "/v1/realtime/admin/tenants/acme/disconnect"),
                headers={"Authorization": f"Bearer {ADMIN}"},
            ) as response:
                assert response.status == 200
        elif ending == "shutdown":
            closing = asyncio.create_task(replica.close())
        await wait_until(
            lambda: subscriber.state is SubscriberState.CLOSED,
            timeout=10,
            what="the hub to end the stream",
        )
        assert client.reader is not None
        rest = await asyncio.wait_for(client.reader.read(), timeout=15)
        if ending == "shutdown":
            await closing

    _, body = (client.head + rest).split(b"\r\n\r\n", 1)
    parser = SseParser()
    parser.feed_bytes(dechunk(body))
    received = [e.last_event_id for e in parser.events if e.type == "claim.submitted"]
    assert received == published
    assert parser.events[-1].type == farewell
