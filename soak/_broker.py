"""The RabbitMQ broker as the soak needs it: reachable, restartable under the lock
the RabbitMQ tests hold, and left without the run's exchange and queues."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import shutil
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from yarl import URL

from hub.core import ConfigError

from ._model import SoakError

RABBITMQCTL_TIMEOUT_S = 90.0


def check_broker(url: str) -> None:
    """ConfigError unless something answers at the broker's address."""
    parsed = URL(url)
    host = parsed.host or "127.0.0.1"
    port = parsed.port or 5672
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as error:
        raise ConfigError(
            f"RabbitMQ does not answer at {host}:{port} ({error.strerror or error}); "
            "start it (rabbitmq-server -detached) or pass --bus"
        ) from error


def rabbitmqctl_path() -> str:
    path = shutil.which("rabbitmqctl")
    if path is None:
        raise ConfigError(
            "rabbitmqctl is not on PATH; the soak needs it to restart the broker"
        )
    return path


async def rabbitmqctl(*args: str) -> None:
    """Run ``rabbitmqctl`` and wait; SoakError with its output when it fails."""
    process = await asyncio.create_subprocess_exec(
        rabbitmqctl_path(),
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), RABBITMQCTL_TIMEOUT_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise SoakError(
            f"rabbitmqctl {' '.join(args)} did not finish within "
            f"{RABBITMQCTL_TIMEOUT_S:g} s"
        ) from None
    if process.returncode != 0:
        text = output.decode("utf-8", errors="replace").strip()[-1000:]
        raise SoakError(
            f"rabbitmqctl {' '.join(args)} failed ({process.returncode}): {text}"
        )


class BrokerLock:
    """An exclusive ``flock`` on the file the RabbitMQ tests hold while they run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    async def acquire(self, timeout_s: float) -> bool:
        """Wait for the lock at most ``timeout_s``; False when it stayed held."""
        lock_file = self.path.open("a")
        deadline = asyncio.get_running_loop().time() + max(0.0, timeout_s)
        while True:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if asyncio.get_running_loop().time() >= deadline:
                    lock_file.close()
                    return False
                await asyncio.sleep(0.2)
                continue
            self._file = lock_file
            return True

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


async def delete_topology(url: str, exchange: str, queues: Iterable[str]) -> str | None:
    """Delete the run's queues and exchange; what went wrong, or None."""
    import aio_pika

    try:
        connection = await aio_pika.connect(url, timeout=30)
        async with connection:
            channel = await connection.channel()
            for queue in queues:
                await channel.queue_delete(queue)
            await channel.exchange_delete(exchange)
    except Exception as error:
        return f"could not delete exchange {exchange} and its queues ({error})"
    return None
