"""One hub replica: the aiohttp edge around a ``HubCore``.

The replica reads its own bus subscription, hands each event to the core, and runs
one writer per stream that drains the subscriber's queue onto its connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hmac
import json
import logging
import socket
import time
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ._bus import Bus, QueuedSubscription, Subscription
from ._config import Settings
from ._dashboard import add_dashboard
from ._logging import log_event
from ._metrics import replica_registry
from ._publisher import EventPublisher, new_event_id, now_iso
from ._tokens import Claims, TokenVerifier
from .core import (
    PING_FRAME,
    TENANT_PATTERN,
    BusUnavailable,
    Catalog,
    ConfigError,
    DisconnectReason,
    EnvelopeError,
    Faults,
    HubCore,
    LatencyHistogram,
    StreamLimitError,
    Subscriber,
    SubscriberState,
    TokenError,
    batch_failure_from_json,
    control_frame,
    envelopes_from_body,
    format_timestamp,
    ready_frame,
)

MAX_BODY_BYTES = 1024 * 1024
LISTEN_BACKLOG = 2048
OPENAPI_DOCUMENT = (Path(__file__).parent / "openapi.json").read_bytes()
MAX_FRAMES_PER_WRITE = 512
MAX_LAST_EVENT_ID = 256
SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()


class ReplicaState(enum.Enum):
    STARTING = "starting"  # not yet subscribed to the bus
    READY = "ready"  # subscription live, streams accepted
    CLOSING = "closing"  # farewells sent, draining streams
    CLOSED = "closed"  # every stream ended, subscription closed


def json_error(status: int, message: str, code: str | None = None) -> web.Response:
    return web.json_response(
        {"error": code or ERROR_CODES.get(status, "error"), "message": message},
        status=status,
    )


@web.middleware
async def json_errors(
    request: web.Request,
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    """Every error body is JSON, whatever raised it."""
    try:
        return await handler(request)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        response = json_error(error.status, error.reason)
        # Keep what the error says about the resource (Allow on 405, for one).
        for name, value in error.headers.items():
            if name.lower() not in ("content-type", "content-length"):
                response.headers[name] = value
        if error.status == 408:
            # The rest of the body may still arrive; the connection cannot be reused.
            response.force_close()
        return response
    except TokenError as error:
        return json_error(error.status, str(error), error.code)
    except BusUnavailable as error:
        # The bus logs the outage and its cause once; this is one refused request.
        log_event(
            logging.INFO,
            "request_refused",
            method=request.method,
            path=request.path,
            status=503,
            code="bus_unavailable",
        )
        return json_error(503, str(error), "bus_unavailable")
    except asyncio.CancelledError:
        raise
    except Exception:
        logging.getLogger("hub").exception("event=request_failed path=%s", request.path)
        return json_error(500, "the hub failed on this request; see its log")


class Replica:
    def __init__(
        self,
        *,
        replica_id: str,
        settings: Settings,
        catalog: Catalog,
        bus: Bus,
        verifier: TokenVerifier,
    ) -> None:
        self.replica_id = replica_id
        self.settings = settings
        self.bus = bus
        self.verifier = verifier
        self.publisher = EventPublisher(bus)
        self.core = HubCore(
            catalog=catalog,
            clock=MonotonicClock(),
            replica_id=replica_id,
            settings=settings.core_settings(),
        )
        self.latency = LatencyHistogram()
        self.state = ReplicaState.STARTING
        self.subscription: Subscription | None = None
        self.registry = replica_registry(self.core, self.latency, self._backlog)
        self.app = self._build_app()
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._writers: dict[str, asyncio.Transport | None] = {}
        self._all_gone = asyncio.Event()
        self._all_gone.set()
        self._tick_now = asyncio.Event()
        # Streams whose queue turned non-empty while their writer was idle: written
        # together by one callback after the dispatch that filled them.
        self._ready: list[Callable[[], None]] = []
        self._flush_scheduled = False
        # Connections that completed a request's headers, and when each other one
        # was first seen: the header deadline applies only to the latter.
        self._answered: weakref.WeakSet[asyncio.BaseTransport] = weakref.WeakSet()
        self._first_seen: weakref.WeakKeyDictionary[asyncio.BaseTransport, float] = (
            weakref.WeakKeyDictionary()
        )
        self.port: int | None = None

    # -- lifecycle -----------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.subscription = await self.bus.subscribe(self.replica_id)
        self._tasks = [
            asyncio.create_task(self._consume(self.subscription), name="consume"),
            asyncio.create_task(self._keep_time(), name="keep-time"),
            asyncio.create_task(self._enforce_header_deadline(), name="headers"),
        ]
        self._runner = web.AppRunner(
            self.app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=self.settings.shutdown_grace_s + 1,
            # A stream's handler waits on its queue, not on the socket: cancelling
            # it when the client goes away is how the hub learns of the disconnect
            # before the next heartbeat.
            handler_cancellation=True,
        )
        await self._runner.setup()
        # A deep accept queue: a reconnect storm arrives faster than accept() runs.
        site = web.TCPSite(
            self._runner, host, port, reuse_address=True, backlog=LISTEN_BACKLOG
        )
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port
        self.state = ReplicaState.READY
        log_event(
            logging.INFO,
            "replica_started",
            replica=self.replica_id,
            host=host,
            port=self.port,
        )

    async def close(self) -> None:
        """Graceful close: not ready, farewell to every stream, drain, stop."""
        if self.state in (ReplicaState.CLOSING, ReplicaState.CLOSED):
            return
        self.state = ReplicaState.CLOSING
        open_streams = len(self._writers)
        self.core.close()
        try:
            await asyncio.wait_for(
                self._all_gone.wait(), timeout=self.settings.shutdown_grace_s
            )
        except TimeoutError:
            # Streams whose clients stopped reading cannot take their farewell.
            for transport in list(self._writers.values()):
                if transport is not None:
                    transport.abort()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.subscription is not None:
            await self.subscription.close()
        if self._runner is not None:
            await self._runner.cleanup()
        self.state = ReplicaState.CLOSED
        log_event(
            logging.INFO,
            "replica_closed",
            replica=self.replica_id,
            streams_closed=open_streams,
        )

    async def _consume(self, subscription: Subscription) -> None:
        dispatch = self.core.dispatch
        async for batch in subscription.batches():
            for envelope in batch:
                dispatch(envelope)
            if any(envelope.batch is not None for envelope in batch):
                self._tick_now.set()

    async def _keep_time(self) -> None:
        settings = self.core.settings
        idle_s = min(0.5, settings.quiet_window_s / 10, settings.evict_after_s / 10)
        while True:
            deadline = self.core.tick()
            delay = idle_s if deadline is None else deadline - time.monotonic()
            self._tick_now.clear()
            # Never less than one turn of the loop: a deadline already past must
            # not starve the streams this task shares the loop with.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._tick_now.wait(), max(0.001, min(delay, idle_s))
                )

    async def _enforce_header_deadline(self) -> None:
        """Close connections that have not finished a request's headers in time
        (slow senders holding sockets open)."""
        limit = self.settings.header_timeout_s
        while True:
            await asyncio.sleep(min(1.0, limit / 2))
            server = self._runner.server if self._runner is not None else None
            if server is None:
                continue
            now = time.monotonic()
            for handler in server.connections:
                transport = handler.transport
                if transport is None or transport in self._answered:
                    continue
                first_seen = self._first_seen.setdefault(transport, now)
                if now - first_seen >= limit:
                    peer = transport.get_extra_info("peername")
                    log_event(
                        logging.INFO,
                        "request_refused",
                        replica=self.replica_id,
                        code="header_timeout",
                        peer=peer[0] if peer else "",
                    )
                    transport.close()

    @web.middleware
    async def _note_request(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        if request.transport is not None:
            self._answered.add(request.transport)
        return await handler(request)

    def _write_soon(self, write: Callable[[], None]) -> None:
        self._ready.append(write)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Write every stream that became ready, in one pass after the dispatch:
        no task switch per stream, and the frames of one bus batch in one write."""
        self._flush_scheduled = False
        ready, self._ready = self._ready, []
        for write in ready:
            write()

    def _backlog(self) -> int:
        return self.subscription.backlog() if self.subscription is not None else 0

    # -- application ---------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(
            middlewares=[self._note_request, json_errors],
            client_max_size=MAX_BODY_BYTES,
        )
        app.router.add_get("/v1/realtime/stream", self.stream)
        app.router.add_post("/v1/realtime/events", self.publish_events)
        app.router.add_post("/v1/realtime/batches/failures", self.record_failure)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/v1/realtime/admin/subscribers", self.admin_subscribers)
        app.router.add_post(
            "/v1/realtime/admin/tenants/{tenant_id}/disconnect", self.admin_disconnect
        )
        app.router.add_get("/openapi.json", self.openapi)
        app.router.add_get("/v1/realtime/admin/bus", self.admin_bus)
        app.router.add_put("/v1/realtime/admin/bus/faults", self.admin_bus_faults)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        add_dashboard(app, lambda: self.core.catalog)
        return app

    def _claims(self, request: web.Request, *, allow_query: bool = False) -> Claims:
        token = _bearer(request)
        if token is None and allow_query:
            token = request.query.get("access_token") or None
        if token is None:
            raise TokenError(
                "send a bearer token in the Authorization header",
                code="missing_token",
            )
        try:
            return self.verifier.verify(token)
        except TokenError as error:
            self._refused(request, error.status, error.code)
            raise

    def _refused(
        self, request: web.Request, status: int, code: str, **fields: Any
    ) -> None:
        log_event(
            logging.INFO,
            "request_refused",
            replica=self.replica_id,
            method=request.method,
            path=request.path,
            status=status,
            code=code,
            **fields,
        )

    # -- streams -------------------------------------------------------------------

    async def stream(self, request: web.Request) -> web.StreamResponse:
        claims = self._claims(request, allow_query=True)
        principal = claims.principal()
        if self.state is not ReplicaState.READY or self.core.closed:
            return json_error(503, "this replica is shutting down; connect to another")
        last_event_id = request.headers.get("Last-Event-ID")
        if last_event_id is not None and (
            len(last_event_id) > MAX_LAST_EVENT_ID or not last_event_id.isprintable()
        ):
            # A browser resends whatever id it last saw; a garbled one must not cost
            # the user the stream: it matches nothing, so the client is told to
            # reload instead of being refused.
            last_event_id = (
                last_event_id[:MAX_LAST_EVENT_ID]
                .encode("ascii", "backslashreplace")
                .decode("ascii")
            )

        try:
            subscriber = self.core.subscribe(principal, last_event_id=last_event_id)
        except StreamLimitError as error:
            self._refused(request, 429, "too_many_streams", tenant=principal.tenant_id)
            return json_error(429, str(error), "too_many_streams")
        response = web.StreamResponse(status=200, headers=SSE_HEADERS)
        try:
            await response.prepare(request)
        except (ConnectionError, asyncio.CancelledError):
            self.core.disconnect(subscriber)
            raise
        transport = request.transport
        send_buffer = self.settings.stream_send_buffer_bytes
        if send_buffer is not None and transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
            transport.set_write_buffer_limits(high=send_buffer)
        self._writers[subscriber.id] = transport
        self._all_gone.clear()
        log_event(
            logging.INFO,
            "subscriber_connected",
            tenant=principal.tenant_id,
            subscriber=subscriber.id,
            replica=self.replica_id,
            user=principal.subject,
        )
        try:
            await self._write_stream(response, subscriber, transport, claims)
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            pass
        finally:
            self.core.disconnect(subscriber)
            self._writers.pop(subscriber.id, None)
            if not self._writers:
                self._all_gone.set()
            log_event(
                logging.INFO,
                "subscriber_disconnected",
                tenant=principal.tenant_id,
                subscriber=subscriber.id,
                replica=self.replica_id,
                reason=subscriber.disconnect_reason,
                delivered=subscriber.delivered,
            )
        return response

    async def _write_stream(
        self,
        response: web.StreamResponse,
        subscriber: Subscriber,
        transport: asyncio.Transport | None,
        claims: Claims,
    ) -> None:
        woken = asyncio.Event()
        loop = asyncio.get_running_loop()
        heartbeat_s = self.settings.heartbeat_s
        # A timer per stream, not a timeout per wait: waits happen once per event,
        # heartbeats once per interval.
        writes_seen = -1
        writes = 0
        ping_due = False
        heartbeat: asyncio.TimerHandle | None = None

        def beat() -> None:
            nonlocal writes_seen, ping_due, heartbeat
            if writes == writes_seen:
                ping_due = True
                woken.set()
            writes_seen = writes
            heartbeat = loop.call_later(heartbeat_s, beat)

        # True while the writer task waits for work: only then may frames be written
        # from outside it without reordering them around its own writes.
        idle = False
        chunked = response.headers.get("Transfer-Encoding", "").lower() == "chunked"

        def write_now() -> None:
            """The fast path: hand the pending frames straight to the transport;
            anything unusual is left to the writer task."""
            nonlocal writes
            if (
                not idle
                or subscriber.state is not SubscriberState.OPEN
                or transport is None
                or transport.is_closing()
                or transport.get_write_buffer_size()
            ):
                woken.set()
                return
            frames = subscriber.pending(MAX_FRAMES_PER_WRITE)
            if not frames:
                return
            data = (
                frames[0].frame
                if len(frames) == 1
                else b"".join(f.frame for f in frames)
            )
            # The response's own chunked framing, as aiohttp would write it.
            transport.write(b"%x\r\n%b\r\n" % (len(data), data) if chunked else data)
            if transport.is_closing():
                # The send failed: the frames were not delivered, the task settles.
                woken.set()
                return
            core.mark_written(subscriber, len(frames))
            writes += 1
            written_at = time.time()
            for frame in frames:
                latency.observe(written_at - frame.occurred_at_s)
            if subscriber.queue:
                woken.set()

        def wake() -> None:
            if idle and subscriber.state is SubscriberState.OPEN:
                self._write_soon(write_now)
                return
            woken.set()
            # An evicted stream is usually stuck in a write to a client that stopped
            # reading; only aborting the socket releases it. A stream that ended
            # any other way is closed after its last bytes: aborting it would throw
            # away frames counted delivered, and its farewell, still buffered for
            # a client that is behind on reading.
            if (
                subscriber.state is SubscriberState.CLOSED
                and subscriber.disconnect_reason is DisconnectReason.EVICTED
                and transport is not None
            ):
                log_event(
                    logging.INFO,
                    "subscriber_evicted",
                    tenant=subscriber.tenant_id,
                    subscriber=subscriber.id,
                    replica=self.replica_id,
                )
                transport.abort()

        subscriber.wake = wake
        core = self.core
        latency = self.latency
        await response.write(
            ready_frame(
                subscriber_id=subscriber.id,
                replica_id=self.replica_id,
                tenant_id=subscriber.tenant_id,
                retry_ms=core.settings.retry_ms,
            )
        )
        if subscriber.notice is not None:
            await response.write(subscriber.notice)
        heartbeat = loop.call_later(heartbeat_s, beat)

        def expire() -> None:
            core.say_farewell(
                subscriber,
                DisconnectReason.CLIENT,
                control_frame(
                    "token_expired",
                    {"reason": "token_expired", "message": "fetch a new token"},
                ),
            )

        expiry = loop.call_later(max(0.0, claims.expires_at - time.time()), expire)
        try:
            while subscriber.state is not SubscriberState.CLOSED:
                woken.clear()
                frames = subscriber.pending(MAX_FRAMES_PER_WRITE)
                if frames:
                    if len(frames) == 1:
                        await response.write(frames[0].frame)
                    else:
                        await response.write(b"".join(f.frame for f in frames))
                    # A write to an aborted transport can return quietly; frames it
                    # took were not written, so they must not count as delivered.
                    if transport is None or transport.is_closing():
                        raise ConnectionResetError("the stream's connection closed")
                    core.mark_written(subscriber, len(frames))
                    writes += 1
                    written_at = time.time()
                    for frame in frames:
                        latency.observe(written_at - frame.occurred_at_s)
                    continue
                if subscriber.state is SubscriberState.CLOSING:
                    assert subscriber.farewell is not None
                    # The connection closes once the farewell is out, so the
                    # client's reconnect opens a new one (which a load balancer
                    # may send elsewhere).
                    response.force_close()
                    await response.write(subscriber.farewell)
                    await response.write_eof()
                    return
                if ping_due:
                    ping_due = False
                    await response.write(PING_FRAME)
                    continue
                idle = True
                try:
                    await woken.wait()
                finally:
                    idle = False
        finally:
            expiry.cancel()
            if heartbeat is not None:
                heartbeat.cancel()

    # -- ingest --------------------------------------------------------------------

    def _publisher_claims(self, request: web.Request) -> Claims:
        claims = self._claims(request)
        if "realtime.publish" not in claims.scopes:
            self._refused(request, 403, "missing_scope")
            raise TokenError(
                "publishing needs the realtime.publish scope",
                code="missing_scope",
                status=403,
            )
        return claims

    async def _json_body(self, request: web.Request) -> Any:
        if (
            request.content_length is not None
            and request.content_length > MAX_BODY_BYTES
        ):
            return _TooLarge
        body = bytearray()
        try:
            async with asyncio.timeout(self.settings.body_timeout_s):
                async for chunk in request.content.iter_chunked(64 * 1024):
                    body += chunk
                    if len(body) > MAX_BODY_BYTES:
                        return _TooLarge
        except TimeoutError:
            raise web.HTTPRequestTimeout(
                reason=f"the body did not arrive within "
                f"{self.settings.body_timeout_s:g} s"
            ) from None
        try:
            text = bytes(body).decode("utf-8")
        except UnicodeDecodeError as error:
            raise EnvelopeError(
                f"the body is not UTF-8 (bad byte at offset {error.start})",
                member=None,
                field=None,
            ) from error
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise EnvelopeError(
                f"the body is not JSON ({error.msg} at line {error.lineno} "
                f"column {error.colno})",
                member=None,
                field=None,
            ) from error
        except (ValueError, RecursionError) as error:
            # Nesting deeper than the parser's stack, or an integer too long to
            # convert: still the sender's fault, never a 500.
            raise EnvelopeError(
                "the body is JSON this hub cannot read (nested too deeply or a "
                "number too long)",
                member=None,
                field=None,
            ) from error

    async def publish_events(self, request: web.Request) -> web.Response:
        claims = self._publisher_claims(request)
        try:
            body = await self._json_body(request)
            if body is _TooLarge:
                return self._too_large(request)
            envelopes = envelopes_from_body(
                body, catalog=self.core.catalog, new_id=new_event_id, now_iso=now_iso
            )
        except EnvelopeError as error:
            self._refused(request, 400, "invalid_envelope")
            return json_error(400, str(error), "invalid_envelope")
        if claims.tenant_id is not None:
            for index, envelope in enumerate(envelopes):
                if envelope.tenant_id != claims.tenant_id:
                    self._refused(request, 403, "cross_tenant", tenant=claims.tenant_id)
                    return json_error(
                        403,
                        f"member {index}: the token belongs to tenant "
                        f"'{claims.tenant_id}' and cannot publish for "
                        f"'{envelope.tenant_id}'",
                        "cross_tenant",
                    )
        # Shielded: a client that hangs up mid-request must not leave part of the
        # request published and part not.
        ids = await asyncio.shield(self.publisher.publish(envelopes))
        return web.json_response({"ids": ids}, status=202)

    async def record_failure(self, request: web.Request) -> web.Response:
        claims = self._publisher_claims(request)
        try:
            body = await self._json_body(request)
            if body is _TooLarge:
                return self._too_large(request)
            envelope = batch_failure_from_json(
                body, new_id=new_event_id, now_iso=now_iso
            )
        except EnvelopeError as error:
            self._refused(request, 400, "invalid_batch_failure")
            return json_error(400, str(error), "invalid_batch_failure")
        if claims.tenant_id is not None and claims.tenant_id != envelope.tenant_id:
            self._refused(request, 403, "cross_tenant", tenant=claims.tenant_id)
            return json_error(
                403,
                f"the token belongs to tenant '{claims.tenant_id}' and cannot record "
                f"a failure for '{envelope.tenant_id}'",
                "cross_tenant",
            )
        await asyncio.shield(self.publisher.publish([envelope]))
        log_event(
            logging.INFO,
            "batch_failure_recorded",
            tenant=envelope.tenant_id,
            replica=self.replica_id,
            event_id=envelope.id,
        )
        return web.json_response({"ids": [envelope.id]}, status=202)

    def _too_large(self, request: web.Request) -> web.Response:
        self._refused(request, 413, "payload_too_large")
        return json_error(
            413,
            f"the body is over {MAX_BODY_BYTES} bytes; send fewer envelopes a request",
            "payload_too_large",
        )

    # -- operations ----------------------------------------------------------------

    async def metrics(self, request: web.Request) -> web.Response:
        token = _bearer(request)
        bearer = self.settings.metrics_bearer
        allowed = False
        if token is not None:
            if bearer and hmac.compare_digest(token.encode(), bearer.encode()):
                allowed = True
            else:
                with contextlib.suppress(TokenError):
                    allowed = "metrics.read" in self.verifier.verify(token).scopes
        if not allowed:
            self._refused(request, 401, "metrics_unauthorized")
            return json_error(
                401,
                "metrics need the metrics bearer token or a token with metrics.read",
            )
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def _admin(self, request: web.Request) -> Claims:
        claims = self._claims(request)
        if "PLATFORM_ADMIN" not in claims.roles:
            self._refused(request, 403, "not_admin")
            raise TokenError(
                "admin endpoints need the PLATFORM_ADMIN role",
                code="forbidden",
                status=403,
            )
        return claims

    async def admin_subscribers(self, request: web.Request) -> web.Response:
        self._admin(request)
        tenant_id = request.query.get("tenant_id")
        if tenant_id is not None and not TENANT_PATTERN.match(tenant_id):
            return json_error(400, "tenant_id is not a tenant slug")
        now_monotonic = time.monotonic()
        now_wall = time.time()
        listing = []
        for subscriber in self.core.subscribers(tenant_id):
            stats = subscriber.statistics()
            listing.append(
                {
                    "subscriberId": stats.subscriber_id,
                    "tenantId": stats.tenant_id,
                    "replicaId": self.replica_id,
                    "user": stats.subject,
                    "scopes": list(stats.scopes),
                    "roles": list(stats.roles),
                    "state": stats.state,
                    "connectedSeconds": round(now_monotonic - stats.connected_at, 3),
                    "connectedAt": _iso(
                        now_wall - (now_monotonic - stats.connected_at)
                    ),
                    "queued": stats.queued,
                    "delivered": stats.delivered,
                    "droppedPermission": stats.dropped_permission,
                    "droppedBackpressure": stats.dropped_backpressure,
                    "backpressureSeconds": None
                    if stats.backpressure_since is None
                    else round(now_monotonic - stats.backpressure_since, 3),
                    "lastEventId": stats.last_event_id,
                }
            )
        return web.json_response(listing)

    async def admin_disconnect(self, request: web.Request) -> web.Response:
        claims = self._admin(request)
        tenant_id = request.match_info["tenant_id"]
        if not TENANT_PATTERN.match(tenant_id):
            return json_error(400, "the tenant id in the path is not a tenant slug")
        count = self.core.disconnect_tenant(tenant_id)
        log_event(
            logging.INFO,
            "admin_disconnect",
            tenant=tenant_id,
            replica=self.replica_id,
            admin=claims.subject,
            disconnected=count,
        )
        return web.json_response({"disconnected": count})

    def _bus_status(self) -> dict[str, Any]:
        subscription = self.subscription
        status: dict[str, Any] = {
            "replicaId": self.replica_id,
            "live": subscription is not None and subscription.live,
            "backlog": self._backlog(),
            "faultInjection": self.settings.fault_injection,
        }
        if isinstance(subscription, QueuedSubscription):
            stats = subscription.fault_statistics()
            status["faults"] = stats.faults.to_json()
            status["taken"] = {"drop": stats.dropped, "cut": stats.cut}
            status["duplicatesSkipped"] = subscription.duplicates
        return status

    async def admin_bus(self, request: web.Request) -> web.Response:
        """This replica's bus subscription: live, backlog, faults and what they took."""
        self._admin(request)
        return web.json_response(self._bus_status())

    async def admin_bus_faults(self, request: web.Request) -> web.Response:
        """Replace the faults of this replica's subscription (lab use; off unless
        fault injection is enabled)."""
        claims = self._admin(request)
        if not self.settings.fault_injection:
            self._refused(request, 403, "fault_injection_disabled")
            return json_error(
                403,
                "fault injection is off on this replica; start it with "
                "RCM_REALTIME_FAULT_INJECTION=1 to use this endpoint",
                "fault_injection_disabled",
            )
        subscription = self.subscription
        if not isinstance(subscription, QueuedSubscription):
            return json_error(503, "this replica has no bus subscription yet")
        try:
            body = await self._json_body(request)
            if body is _TooLarge:
                return self._too_large(request)
            faults = Faults.from_json(body)
        except (EnvelopeError, ConfigError) as error:
            self._refused(request, 400, "invalid_faults")
            return json_error(400, str(error), "invalid_faults")
        subscription.set_faults(faults)
        log_event(
            logging.INFO,
            "admin_bus_faults",
            replica=self.replica_id,
            admin=claims.subject,
            faults=",".join(sorted(faults.kinds())) or "none",
        )
        return web.json_response(self._bus_status())

    async def openapi(self, request: web.Request) -> web.Response:
        return web.Response(body=OPENAPI_DOCUMENT, content_type="application/json")

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "replicaId": self.replica_id})

    async def readyz(self, request: web.Request) -> web.Response:
        live = self.subscription is not None and self.subscription.live
        if self.state is ReplicaState.READY and live:
            return web.json_response({"status": "ready", "replicaId": self.replica_id})
        if self.state in (ReplicaState.CLOSING, ReplicaState.CLOSED):
            reason = "shutting down"
        else:
            reason = "the bus subscription is not live"
            detail = getattr(self.subscription, "down_reason", None)
            if detail:
                reason += f" ({detail})"
        return json_error(503, f"not ready: {reason}", "not_ready")


class _TooLargeMarker:
    pass


_TooLarge = _TooLargeMarker()


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def _iso(epoch_s: float) -> str:
    return format_timestamp(epoch_s)
