"""Every endpoint of one replica, its status codes and its JSON errors."""

from __future__ import annotations

import time

import aiohttp
import jwt
import pytest

from .support import (
    ADMIN,
    METRICS_BEARER,
    PUBLISHER,
    SECRET,
    assert_ledger,
    open_stream,
    publish,
    running_replicas,
    scrape,
    token,
    url,
    wait_until,
)

EVENT = {"type": "claim.submitted", "tenantId": "acme", "payload": {"claimId": "C-1"}}


async def _error(response: aiohttp.ClientResponse, status: int) -> dict[str, str]:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"error", "message"}
    assert body["message"]
    return dict(body)


def _forged(
    claims: dict[str, object], *, key: str = "wrong-key", alg: str = "HS256"
) -> str:
    return jwt.encode(claims, key, algorithm=alg)


def _claims(**extra: object) -> dict[str, object]:
    base: dict[str, object] = {
        "sub": "u",
        "tenant_id": "acme",
        "scopes": ["claims.read"],
        "exp": int(time.time()) + 600,
    }
    base.update(extra)
    return base


def _unsigned(claims: dict[str, object]) -> str:
    return jwt.encode(claims, None, algorithm="none")


BAD_STREAM_TOKENS = {
    "missing": None,
    "garbage": "not-a-jwt",
    "wrong-key": _forged(_claims()),
    "alg-none": _unsigned(_claims()),
    "expired": _forged(_claims(exp=int(time.time()) - 10), key=SECRET),
    "no-exp": jwt.encode({"sub": "u", "tenant_id": "acme"}, SECRET, algorithm="HS256"),
    "bad-tenant-slug": _forged(_claims(tenant_id="ACME!"), key=SECRET),
}


@pytest.mark.parametrize("bearer", BAD_STREAM_TOKENS.values(), ids=BAD_STREAM_TOKENS)
async def test_stream_refuses_bad_tokens_with_401(
    session: aiohttp.ClientSession, bearer: str | None
) -> None:
    """A missing, forged, unsigned, expired or malformed token gets 401 and JSON."""
    async with running_replicas() as [replica]:
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        async with session.get(
            url(replica, "/v1/realtime/stream"), headers=headers
        ) as response:
            await _error(response, 401)


async def test_stream_without_tenant_claim_is_403(
    session: aiohttp.ClientSession,
) -> None:
    """A valid token without tenant_id cannot open a stream."""
    async with (
        running_replicas() as [replica],
        session.get(
            url(replica, "/v1/realtime/stream"),
            headers={"Authorization": f"Bearer {token(tenant=None)}"},
        ) as response,
    ):
        body = await _error(response, 403)
        assert body["error"] == "tenant_required"


async def test_stream_headers_and_ready_frame(session: aiohttp.ClientSession) -> None:
    """The stream answers with the SSE headers, then retry and a ready event."""
    async with running_replicas() as [replica]:
        async with open_stream(session, replica, token()) as stream:
            headers = stream.response.headers
            assert headers["Content-Type"] == "text/event-stream"
            assert headers["Cache-Control"] == "no-cache"
            assert headers["X-Accel-Buffering"] == "no"
            ready = stream.events[0]
            assert ready.type == "ready"
            assert stream.parser.retry_ms == 3000
            import json

            assert json.loads(ready.data) == {
                "subscriberId": json.loads(ready.data)["subscriberId"],
                "replicaId": "r1",
                "tenantId": "acme",
            }


async def test_stream_accepts_access_token_query(
    session: aiohttp.ClientSession,
) -> None:
    """A browser's EventSource passes the token as access_token in the query."""
    async with running_replicas() as [replica]:
        async with open_stream(session, replica, token(), via_query=True) as stream:
            await publish(session, replica, EVENT)
            await stream.wait_for_events(2)
            assert stream.events[1].type == "claim.submitted"


async def test_heartbeat_pings_idle_streams(session: aiohttp.ClientSession) -> None:
    """An idle stream gets a ': ping' comment each heartbeat interval."""
    from .support import hub_settings

    async with running_replicas(settings=hub_settings(heartbeat_s=0.05)) as [replica]:
        async with open_stream(session, replica, token()) as stream:
            await wait_until(
                lambda: stream.parser.comments.count(" ping") >= 2,
                what="two heartbeats",
            )


