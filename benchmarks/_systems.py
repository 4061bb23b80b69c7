"""The systems under test, each started as a child process on loopback.

Every system gets the same events (the same envelope, the same payload, the publish
time first in the payload) and is read by the same client; what differs is only
how a system is started, how an event is handed to it, and how a subscriber asks
for its stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import psutil

from ._client import stream_request
from ._harness import REPO_ROOT, port_free
from ._http import HttpConnection, get_request, post_request, wait_for_answer

HOST = "127.0.0.1"
TENANT = "bench"
EVENT_TYPE = "claim.submitted"
SECRET = "benchmark-signing-key-of-a-decent-length-0123456789"
METRICS_BEARER = "benchmark-metrics-bearer"
READ_SCOPES = ["claims.read", "denials.read", "remittance.read", "batches.read"]
WATCHED_METRICS = (
    "rcm_realtime_fanout_total",
    "rcm_realtime_delivered_total",
    "rcm_realtime_dropped_total",
    "rcm_realtime_queued",
)
HUB_SOURCE_ENV = "RCM_BENCH_HUB_SOURCE"
NCHAN_MODULE_DIRS = ("/usr/lib/nginx/modules", "/usr/share/nginx/modules")


class SystemUnavailable(Exception):
    """The system cannot run on this machine; the reason is for a person."""


def events(count: int, first_seq: int) -> list[dict[str, Any]]:
    """``count`` envelopes stamped with the time of this call."""
    sent = time.time()
    return [
        {
            "type": EVENT_TYPE,
            "tenantId": TENANT,
            "payload": {
                # First key, always followed by a comma: the client reads it there.
                "bench_t": sent,
                "seq": first_seq + n,
                "claimId": f"C-{first_seq + n:09d}",
                "payerId": "availity-0042",
                "amountCents": 1234567,
            },
        }
        for n in range(count)
    ]


class Server:
    """A running system: its processes, its log, how to reach it."""

    def __init__(
        self,
        system: System,
        process: subprocess.Popen[bytes],
        port: int,
        workdir: Path,
        log_path: Path,
    ) -> None:
        self.system = system
        self.process = process
        self.port = port
        self.workdir = workdir
        self.log_path = log_path
        self._publisher: HttpConnection | None = None

    def processes(self) -> list[psutil.Process]:
        """The system's processes: the child and its own children (nginx workers)."""
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def serving_pids(self) -> list[int]:
        """The processes that do the work: nginx's workers, or the hub itself."""
        every = self.processes()
        return [p.pid for p in (every[1:] if len(every) > 1 else every)]

    def rss(self) -> int:
        total = 0
        for process in self.processes():
            with contextlib.suppress(psutil.Error):
                total += process.memory_info().rss
        return total

    def cpu_s(self) -> float:
        total = 0.0
        for process in self.processes():
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                total += times.user + times.system
        return total

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stream_request(self) -> bytes:
        return self.system.stream_request(self.port)

    async def publish(self, documents: list[dict[str, Any]]) -> None:
        if self._publisher is None:
            self._publisher = await HttpConnection.open(HOST, self.port)
        answers = await self._publisher.exchange(
            self.system.publish_requests(self.port, documents)
        )
        for answer in answers:
            if answer.status >= 300:
                raise RuntimeError(
                    f"{self.system.name} refused a publish: {answer.status} "
                    f"{answer.body[:200]!r}"
                )

    async def stop(self) -> None:
        if self._publisher is not None:
            await self._publisher.close()
            self._publisher = None
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.process.wait, 20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                await asyncio.to_thread(self.process.wait, 10)
        shutil.rmtree(self.workdir, ignore_errors=True)


