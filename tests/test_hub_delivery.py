"""Delivery rules of one replica: isolation, scopes, eviction, batches, the ledger."""

from __future__ import annotations

import asyncio
import json
import socket

import aiohttp

from hub import Replica

from .support import (
    PUBLISHER,
    assert_ledger,
    hub_settings,
    open_stream,
    publish,
    running_replicas,
    sample,
    scrape,
    token,
    url,
    wait_until,
)


async def _stalled_stream(replica: Replica) -> socket.socket:
    """A real stream whose client never reads, with a tiny receive buffer."""
    stalled = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(stalled, ("127.0.0.1", replica.port))
    request = (
        f"GET /v1/realtime/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {token()}\r\n\r\n"
    )
    await loop.sock_sendall(stalled, request.encode())
    await wait_until(lambda: replica.core.statistics().subscribers >= 1)
    return stalled


def _event(event_type: str, tenant: str = "acme", **extra: object) -> dict[str, object]:
    return {"type": event_type, "tenantId": tenant, "payload": {}, **extra}


async def test_tenants_never_see_each_other(session: aiohttp.ClientSession) -> None:
    """Each stream receives only its own tenant's events."""
    async with running_replicas() as [replica]:
        async with (
            open_stream(session, replica, token("acme")) as acme,
            open_stream(session, replica, token("globex")) as globex,
        ):
            await publish(
                session,
                replica,
                [
                    _event("claim.submitted", "acme", id="a1"),
                    _event("claim.submitted", "globex", id="g1"),
                    _event("claim.submitted", "acme", id="a2"),
                ],
            )
            await acme.wait_for_events(3)
            await globex.wait_for_events(2)
            await publish(session, replica, _event("claim.submitted", "acme", id="end"))
            await acme.wait_for_events(4)
            assert [e.last_event_id for e in acme.events[1:]] == ["a1", "a2", "end"]
            assert [e.last_event_id for e in globex.events[1:]] == ["g1"]
            assert all(
                json.loads(e.data)["tenantId"] == "globex" for e in globex.events[1:]
            )


async def test_scopes_filter_and_count_permission_drops(
    session: aiohttp.ClientSession,
) -> None:
    """A stream without a family's scope gets none of it; each refusal is counted."""
    async with running_replicas() as [replica]:
        async with (
            open_stream(session, replica, token(scopes=["claims.read"])) as claims_only,
            open_stream(session, replica, token()) as everything,
        ):
            await publish(
                session,
                replica,
                [
                    _event("denial.created", id="d1"),
                    _event("claim.submitted", id="c1"),
                    _event("batch.failed", id="b1"),
                ],
            )
            await everything.wait_for_events(4)
            await publish(session, replica, _event("claim.accepted", id="c2"))
            await claims_only.wait_for_events(3)
            assert [e.last_event_id for e in claims_only.events[1:]] == ["c1", "c2"]
            samples = await scrape(session, replica)
            assert (
                sample(
                    samples,
                    "rcm_realtime_dropped_total",
                    tenant_id="acme",
                    reason="permission",
                )
                == 2
            )
            assert sample(samples, "rcm_realtime_fanout_total", tenant_id="acme") == 8
            assert_ledger(samples)


async def test_unknown_types_are_dropped_once_per_event(
    session: aiohttp.ClientSession,
) -> None:
    """An event type without a catalog row is dropped as unknown_type, per event."""
    async with running_replicas() as [replica]:
        async with (
            open_stream(session, replica, token()) as first,
            open_stream(session, replica, token()),
        ):
            await publish(session, replica, _event("claim.teleported"))
            await publish(session, replica, _event("claim.submitted"))
            await first.wait_for_events(2)
            assert first.events[1].type == "claim.submitted"
            samples = await scrape(session, replica)
            assert (
                sample(
                    samples,
                    "rcm_realtime_dropped_total",
                    tenant_id="acme",
                    reason="unknown_type",
                )
                == 1
            )
            assert_ledger(samples)


async def test_stalled_socket_is_evicted_after_backpressure(
    session: aiohttp.ClientSession,
) -> None:
    """A client whose socket stops reading fills its queue, drops, then is evicted."""
    settings = hub_settings(queue_size=64, evict_after_s=0.3)
    async with running_replicas(settings=settings) as [replica]:
        stalled = await _stalled_stream(replica)
        async with open_stream(session, replica, token()) as healthy:
            payload = {"blob": "x" * 4000}
            published = 0
            evicted = False
            # Publish until the core evicts the stalled stream; bounded so a broken
            # eviction fails the test instead of running forever.
            for _ in range(400):
                await publish(
                    session, replica, [_event("claim.submitted", payload=payload)] * 5
                )
                published += 5
                counters = replica.core.counters("acme")
                if counters.disconnects["evicted"] == 1:
                    evicted = True
                    break
                await asyncio.sleep(0.01)
            assert evicted, "the stalled stream was never evicted"
            await healthy.wait_for_events(1 + published, timeout=10)
            samples = await scrape(session, replica)
            assert (
                sample(
                    samples,
                    "rcm_realtime_dropped_total",
                    tenant_id="acme",
                    reason="backpressure",
                )
                > 0
            )
            assert sample(samples, "rcm_realtime_subscribers", tenant_id="acme") == 1
            assert_ledger(samples)
        stalled.close()