async def test_garbage_last_event_id_still_streams(
    session: aiohttp.ClientSession,
) -> None:
    """An unusable Last-Event-ID is ignored; the stream opens and delivers."""
    async with (
        running_replicas() as [replica],
        open_stream(
            session, replica, token(), headers={"Last-Event-ID": "x" * 5000}
        ) as stream,
    ):
        await publish(session, replica, EVENT)
        await stream.wait_for_events(2)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"tenantId": "acme", "payload": {}}, "type", id="no-type"),
        pytest.param(
            {"type": "claim.submitted", "payload": {}}, "tenantId", id="no-tenant"
        ),
        pytest.param(
            {"type": "claim.submitted", "tenantId": "acme"}, "payload", id="no-payload"
        ),
        pytest.param({**EVENT, "payload": [1]}, "payload", id="payload-not-object"),
        pytest.param({**EVENT, "type": "Claim Submitted"}, "type", id="bad-type"),
        pytest.param({**EVENT, "type": "claim"}, "type", id="type-without-dot"),
        pytest.param({**EVENT, "tenantId": "Acme"}, "tenantId", id="bad-slug"),
        pytest.param({**EVENT, "tenantId": 7}, "tenantId", id="tenant-not-string"),
        pytest.param({**EVENT, "id": "a\nb"}, "id", id="id-with-newline"),
        pytest.param({**EVENT, "occurredAt": "yesterday"}, "occurredAt", id="bad-time"),
        pytest.param({**EVENT, "severity": "loud"}, "severity", id="bad-severity"),
        pytest.param(
            {**EVENT, "batch": {"tradingPartnerId": "p", "isa13": "12"}},
            "batch.isa13",
            id="short-isa13",
        ),
        pytest.param({**EVENT, "extra": 1}, "extra", id="unknown-field"),
    ],
)
async def test_ingest_refuses_bad_envelopes_naming_the_field(
    session: aiohttp.ClientSession, body: object, field: str
) -> None:
    """A bad envelope gets 400 with a message naming the field."""
    async with (
        running_replicas() as [replica],
        session.post(
            url(replica, "/v1/realtime/events"),
            json=body,
            headers={"Authorization": f"Bearer {PUBLISHER}"},
        ) as response,
    ):
        error = await _error(response, 400)
        assert f"'{field}'" in error["message"]


async def test_ingest_refuses_whole_array_naming_the_member(
    session: aiohttp.ClientSession,
) -> None:
    """One bad member refuses the whole request, and nothing is published."""
    async with running_replicas() as [replica]:
        async with open_stream(session, replica, token()) as stream:
            body = [EVENT, EVENT, {**EVENT, "tenantId": "BAD"}]
            async with session.post(
                url(replica, "/v1/realtime/events"),
                json=body,
                headers={"Authorization": f"Bearer {PUBLISHER}"},
            ) as response:
                error = await _error(response, 400)
                assert "member 2" in error["message"]
            await publish(session, replica, {**EVENT, "id": "marker"})
            await stream.wait_for_events(2)
            assert [e.last_event_id for e in stream.events[1:]] == ["marker"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(b"\xff\xfe{", "UTF-8", id="not-utf8"),
        pytest.param(b"{not json", "not JSON", id="not-json"),
        pytest.param(b"[]", "1 to 1000", id="empty-array"),
        pytest.param(b"42", "object", id="scalar"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, "nested", id="deep-nesting"),
        pytest.param(b"[" + b"9" * 5000 + b"]", "too long", id="huge-integer"),
    ],
)
async def test_ingest_refuses_malformed_bodies(
    session: aiohttp.ClientSession, raw: bytes, expected: str
) -> None:
    """Non-UTF-8, non-JSON and wrongly shaped bodies get 400 saying why."""
    async with (
        running_replicas() as [replica],
        session.post(
            url(replica, "/v1/realtime/events"),
            data=raw,
            headers={
                "Authorization": f"Bearer {PUBLISHER}",
                "Content-Type": "application/json",
            },
        ) as response,
    ):
        error = await _error(response, 400)
        assert expected in error["message"]