class System(ABC):
    name: ClassVar[str]
    label: ClassVar[str]
    # Events one publish request may carry; 1 for systems without batch ingest.
    batch: ClassVar[int] = 64
    ready_path: ClassVar[str] = "/healthz"
    ready_status: ClassVar[frozenset[int] | None] = frozenset({200})

    def unavailable(self) -> str | None:
        """Why this system cannot run here, or None."""
        return None

    @abstractmethod
    def command(self, port: int, workdir: Path) -> list[str]: ...

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    @abstractmethod
    def stream_request(self, port: int) -> bytes: ...

    @abstractmethod
    def publish_requests(
        self, port: int, documents: list[dict[str, Any]]
    ) -> list[bytes]: ...

    def cwd(self) -> Path:
        return REPO_ROOT

    async def start(self, port: int) -> Server:
        reason = self.unavailable()
        if reason is not None:
            raise SystemUnavailable(reason)
        if not port_free(port):
            raise SystemUnavailable(
                f"port {port} on {HOST} is taken; another server would answer in "
                f"{self.label}'s place"
            )
        workdir = Path(tempfile.mkdtemp(prefix=f"rcm-bench-{self.name}-"))
        log_path = workdir / "server.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                self.command(port, workdir),
                cwd=self.cwd(),
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        server = Server(self, process, port, workdir, log_path)
        try:
            await wait_for_answer(
                HOST,
                port,
                self.ready_path,
                timeout_s=30,
                accept=self.ready_status,
                alive=server.alive,
            )
        except Exception as error:
            tail = server.log_tail()
            await server.stop()
            raise SystemUnavailable(
                f"{self.label} did not start on port {port}: {error}\n{tail}"
            ) from error
        return server

    async def counters(self, server: Server) -> dict[str, Any]:
        """The system's own account of a step, where it keeps one."""
        return {}


def _token(**claims: Any) -> str:
    from hub import issue_token

    return issue_token(secret=SECRET, ttl_s=6 * 3600, **claims)


class _HubLike(System):
    """Systems that speak the contract's HTTP surface."""

    batch = 64

    def __init__(self) -> None:
        self._subscriber = _token(tenant_id=TENANT, scopes=READ_SCOPES, subject="bench")
        self._publisher = _token(
            tenant_id=None, scopes=["realtime.publish"], subject="bench-publisher"
        )

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            RCM_REALTIME_JWT_SECRET=SECRET,
            RCM_REALTIME_METRICS_BEARER=METRICS_BEARER,
            RCM_REALTIME_HEARTBEAT_S="3600",
            # Every benchmark stream shares one token and one tenant; the caps that
            # protect a real tenant would refuse the 10,000-stream step.
            RCM_REALTIME_MAX_STREAMS_PER_TOKEN="100000",
            RCM_REALTIME_MAX_STREAMS_PER_TENANT="100000",
            RCM_REALTIME_REPLICA_ID=f"bench-{self.name}",
            PYTHONUNBUFFERED="1",
        )
        return env

    def stream_request(self, port: int) -> bytes:
        return stream_request(
            HOST,
            port,
            "/v1/realtime/stream",
            {"Authorization": f"Bearer {self._subscriber}"},
        )

    def publish_requests(
        self, port: int, documents: list[dict[str, Any]]
    ) -> list[bytes]:
        body = json.dumps(documents, separators=(",", ":")).encode()
        return [
            post_request(
                HOST,
                port,
                "/v1/realtime/events",
                body,
                {"Authorization": f"Bearer {self._publisher}"},
            )
        ]


class Hub(_HubLike):
    name = "hub"
    label = "rcm-realtime hub (asyncio)"
    ready_path = "/readyz"
    loop = "asyncio"

    def cwd(self) -> Path:
        """The checkout whose ``hub`` package runs: this one, or the one named by
        ``RCM_BENCH_HUB_SOURCE`` (to measure a change against its parent)."""
        return Path(os.environ.get(HUB_SOURCE_ENV) or REPO_ROOT)

    def command(self, port: int, workdir: Path) -> list[str]:
        serve = ["serve", "--host", HOST, "--port", str(port)]
        if self.loop == "asyncio":
            return [sys.executable, "-m", "hub.cli", *serve]
        # The hub has no loop switch of its own yet: install the policy first.
        launcher = (
            "import sys, uvloop; uvloop.install(); "
            "from hub.cli import main; sys.exit(main(sys.argv[1:]))"
        )
        return [sys.executable, "-c", launcher, *serve]

    async def counters(self, server: Server) -> dict[str, Any]:
        """Delivered and dropped totals from the hub's own metrics."""
        connection = await HttpConnection.open(HOST, server.port)
        try:
            [answer] = await connection.exchange(
                [
                    get_request(
                        HOST,
                        server.port,
                        "/metrics",
                        {"Authorization": f"Bearer {METRICS_BEARER}"},
                    )
                ]
            )
        finally:
            await connection.close()
        totals: dict[str, Any] = {}
        for line in answer.body.decode("utf-8", "replace").splitlines():
            for name in WATCHED_METRICS:
                if line.startswith(name):
                    key = line.split(" ", 1)[0].removeprefix("rcm_realtime_")
                    totals[key] = float(line.rsplit(" ", 1)[1])
        return totals


