"""Hub replicas as separate ``rcm-realtime serve`` processes, for deployment tests,
and per-run RabbitMQ names that tests clean up after themselves."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp

from .support import ADMIN, METRICS_BEARER, SECRET, url


@dataclass
class AmqpNames:
    """An exchange and queue prefix no other test run uses."""

    exchange: str
    queue_prefix: str
    replica_ids: set[str] = field(default_factory=set)

    @classmethod
    def unique(cls) -> AmqpNames:
        run = uuid.uuid4().hex[:12]
        return cls(exchange=f"rcm.test.{run}", queue_prefix=f"rcm.test.{run}.")

    def queue(self, replica_id: str) -> str:
        self.replica_ids.add(replica_id)
        return self.queue_prefix + replica_id

    def environment(self) -> dict[str, str]:
        return {
            "RCM_REALTIME_BUS_EXCHANGE": self.exchange,
            "RCM_REALTIME_BUS_QUEUE_PREFIX": self.queue_prefix,
            # A safety net should the cleanup below never run.
            "RCM_REALTIME_BUS_QUEUE_EXPIRES_S": "600",
        }


@asynccontextmanager
async def amqp_names(amqp_url: str) -> AsyncIterator[AmqpNames]:
    """Unique names; their queues and exchange are deleted afterwards."""
    names = AmqpNames.unique()
    try:
        yield names
    finally:
        connection = await aio_pika.connect(amqp_url, timeout=30)
        async with connection:
            channel = await connection.channel()
            for replica_id in sorted(names.replica_ids):
                await channel.queue_delete(names.queue_prefix + replica_id)
            await channel.exchange_delete(names.exchange)


async def broker_queue_depth(amqp_url: str, queue: str) -> int:
    """Ready messages in ``queue`` as the broker counts them."""
    connection = await aio_pika.connect(amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return declared.declaration_result.message_count or 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class HubProcess:
    replica_id: str
    port: int
    process: asyncio.subprocess.Process
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text("utf-8", errors="replace")

    def log_lines(self, event: str) -> list[str]:
        return [line for line in self.log().splitlines() if f"event={event} " in line]

    async def ready(self, session: aiohttp.ClientSession) -> int:
        """The status /readyz answers, or 0 when nothing answers."""
        try:
            async with session.get(url(self, "/readyz")) as response:
                return response.status
        except aiohttp.ClientError:
            return 0

    async def set_faults(
        self, session: aiohttp.ClientSession, faults: Mapping[str, Any]
    ) -> dict[str, Any]:
        async with session.put(
            url(self, "/v1/realtime/admin/bus/faults"),
            json=dict(faults),
            headers={"Authorization": f"Bearer {ADMIN}"},
        ) as response:
            assert response.status == 200, await response.text()
            status: dict[str, Any] = await response.json()
            return status


async def _start(
    replica_id: str,
    *,
    bus_url: str,
    log_dir: Path,
    environment: Mapping[str, str],
    timeout: float,
) -> HubProcess:
    port = free_port()
    log_path = log_dir / f"{replica_id}.log"
    env = {
        **os.environ,
        "RCM_REALTIME_JWT_SECRET": SECRET,
        "RCM_REALTIME_METRICS_BEARER": METRICS_BEARER,
        **environment,
    }
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "hub.cli",
            "serve",
            "--bus",
            bus_url,
            "--replica-id",
            replica_id,
            "--port",
            str(port),
            env=env,
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
        )
    hub = HubProcess(replica_id, port, process, log_path)
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while await hub.ready(session) != 200:
            if process.returncode is not None or time.monotonic() > deadline:
                await _stop(hub)
                raise AssertionError(
                    f"hub {replica_id} did not become ready within {timeout} s; "
                    f"its log:\n{hub.log()[-3000:]}"
                )
            await asyncio.sleep(0.1)
    return hub


async def _stop(hub: HubProcess) -> None:
    process = hub.process
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


@asynccontextmanager
async def hub_processes(
    replica_ids: Sequence[str],
    *,
    bus_url: str,
    log_dir: Path,
    environment: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> AsyncIterator[list[HubProcess]]:
    """Start one ``rcm-realtime serve`` process per replica id and wait until each
    answers /readyz with 200; stop them all (SIGTERM) afterwards."""
    started = await asyncio.gather(
        *(
            _start(
                replica_id,
                bus_url=bus_url,
                log_dir=log_dir,
                environment=environment or {},
                timeout=timeout,
            )
            for replica_id in replica_ids
        ),
        return_exceptions=True,
    )
    hubs = [hub for hub in started if isinstance(hub, HubProcess)]
    failures = [error for error in started if isinstance(error, BaseException)]
    try:
        if failures:
            raise failures[0]
        yield hubs
    finally:
        await asyncio.gather(*(_stop(hub) for hub in hubs))