async def test_ingest_refuses_more_than_1000_members(
    session: aiohttp.ClientSession,
) -> None:
    """An array of 1001 envelopes is refused whole."""
    async with (
        running_replicas() as [replica],
        session.post(
            url(replica, "/v1/realtime/events"),
            json=[EVENT] * 1001,
            headers={"Authorization": f"Bearer {PUBLISHER}"},
        ) as response,
    ):
        await _error(response, 400)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_ingest_refuses_bodies_over_one_mebibyte(
    session: aiohttp.ClientSession, chunked: bool
) -> None:
    """A body over 1 MiB gets 413 whether or not it declares its length."""
    big = (
        b'{"type":"claim.submitted","tenantId":"acme","payload":{"x":"'
        + (b"a" * (1024 * 1024))
        + b'"}}'
    )

    async def body_chunks():  # type: ignore[no-untyped-def]
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    async with (
        running_replicas() as [replica],
        session.post(
            url(replica, "/v1/realtime/events"),
            data=body_chunks() if chunked else big,
            headers={
                "Authorization": f"Bearer {PUBLISHER}",
                "Content-Type": "application/json",
            },
        ) as response,
    ):
        await _error(response, 413)


async def test_ingest_needs_publish_scope(session: aiohttp.ClientSession) -> None:
    """A valid token without realtime.publish gets 403; no token gets 401."""
    async with running_replicas() as [replica]:
        path = url(replica, "/v1/realtime/events")
        async with session.post(
            path, json=EVENT, headers={"Authorization": f"Bearer {token()}"}
        ) as response:
            await _error(response, 403)
        async with session.post(path, json=EVENT) as response:
            await _error(response, 401)


async def test_ingest_refuses_cross_tenant_publishing(
    session: aiohttp.ClientSession,
) -> None:
    """A tenant's publisher token cannot publish for another tenant."""
    async with running_replicas() as [replica]:
        own = token(tenant="acme", scopes=["realtime.publish"])
        async with session.post(
            url(replica, "/v1/realtime/events"),
            json={**EVENT, "tenantId": "globex"},
            headers={"Authorization": f"Bearer {own}"},
        ) as response:
            body = await _error(response, 403)
            assert body["error"] == "cross_tenant"
        assert await publish(session, replica, EVENT, bearer=own)


async def test_ingest_fills_id_and_time_and_catalog_severity(
    session: aiohttp.ClientSession,
) -> None:
    """Absent id and occurredAt are filled in; severity is the catalog's."""
    import json

    async with running_replicas() as [replica]:
        async with open_stream(session, replica, token()) as stream:
            [event_id] = await publish(
                session,
                replica,
                {**EVENT, "type": "claim.rejected", "severity": "info"},
            )
            await stream.wait_for_events(2)
            envelope = json.loads(stream.events[1].data)
            assert envelope["id"] == event_id
            assert envelope["severity"] == "error"
            assert envelope["occurredAt"].endswith("Z")


async def test_metrics_needs_bearer_or_metrics_scope(
    session: aiohttp.ClientSession,
) -> None:
    """/metrics answers the static bearer or metrics.read, and 401 otherwise."""
    async with running_replicas() as [replica]:
        path = url(replica, "/metrics")
        for bearer, status in [
            (METRICS_BEARER, 200),
            (token(tenant=None, scopes=["metrics.read"]), 200),
            (token(), 401),
            ("nonsense", 401),
        ]:
            async with session.get(
                path, headers={"Authorization": f"Bearer {bearer}"}
            ) as response:
                assert response.status == status
                if status == 401:
                    await _error(response, 401)
        async with session.get(path) as response:
            await _error(response, 401)


async def test_metrics_expose_exactly_the_contract_names(
    session: aiohttp.ClientSession,
) -> None:
    """Every metric family of the contract is exposed, with its labels."""
    async with running_replicas() as [replica]:
        async with open_stream(session, replica, token()) as stream:
            await publish(session, replica, EVENT)
            await stream.wait_for_events(2)
            samples = await scrape(session, replica)
    names = {name for name, _ in samples}
    expected = {
        "rcm_realtime_subscribers",
        "rcm_realtime_events_dispatched_total",
        "rcm_realtime_fanout_total",
        "rcm_realtime_delivered_total",
        "rcm_realtime_dropped_total",
        "rcm_realtime_queued",
        "rcm_realtime_disconnects_total",
        "rcm_realtime_batches_open",
        "rcm_realtime_batches_completed_total",
        "rcm_realtime_bus_backlog",
        "rcm_realtime_delivery_latency_seconds_bucket",
        "rcm_realtime_delivery_latency_seconds_count",
        "rcm_realtime_delivery_latency_seconds_sum",
    }
    assert expected <= names
    assert names - expected <= set(), names - expected
    labels = {
        name: {key for key, _ in label_set}
        for name, label_set in samples
        if not name.startswith("rcm_realtime_delivery_latency")
    }
    assert labels["rcm_realtime_events_dispatched_total"] == {"tenant_id", "event_type"}
    assert labels["rcm_realtime_dropped_total"] == {"tenant_id", "reason"}
    assert labels["rcm_realtime_bus_backlog"] == set()