class HubUvloop(Hub):
    name = "hub_uvloop"
    label = "rcm-realtime hub (uvloop)"
    loop = "uvloop"

    def unavailable(self) -> str | None:
        try:
            import uvloop  # noqa: F401
        except ImportError:
            return "uvloop is not installed (tools/install-bench-deps.sh installs it)"
        return None


class Naive(_HubLike):
    name = "naive"
    label = "naive aiohttp hub (queue per subscriber)"

    def command(self, port: int, workdir: Path) -> list[str]:
        return [
            sys.executable,
            "-m",
            "benchmarks.naive_hub",
            "--host",
            HOST,
            "--port",
            str(port),
        ]


class Nchan(System):
    name = "nchan"
    label = "nginx + nchan (1 worker)"
    batch = 1
    ready_path = "/ready"
    ready_status = None

    def unavailable(self) -> str | None:
        if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
            return (
                "nginx is not installed; tools/install-bench-deps.sh installs nginx "
                "and libnginx-mod-nchan"
            )
        if self.module_path() is None:
            return (
                "the nchan module is not installed (Debian package "
                "libnginx-mod-nchan); tools/install-bench-deps.sh installs it"
            )
        return None

    @staticmethod
    def module_path() -> Path | None:
        for folder in NCHAN_MODULE_DIRS:
            candidate = Path(folder) / "ngx_nchan_module.so"
            if candidate.exists():
                return candidate
        return None

    @staticmethod
    def binary() -> str:
        return shutil.which("nginx") or "/usr/sbin/nginx"

    def command(self, port: int, workdir: Path) -> list[str]:
        config = workdir / "nginx.conf"
        config.write_text(self.config(port, workdir), "utf-8")
        return [
            self.binary(),
            "-p",
            str(workdir),
            "-c",
            str(config),
            "-e",
            str(workdir / "error.log"),
        ]

    def config(self, port: int, workdir: Path) -> str:
        user = "user root;" if os.geteuid() == 0 else ""
        files = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        if files == resource.RLIM_INFINITY:
            files = 65536
        temp = "\n".join(
            f"    {kind}_temp_path {workdir / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        return f"""\
load_module {self.module_path()};
{user}
worker_processes 1;
worker_rlimit_nofile {files};
daemon off;
master_process on;
pid {workdir / "nginx.pid"};
error_log {workdir / "error.log"} warn;
events {{
    worker_connections 32768;
    multi_accept on;
}}
http {{
    access_log off;
    # The publisher keeps one connection for the whole step.
    keepalive_requests 100000000;
    keepalive_timeout 300s;
{temp}
    nchan_shared_memory_size 256m;
    server {{
        listen {HOST}:{port} backlog=4096;
        location = /sub {{
            nchan_subscriber eventsource;
            nchan_channel_id {TENANT};
        }}
        location = /pub {{
            nchan_publisher http;
            nchan_channel_id {TENANT};
            nchan_message_buffer_length 512;
            nchan_message_timeout 120s;
        }}
        location = /ready {{
            return 204;
        }}
        location = /status {{
            nchan_stub_status;
        }}
    }}
}}
"""

    def stream_request(self, port: int) -> bytes:
        return stream_request(HOST, port, "/sub", {})

    def publish_requests(
        self, port: int, documents: list[dict[str, Any]]
    ) -> list[bytes]:
        return [
            post_request(
                HOST,
                port,
                "/pub",
                json.dumps(_nchan_envelope(document), separators=(",", ":")).encode(),
                {"X-EventSource-Event": EVENT_TYPE},
            )
            for document in documents
        ]


def _nchan_envelope(document: dict[str, Any]) -> dict[str, Any]:
    """The envelope as the hub would frame it, so every frame has the same size."""
    seq = document["payload"]["seq"]
    return {
        "id": f"01JBENCH{seq:018d}",
        "type": document["type"],
        "tenantId": document["tenantId"],
        "occurredAt": "2026-12-03T10:00:00.000Z",
        "severity": "info",
        "payload": document["payload"],
    }


SYSTEMS: dict[str, type[System]] = {
    cls.name: cls for cls in (Hub, HubUvloop, Naive, Nchan)
}


def iter_systems() -> Iterator[type[System]]:
    yield from SYSTEMS.values()
