"""``rcm-realtime serve``: one or more replicas in this process, until a signal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._bus import Bus, MemoryBus
from ._config import Settings, check_replica_id, load_catalog
from ._logging import log_event
from ._server import Replica
from ._tokens import TokenVerifier, issue_token
from .core import Catalog, ConfigError

if TYPE_CHECKING:
    from ._rabbitmq import RabbitOptions

DEV_TENANT = "acme"


@dataclass(frozen=True, slots=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    replicas: int = 1
    dev: bool = False


def open_bus(
    url: str, *, settings: Settings | None = None, catalog: Catalog | None = None
) -> Bus:
    """The bus named by ``RCM_REALTIME_BUS`` or ``--bus``; RabbitMQ connects when
    its first replica subscribes."""
    settings = settings or Settings()
    if url == "memory":
        return MemoryBus(seed=settings.fault_seed)
    if url.startswith(("amqp://", "amqps://")):
        # Imported here so the in-process default never loads the AMQP client.
        from ._rabbitmq import RabbitBus

        return RabbitBus(
            url,
            catalog=catalog or load_catalog(settings.catalog_path),
            options=rabbit_options(settings),
            seed=settings.fault_seed,
        )
    raise ConfigError(
        f"bus {url!r} is neither 'memory' nor an amqp:// URL "
        "(like amqp://guest:guest@127.0.0.1:5672/)"
    )


def rabbit_options(settings: Settings) -> RabbitOptions:
    from ._rabbitmq import RabbitOptions

    return RabbitOptions(
        exchange=settings.bus_exchange,
        queue_prefix=settings.bus_queue_prefix,
        max_length=settings.bus_max_length,
        message_ttl_s=settings.bus_ttl_s,
        prefetch=settings.bus_prefetch,
        persistent=settings.bus_persistent,
        queue_expires_s=settings.bus_queue_expires_s,
        reconnect_max_s=settings.bus_reconnect_max_s,
    )


def replica_ids(settings: Settings, options: ServeOptions) -> list[str]:
    if options.replicas == 1:
        return [check_replica_id(settings.replica_name(options.host, options.port))]
    base = settings.replica_id or "replica"
    return [check_replica_id(f"{base}-{n}") for n in range(1, options.replicas + 1)]


async def start_replicas(
    settings: Settings, options: ServeOptions, bus: Bus, catalog: Catalog
) -> list[Replica]:
    verifier = TokenVerifier(
        secret=settings.jwt_secret, public_key_path=settings.jwt_public_key_path
    )
    replicas = [
        Replica(
            replica_id=replica_id,
            settings=settings,
            catalog=catalog,
            bus=bus,
            verifier=verifier,
        )
        for replica_id in replica_ids(settings, options)
    ]
    started: list[Replica] = []
    try:
        for offset, replica in enumerate(replicas):
            await replica.start(options.host, options.port + offset)
            started.append(replica)
    except OSError as error:
        for replica in started:
            await replica.close()
        raise ConfigError(
            f"cannot listen on {options.host}:{options.port + len(started)} "
            f"({error.strerror})"
        ) from error
    return replicas


def dev_banner(
    settings: Settings, options: ServeOptions, replicas: list[Replica]
) -> str:
    assert settings.jwt_secret is not None
    subscriber = issue_token(
        secret=settings.jwt_secret,
        tenant_id=DEV_TENANT,
        roles=["REVENUE_CYCLE_MANAGER"],
        scopes=[
            "claims.read",
            "denials.read",
            "remittance.read",
            "authorizations.read",
            "batches.read",
        ],
        subject="dev-operator",
        ttl_s=12 * 3600,
    )
    admin = issue_token(
        secret=settings.jwt_secret,
        tenant_id=None,
        roles=["PLATFORM_ADMIN"],
        scopes=["metrics.read", "realtime.publish"],
        subject="dev-admin",
        ttl_s=12 * 3600,
    )
    metrics = issue_token(
        secret=settings.jwt_secret,
        tenant_id=None,
        scopes=["metrics.read"],
        subject="dev-metrics",
        ttl_s=12 * 3600,
    )
    base = f"http://{options.host}:{replicas[0].port}"
    ports = ", ".join(str(r.port) for r in replicas)
    return f"""\
rcm-realtime hub (dev mode, in-process bus) on {options.host} port(s) {ports}

subscriber token (tenant {DEV_TENANT}, every read scope):
SUBSCRIBER_TOKEN={subscriber}

admin token (PLATFORM_ADMIN, realtime.publish, metrics.read):
ADMIN_TOKEN={admin}

metrics token (metrics.read):
METRICS_TOKEN={metrics}

Watch the stream:
  curl -N -H "Authorization: Bearer $SUBSCRIBER_TOKEN" {base}/v1/realtime/stream
Publish an event:
  curl -X POST -H "Authorization: Bearer $ADMIN_TOKEN" \\
       -H 'Content-Type: application/json' \\
       -d '{{"type":"claim.submitted","tenantId":"{DEV_TENANT}",'\\
'"payload":{{"claimId":"C-1"}}}}' \\
       {base}/v1/realtime/events
Metrics:
  curl -H "Authorization: Bearer $METRICS_TOKEN" {base}/metrics
Live dashboard (paste the subscriber token, or pass it in the address):
  {base}/dashboard?access_token=$SUBSCRIBER_TOKEN
Stop with Ctrl-C (streams get server_shutdown).
"""


async def serve(settings: Settings, options: ServeOptions) -> int:
    if options.dev and not settings.jwt_secret:
        settings = settings.with_overrides(jwt_secret=secrets.token_urlsafe(32))
    if options.dev:
        settings = settings.with_overrides(bus="memory")
    catalog = load_catalog(settings.catalog_path)
    bus = open_bus(settings.bus, settings=settings, catalog=catalog)
    try:
        replicas = await start_replicas(settings, options, bus, catalog)
    except BaseException:
        with contextlib.suppress(Exception):
            await bus.close()
        raise
    if options.dev:
        print(dev_banner(settings, options, replicas), flush=True)
    else:
        ports = ",".join(str(r.port) for r in replicas)
        where = getattr(bus, "where", settings.bus)
        print(
            f"rcm-realtime serving on {options.host} ports {ports} (bus: {where})",
            flush=True,
        )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log_event(logging.INFO, "shutdown_requested", replicas=len(replicas))
    await asyncio.gather(*(replica.close() for replica in replicas))
    with contextlib.suppress(Exception):
        await bus.close()
    print("rcm-realtime stopped", file=sys.stderr, flush=True)
    return 0
