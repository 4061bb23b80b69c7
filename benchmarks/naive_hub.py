"""The baseline: an SSE hub as a team writes its first one.

aiohttp, an ``asyncio.Queue`` per subscriber, and each frame formatted (the envelope
serialised again) for every subscriber it goes to. It checks the same tokens and
scopes as the reference hub and speaks the same two endpoints, so the benchmark
drives both the same way; it keeps no ledger, no bound on its queues and no
metrics. Run: ``python -m benchmarks.naive_hub --port 22100`` with
``RCM_REALTIME_JWT_SECRET`` set.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import jwt
from aiohttp import web

PERMISSIONS = {
    "claim.submitted": "claims.read",
    "claim.accepted": "claims.read",
    "claim.rejected": "claims.read",
    "denial.created": "denials.read",
    "remittance.batch.received": "remittance.read",
    "remittance.payment.posted": "remittance.read",
    "authorization.approved": "authorizations.read",
    "authorization.denied": "authorizations.read",
    "batch.completed": "batches.read",
    "batch.failed": "batches.read",
}

Subscription = tuple[asyncio.Queue[dict[str, Any]], frozenset[str]]


class NaiveHub:
    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.subscribers: dict[str, set[Subscription]] = defaultdict(set)

    def claims(self, request: web.Request) -> dict[str, Any]:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ").strip() or request.query.get(
            "access_token", ""
        )
        try:
            claims: dict[str, Any] = jwt.decode(
                token, self.secret, algorithms=["HS256"]
            )
        except jwt.PyJWTError as error:
            raise web.HTTPUnauthorized(text=str(error)) from error
        return claims

    async def stream(self, request: web.Request) -> web.StreamResponse:
        claims = self.claims(request)
        tenant = claims.get("tenant_id")
        if not tenant:
            raise web.HTTPForbidden(text="no tenant_id")
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        subscription = (queue, frozenset(claims.get("scopes", [])))
        self.subscribers[tenant].add(subscription)
        try:
            await response.write(b"event: ready\ndata: {}\n\n")
            while True:
                event = await queue.get()
                frame = (
                    f"id: {event['id']}\n"
                    f"event: {event['type']}\n"
                    f"data: {json.dumps(event)}\n\n"
                )
                await response.write(frame.encode("utf-8"))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.subscribers[tenant].discard(subscription)
        return response

    async def publish(self, request: web.Request) -> web.Response:
        claims = self.claims(request)
        if "realtime.publish" not in claims.get("scopes", []):
            raise web.HTTPForbidden(text="needs realtime.publish")
        body = await request.json()
        events = body if isinstance(body, list) else [body]
        ids = []
        for event in events:
            event.setdefault("id", str(uuid.uuid4()))
            event.setdefault("occurredAt", datetime.now(UTC).isoformat())
            event.setdefault("severity", "info")
            permission = PERMISSIONS.get(event["type"])
            for queue, scopes in list(self.subscribers[event["tenantId"]]):
                if permission in scopes:
                    queue.put_nowait(event)
            ids.append(event["id"])
        return web.json_response({"ids": ids}, status=202)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_get("/v1/realtime/stream", self.stream)
        app.router.add_post("/v1/realtime/events", self.publish)
        app.router.add_get("/healthz", self.healthz)
        return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the naive baseline hub")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args(argv)
    secret = os.environ.get("RCM_REALTIME_JWT_SECRET")
    if not secret:
        print("naive_hub: set RCM_REALTIME_JWT_SECRET", file=sys.stderr)
        return 2
    web.run_app(
        NaiveHub(secret).app(),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        shutdown_timeout=1.0,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