async def test_admin_endpoints_need_platform_admin(
    session: aiohttp.ClientSession,
) -> None:
    """Admin listing and disconnect answer 403 without the role, 401 without a token."""
    async with running_replicas() as [replica]:
        listing = url(replica, "/v1/realtime/admin/subscribers")
        eject = url(replica, "/v1/realtime/admin/tenants/acme/disconnect")
        for method, path in [("GET", listing), ("POST", eject)]:
            async with session.request(
                method, path, headers={"Authorization": f"Bearer {token()}"}
            ) as response:
                await _error(response, 403)
            async with session.request(method, path) as response:
                await _error(response, 401)


async def test_admin_lists_subscribers_of_a_tenant(
    session: aiohttp.ClientSession,
) -> None:
    """The listing shows each stream's state, filtered by tenant_id."""
    async with (
        running_replicas() as [replica],
        open_stream(session, replica, token("acme")),
        open_stream(session, replica, token("globex")),
    ):
        async with session.get(
            url(replica, "/v1/realtime/admin/subscribers?tenant_id=acme"),
            headers={"Authorization": f"Bearer {ADMIN}"},
        ) as response:
            assert response.status == 200
            listing = await response.json()
        assert [row["tenantId"] for row in listing] == ["acme"]
        assert listing[0]["state"] == "open"
        async with session.get(
            url(replica, "/v1/realtime/admin/subscribers?tenant_id=NOT A SLUG"),
            headers={"Authorization": f"Bearer {ADMIN}"},
        ) as response:
            await _error(response, 400)


async def test_admin_disconnect_ejects_one_tenant(
    session: aiohttp.ClientSession,
) -> None:
    """Ejected streams get server_shutdown(admin_disconnect) and end; others stay."""
    import json

    async with running_replicas() as [replica]:
        async with (
            open_stream(session, replica, token("acme")) as acme,
            open_stream(session, replica, token("acme")) as acme2,
            open_stream(session, replica, token("globex")) as globex,
        ):
            async with session.post(
                url(replica, "/v1/realtime/admin/tenants/acme/disconnect"),
                headers={"Authorization": f"Bearer {ADMIN}"},
            ) as response:
                assert response.status == 200
                assert await response.json() == {"disconnected": 2}
            for stream in (acme, acme2):
                await wait_until(lambda s=stream: s.ended, what="ejected stream to end")
                farewell = stream.events[-1]
                assert farewell.type == "server_shutdown"
                assert json.loads(farewell.data) == {"reason": "admin_disconnect"}
            assert not globex.ended
            samples = await scrape(session, replica)
            from .support import sample

            assert (
                sample(
                    samples,
                    "rcm_realtime_disconnects_total",
                    tenant_id="acme",
                    reason="admin",
                )
                == 2
            )
            assert sample(samples, "rcm_realtime_subscribers", tenant_id="acme") == 0
            assert sample(samples, "rcm_realtime_subscribers", tenant_id="globex") == 1
            assert_ledger(samples)


async def test_health_and_readiness(session: aiohttp.ClientSession) -> None:
    """/healthz is 200 while running; /readyz is 200 when ready, 503 when closing."""
    async with running_replicas() as [replica]:
        async with session.get(url(replica, "/healthz")) as response:
            assert response.status == 200
        async with session.get(url(replica, "/readyz")) as response:
            assert response.status == 200


async def test_unknown_paths_and_methods_answer_json(
    session: aiohttp.ClientSession,
) -> None:
    """404 and 405 carry JSON bodies too."""
    async with running_replicas() as [replica]:
        async with session.get(url(replica, "/nope")) as response:
            await _error(response, 404)
        async with session.delete(url(replica, "/v1/realtime/events")) as response:
            await _error(response, 405)