async def test_batch_completes_after_quiet_window(
    session: aiohttp.ClientSession,
) -> None:
    """A bucket quiet for the window yields one batch.completed with its summary."""
    settings = hub_settings(batch_quiet_window_ms=150)
    batch = {"tradingPartnerId": "availity", "isa13": "000000123"}
    async with running_replicas(settings=settings) as [replica]:
        async with open_stream(session, replica, token()) as stream:
            await publish(
                session,
                replica,
                [_event("claim.submitted", id=f"e{n}", batch=batch) for n in range(3)],
            )
            await stream.wait_for_events(5, timeout=5)
            completed = stream.events[4]
            assert completed.type == "batch.completed"
            payload = json.loads(completed.data)["payload"]
            assert payload["eventCount"] == 3
            assert payload["tradingPartnerId"] == "availity"
            assert payload["isa13"] == "000000123"
            assert set(payload) == {
                "tradingPartnerId",
                "isa13",
                "eventCount",
                "firstEventAt",
                "lastEventAt",
            }
            samples = await scrape(session, replica)
            assert (
                sample(
                    samples, "rcm_realtime_batches_completed_total", tenant_id="acme"
                )
                == 1
            )
            assert sample(samples, "rcm_realtime_batches_open", tenant_id="acme") == 0


async def test_batch_failure_reaches_streams_through_the_catalog(
    session: aiohttp.ClientSession,
) -> None:
    """A recorded failure arrives as batch.failed, only to streams with batches.read."""
    async with running_replicas() as [replica]:
        async with (
            open_stream(session, replica, token()) as allowed,
            open_stream(session, replica, token(scopes=["claims.read"])) as refused,
        ):
            async with session.post(
                url(replica, "/v1/realtime/batches/failures"),
                json={
                    "tenantId": "acme",
                    "tradingPartnerId": "availity",
                    "reason": "999 rejected",
                    "isa13": "000000777",
                },
                headers={"Authorization": f"Bearer {PUBLISHER}"},
            ) as response:
                assert response.status == 202
            await allowed.wait_for_events(2)
            failed = allowed.events[1]
            assert failed.type == "batch.failed"
            assert json.loads(failed.data)["payload"]["reason"] == "999 rejected"
            await wait_until(
                lambda: replica.core.counters("acme").dropped_permission == 1,
                what="the permission drop",
            )
            assert len(refused.events) == 1


async def test_batch_failure_refuses_bad_bodies(session: aiohttp.ClientSession) -> None:
    """A failure without a reason or with a bad isa13 gets 400 naming the field."""
    async with running_replicas() as [replica]:
        for body, field in [
            ({"tenantId": "acme", "tradingPartnerId": "p"}, "reason"),
            (
                {
                    "tenantId": "acme",
                    "tradingPartnerId": "p",
                    "reason": "r",
                    "isa13": "abc",
                },
                "isa13",
            ),
        ]:
            async with session.post(
                url(replica, "/v1/realtime/batches/failures"),
                json=body,
                headers={"Authorization": f"Bearer {PUBLISHER}"},
            ) as response:
                assert response.status == 400
                assert f"'{field}'" in (await response.json())["message"]


async def test_readiness_turns_503_and_streams_get_shutdown(
    session: aiohttp.ClientSession,
) -> None:
    """Closing a replica sends server_shutdown to every stream and ends them."""
    async with running_replicas() as [replica]:
        async with open_stream(session, replica, token()) as stream:
            closing = asyncio.create_task(replica.close())
            await wait_until(lambda: stream.ended, what="the stream to end")
            await closing
            assert stream.events[-1].type == "server_shutdown"
            assert json.loads(stream.events[-1].data) == {"reason": "shutdown"}
            counters = replica.core.counters("acme")
            assert counters.disconnects["shutdown"] == 1
            assert counters.subscribers == 0
            assert counters.ledger_gap() == 0


async def test_not_ready_while_draining_and_stalled_streams_do_not_block_exit(
    session: aiohttp.ClientSession,
) -> None:
    """While closing, /readyz answers 503; a client that never reads is cut off."""
    settings = hub_settings(shutdown_grace_s=1.0, evict_after_s=3600.0)
    async with running_replicas(settings=settings) as [replica]:
        stalled = await _stalled_stream(replica)
        blob = {"blob": "x" * 8000}
        # Fill the stalled client's socket buffers until its writer is blocked.
        for _ in range(200):
            await publish(
                session, replica, [_event("claim.submitted", payload=blob)] * 20
            )
            if replica.core.counters("acme").queued > 0:
                break
        assert replica.core.counters("acme").queued > 0
        closing = asyncio.create_task(replica.close())
        await wait_until(lambda: replica.state.value == "closing")
        async with session.get(url(replica, "/readyz")) as response:
            assert response.status == 503
            assert (await response.json())["error"] == "not_ready"
        await asyncio.wait_for(closing, timeout=10)
        counters = replica.core.counters("acme")
        assert counters.subscribers == 0
        assert counters.queued == 0
        assert counters.dropped_disconnected > 0
        assert counters.ledger_gap() == 0
        stalled.close()
