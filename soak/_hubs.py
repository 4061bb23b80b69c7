"""The replicas under soak: one ``rcm-realtime serve`` process per slot.

A slot is a replica id and a port. Its process may be killed and replaced; each
process is an instance of the slot (``r2#1``, ``r2#2``), with its own log file,
memory samples and counters, since a killed process takes its counters with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import psutil

from hub.core import ConfigError

from ._checks import Scrape, parse_scrape
from ._model import InstanceRecord, SoakError

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
REQUEST_TIMEOUT_S = 10.0
LOG_TAIL_CHARS = 3000


@dataclass
class Slot:
    index: int
    replica_id: str
    port: int
    instances: list[InstanceRecord] = field(default_factory=list)
    process: asyncio.subprocess.Process | None = None
    watcher: psutil.Process | None = None

    @property
    def current(self) -> InstanceRecord | None:
        return self.instances[-1] if self.instances else None

    @property
    def up(self) -> bool:
        return self.process is not None and self.process.returncode is None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def pick_ports(first: int, count: int) -> list[int]:
    """``count`` ports from ``first`` on, all free now; with ``first`` 0, ports the
    system hands out (free, though another program could take one before a
    replica binds it)."""
    if first == 0:
        probes = []
        try:
            for _ in range(count):
                probe = socket.socket()
                probes.append(probe)
                probe.bind(("127.0.0.1", 0))
            return [probe.getsockname()[1] for probe in probes]
        finally:
            for probe in probes:
                probe.close()
    ports = list(range(first, first + count))
    for port in ports:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError as error:
                raise ConfigError(
                    f"port {port} on 127.0.0.1 is not free ({error.strerror}); "
                    "choose another --port"
                ) from error
    return ports


class HubFleet:
    """Starts, kills, restarts, scrapes and stops the replica processes."""

    def __init__(
        self,
        *,
        replicas: int,
        first_port: int,
        bus_url: str,
        environment: Mapping[str, str],
        log_dir: Path,
        metrics_bearer: str,
        admin_token: str,
        now: Callable[[], float],
    ) -> None:
        ports = pick_ports(first_port, replicas)
        self.slots = [
            Slot(index, f"r{index + 1}", port) for index, port in enumerate(ports)
        ]
        self.bus_url = bus_url
        self.environment = dict(environment)
        self.log_dir = log_dir
        self.metrics_bearer = metrics_bearer
        self.admin_token = admin_token
        self.now = now

    # -- the clients' view ------------------------------------------------------------

    def address(self, slot: int) -> tuple[str, int]:
        return ("127.0.0.1", self.slots[slot].port)

    def instance_key(self, slot: int) -> str:
        """The newest instance of the slot: the only process that can answer a
        connection made now (a killed one is reaped before the next starts)."""
        current = self.slots[slot].current
        return current.key if current is not None else f"r{slot + 1}#0"

    def instances(self) -> list[InstanceRecord]:
        return [instance for slot in self.slots for instance in slot.instances]

    # -- processes --------------------------------------------------------------------

    async def start_all(self, session: aiohttp.ClientSession) -> None:
        results = await asyncio.gather(
            *(self.spawn(slot, session) for slot in self.slots),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def spawn(self, slot: Slot, session: aiohttp.ClientSession) -> None:
        """Start the slot's next instance and wait until it answers /readyz."""
        number = len(slot.instances) + 1
        log_path = self.log_dir / f"{slot.replica_id}-{number}.log"
        env = {**os.environ, **self.environment}
        with log_path.open("wb") as log_file:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "hub.cli",
                "serve",
                "--bus",
                self.bus_url,
                "--replica-id",
                slot.replica_id,
                "--host",
                "127.0.0.1",
                "--port",
                str(slot.port),
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                # Its own session: a Ctrl-C at the terminal reaches the soak,
                # which stops the replicas itself.
                start_new_session=True,
            )
        instance = InstanceRecord(
            slot=slot.index,
            number=number,
            replica_id=slot.replica_id,
            port=slot.port,
            pid=process.pid,
            log_path=log_path,
            spawned_s=self.now(),
        )
        slot.instances.append(instance)
        slot.process = process
        try:
            slot.watcher = psutil.Process(process.pid)
        except psutil.Error:
            slot.watcher = None
        deadline = asyncio.get_running_loop().time() + READY_TIMEOUT_S
        while await self.ready_status(slot, session) != 200:
            if process.returncode is not None:
                raise SoakError(
                    f"replica {instance.key} exited with {process.returncode} "
                    f"before it was ready; its log:\n{_tail(log_path)}"
                )
            if asyncio.get_running_loop().time() > deadline:
                raise SoakError(
                    f"replica {instance.key} was not ready within "
                    f"{READY_TIMEOUT_S:g} s; its log:\n{_tail(log_path)}"
                )
            await asyncio.sleep(0.1)
        instance.ready_s = self.now()

    async def kill(self, slot: Slot) -> InstanceRecord:
        """SIGKILL the slot's process and reap it."""
        process = slot.process
        instance = slot.current
        if process is None or instance is None:
            raise SoakError(f"replica {slot.replica_id} has no process to kill")
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGKILL)
        instance.killed_s = self.now()
        await process.wait()
        instance.exit_code = process.returncode
        instance.stopped_s = self.now()
        slot.process = None
        slot.watcher = None
        return instance

    async def stop_all(self) -> list[str]:
        """SIGTERM every running process; those still running after the grace
        period are killed. Returns what went wrong, one line each."""
        return [
            problem
            for problem in await asyncio.gather(
                *(self._stop(slot) for slot in self.slots)
            )
            if problem
        ]

    async def _stop(self, slot: Slot) -> str | None:
        process = slot.process
        instance = slot.current
        if process is None or instance is None:
            return None
        problem = None
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
                problem = (
                    f"{instance.key} did not stop within {STOP_TIMEOUT_S:g} s of "
                    "SIGTERM and was killed"
                )
        else:
            problem = f"{instance.key} had exited by itself ({process.returncode})"
        instance.exit_code = process.returncode
        instance.stopped_s = self.now()
        if problem is None and process.returncode != 0:
            problem = f"{instance.key} exited with {process.returncode} on SIGTERM"
        slot.process = None
        slot.watcher = None
        return problem

    def rss(self) -> list[tuple[str, int]]:
        """Resident memory of every running instance, in bytes."""
        samples = []
        for slot in self.slots:
            watcher = slot.watcher
            instance = slot.current
            if watcher is None or instance is None or not slot.up:
                continue
            try:
                rss = int(watcher.memory_info().rss)
            except psutil.Error:
                continue
            # A killed process not yet reaped reads as zero: not a sample.
            if rss > 0:
                samples.append((instance.key, rss))
        return samples

    # -- HTTP -------------------------------------------------------------------------

    async def ready_status(self, slot: Slot, session: aiohttp.ClientSession) -> int:
        """What /readyz answers, or 0 when nothing answers."""
        try:
            async with session.get(
                slot.base_url + "/readyz",
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
            ) as response:
                return response.status
        except (aiohttp.ClientError, TimeoutError):
            return 0

    async def wait_all_ready(
        self, session: aiohttp.ClientSession, timeout_s: float
    ) -> bool:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            statuses = await asyncio.gather(
                *(self.ready_status(slot, session) for slot in self.slots if slot.up)
            )
            if all(status == 200 for status in statuses):
                return True
            await asyncio.sleep(0.2)
        return False

    async def scrape(self, slot: Slot, session: aiohttp.ClientSession) -> Scrape | None:
        instance = slot.current
        if instance is None or not slot.up:
            return None
        try:
            async with session.get(
                slot.base_url + "/metrics",
                headers={"Authorization": f"Bearer {self.metrics_bearer}"},
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
            ) as response:
                if response.status != 200:
                    return None
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError):
            return None
        # The process may have been killed while the answer was on its way.
        if slot.current is not instance:
            return None
        return parse_scrape(text, at_s=self.now(), instance=instance.key)

    async def disconnect_tenant(
        self, slot: Slot, tenant: str, session: aiohttp.ClientSession
    ) -> int | None:
        """Admin-eject the tenant's streams: each gets what is queued for it, then
        its farewell, then the end of its response."""
        try:
            async with session.post(
                f"{slot.base_url}/v1/realtime/admin/tenants/{tenant}/disconnect",
                headers={"Authorization": f"Bearer {self.admin_token}"},
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
            ) as response:
                if response.status != 200:
                    return None
                body = await response.json()
                return int(body.get("disconnected", 0))
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None


def _tail(path: Path) -> str:
    try:
        return path.read_text("utf-8", errors="replace")[-LOG_TAIL_CHARS:]
    except OSError as error:
        return f"(cannot read {path}: {error.strerror})"
