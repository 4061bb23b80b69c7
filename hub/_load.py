"""``rcm-realtime load``: Locust against real hubs, reconciled with their counters.

The run, step by step:

1. start ``rcm-realtime serve --replicas N`` with a fresh key and metrics bearer (or
   check that the ``--url`` replicas answer), and scrape every replica;
2. start Locust headless (``--processes P`` makes it a master and P workers) with
   the SSE users and the publishers, steered through a control directory;
3. sample the replicas' metrics and the CPU of Locust and the hubs every second;
4. after ``--duration``, stop the publishers, wait for their count of accepted
   events, and wait until every replica has dispatched them all and drained (no
   frame queued, no batch open);
5. stop the clients, which leave by half-closing and reading to the end, so every
   frame a hub counted as delivered is read; scrape again and reconcile;
6. write the report and say where it is.

Load generators lie when they run out of CPU; the Locust processes' CPU is
measured and a saturated generator is called out.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.util import find_spec
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ._load_reconcile import (
    Reconciliation,
    Scrape,
    accepted_per_tenant,
    hub_latency_quantiles,
    reconcile,
)
from ._tokens import issue_token
from .core import ConfigError, RealtimeError

SATURATED_PERCENT = 90.0
SAMPLE_INTERVAL_S = 1.0
PROGRESS_INTERVAL_S = 5.0
HUB_START_TIMEOUT_S = 20.0
LOCUST_START_TIMEOUT_S = 60.0
PUBLISHERS_STOP_TIMEOUT_S = 20.0
LOCUST_STOP_TIMEOUT_S = 90.0


class LoadError(RealtimeError):
    """A load run cannot go on; the message says what to do."""


@dataclass(frozen=True, slots=True)
class LoadOptions:
    replicas: int = 2
    urls: tuple[str, ...] = ()
    users: int = 50
    spawn_rate: float = 50.0
    duration_s: float = 30.0
    events_per_s: float = 20.0
    processes: int = 1
    workers: int = 0
    master_port: int = 5557
    churn: bool = False
    session_s: float = 20.0
    tenants: int = 2
    publishers: int = 1
    report_dir: Path = Path("reports")
    port: int | None = None
    drain_timeout_s: float = 30.0
    catalog: str | None = None

    @property
    def load_processes(self) -> int:
        """Locust processes that run users (and report a tally)."""
        return self.workers or self.processes

    @classmethod
    def from_args(cls, args: Any) -> LoadOptions:
        urls = tuple(
            part.strip().rstrip("/")
            for item in args.url
            for part in item.split(",")
            if part.strip()
        )
        for url in urls:
            parts = urlsplit(url)
            try:
                port = parts.port
            except ValueError:
                port = None
            if parts.scheme != "http" or not parts.hostname or port is None:
                raise ConfigError(
                    f"--url {url!r} is not like http://127.0.0.1:8080 (http, a host "
                    "and a port)"
                )
        if args.workers and args.processes > 1:
            raise ConfigError(
                "--workers (other machines) and --processes (this machine) both "
                "choose the Locust workers: pass one of them"
            )
        if args.catalog and not Path(args.catalog).is_file():
            raise ConfigError(f"--catalog {args.catalog}: no such file")
        if args.port is not None and args.port + (args.replicas or 2) - 1 > 65535:
            raise ConfigError(f"--port {args.port} leaves no room for the replicas")
        return cls(
            replicas=args.replicas or 2,
            urls=urls,
            users=args.users,
            spawn_rate=args.spawn_rate,
            duration_s=float(args.duration),
            events_per_s=args.events_per_s,
            processes=args.processes,
            workers=args.workers,
            master_port=args.master_port,
            churn=args.churn,
            session_s=args.session_s,
            tenants=args.tenants,
            publishers=args.publishers,
            report_dir=Path(args.report_dir),
            port=args.port,
            drain_timeout_s=float(args.drain_timeout),
            catalog=args.catalog,
        )


def say(message: str) -> None:
    print(f"load: {message}", file=sys.stderr, flush=True)


# -- hubs -------------------------------------------------------------------------


@dataclass(slots=True)
class Hubs:
    urls: list[str]
    secret: str
    metrics_bearer: str
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def free_ports(count: int) -> int:
    """A first port with ``count`` free ports after it (checked, not reserved)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = int(probe.getsockname()[1])
        if first + count - 1 <= 65535 and all(
            _port_free(first + n) for n in range(1, count)
        ):
            return first
    raise LoadError(f"found no {count} consecutive free ports on 127.0.0.1")


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start_hubs(options: LoadOptions, directory: Path) -> Hubs:
    secret = secrets.token_urlsafe(32)
    bearer = secrets.token_urlsafe(24)
    port = options.port or free_ports(options.replicas)
    command = [
        sys.executable,
        "-m",
        "hub.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--replicas",
        str(options.replicas),
    ]
    if options.catalog:
        command += ["--catalog", options.catalog]
    env = dict(os.environ)
    env.update(
        RCM_REALTIME_JWT_SECRET=secret,
        RCM_REALTIME_METRICS_BEARER=bearer,
        RCM_REALTIME_BUS="memory",
    )
    env.pop("RCM_REALTIME_REPLICA_ID", None)
    log_path = directory / "hub.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    urls = [f"http://127.0.0.1:{port + n}" for n in range(options.replicas)]
    hubs = Hubs(urls, secret, bearer, process, log_path)
    try:
        _wait_hubs_ready(hubs, process, log_path)
    except BaseException:
        hubs.stop()
        raise
    say(
        f"started {options.replicas} replica(s) on 127.0.0.1 ports "
        f"{port}-{port + options.replicas - 1} (in-process bus; log {log_path})"
    )
    return hubs


def _wait_hubs_ready(
    hubs: Hubs, process: subprocess.Popen[bytes], log_path: Path
) -> None:
    deadline = time.monotonic() + HUB_START_TIMEOUT_S
    pending = list(hubs.urls)
    while pending:
        if process.poll() is not None:
            raise LoadError(
                f"the hub exited while starting (code {process.returncode}):\n"
                + _tail(log_path)
            )
        if time.monotonic() > deadline:
            raise LoadError(
                f"the hub did not become ready in {HUB_START_TIMEOUT_S:.0f} s:\n"
                + _tail(log_path)
            )
        pending = [url for url in pending if not _ready(url)]
        if pending:
            time.sleep(0.1)


def target_hubs(options: LoadOptions) -> Hubs:
    secret = os.environ.get("RCM_REALTIME_JWT_SECRET", "")
    if not secret:
        raise LoadError(
            "--url targets running hubs, so their signing key is needed to sign the "
            "users' tokens: set RCM_REALTIME_JWT_SECRET"
        )
    bearer = os.environ.get("RCM_REALTIME_METRICS_BEARER") or issue_token(
        secret=secret,
        tenant_id=None,
        scopes=["metrics.read"],
        subject="rcm-realtime-load",
        ttl_s=24 * 3600,
    )
    return Hubs(list(options.urls), secret, bearer)


def _ready(url: str) -> bool:
    return _probe(url) is None


def _probe(url: str) -> str | None:
    """None when the replica answers ``/readyz`` with 200, else what is wrong."""
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=3):
            return None
    except urllib.error.HTTPError as error:
        return f"{url}/readyz answered {error.code}: the replica is not ready"
    except urllib.error.URLError as error:
        return f"cannot reach {url} ({error.reason}): is the hub running there?"
    except (OSError, ValueError) as error:
        return f"cannot reach {url} ({error})"


def scrape(hubs: Hubs, url: str) -> Scrape:
    request = urllib.request.Request(
        f"{url}/metrics", headers={"Authorization": f"Bearer {hubs.metrics_bearer}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode("utf-8")
    except urllib.error.HTTPError as error:
        if error.code == 401:
            raise LoadError(
                f"{url}/metrics refused the credentials: set "
                "RCM_REALTIME_METRICS_BEARER to the hub's metrics bearer, or "
                "RCM_REALTIME_JWT_SECRET to its signing key"
            ) from error
        raise LoadError(f"{url}/metrics answered {error.code}") from error
    except (OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise LoadError(f"cannot reach {url} ({reason})") from error
    return Scrape.parse(url, time.time(), text)


def scrape_all(hubs: Hubs) -> dict[str, Scrape]:
    return {url: scrape(hubs, url) for url in hubs.urls}


# -- Locust -----------------------------------------------------------------------


def locustfile_path() -> Path:
    spec = find_spec("loadtests")
    if spec is None or spec.origin is None:
        raise LoadError("the loadtests package is not installed next to the hub")
    path = Path(spec.origin).with_name("locustfile.py")
    if not path.is_file():
        raise LoadError(f"{path} is missing")
    return path


@dataclass(slots=True)
class LocustRun:
    process: subprocess.Popen[bytes]
    control: Path
    log_path: Path
    command: list[str]

    def alive(self) -> bool:
        return self.process.poll() is None

    def signal_file(self, name: str) -> None:
        (self.control / name).touch()

    def read(self, name: str) -> dict[str, Any] | None:
        path = self.control / name
        try:
            document = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            return None
        return document if isinstance(document, dict) else None

    def stop(self) -> None:
        if not self.alive():
            return
        self.signal_file("stop")
        try:
            self.process.wait(timeout=LOCUST_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            say("Locust did not stop in time; terminating it")
            self.kill()

    def kill(self) -> None:
        if not self.alive():
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def start_locust(
    options: LoadOptions,
    hubs: Hubs,
    tenants: list[str],
    run_id: str,
    directory: Path,
) -> LocustRun:
    control = directory / "control"
    control.mkdir()
    drivers = options.load_processes
    total_users = options.publishers + (drivers if options.churn else options.users)
    backstop_s = int(
        options.duration_s + options.drain_timeout_s + PUBLISHERS_STOP_TIMEOUT_S + 120
    )
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(locustfile_path()),
        "--headless",
        "--users",
        str(total_users),
        "--spawn-rate",
        f"{options.spawn_rate:g}",
        "--run-time",
        f"{backstop_s}s",
        "--csv",
        str(directory / "locust"),
        "--csv-full-history",
        "--only-summary",
        "--host",
        hubs.urls[0],
    ]
    if options.workers:
        command += [
            "--master",
            "--expect-workers",
            str(options.workers),
            "--master-bind-port",
            str(options.master_port),
        ]
    elif options.processes > 1:
        command += ["--processes", str(options.processes)]
    command += ["ChurnDriver" if options.churn else "SseUser", "PublisherUser"]
    env = dict(os.environ)
    env.update(
        RCM_REALTIME_JWT_SECRET=hubs.secret,
        RCM_LOAD_URLS=",".join(hubs.urls),
        RCM_LOAD_TENANTS=",".join(tenants),
        RCM_LOAD_EVENTS_PER_S=f"{options.events_per_s:g}",
        RCM_LOAD_PUBLISHERS=str(options.publishers),
        RCM_LOAD_CLIENTS=str(options.users if options.churn else 0),
        RCM_LOAD_SESSION_S=f"{options.session_s:g}",
        RCM_LOAD_DRIVERS=str(drivers),
        RCM_LOAD_CONTROL_DIR=str(control),
        RCM_LOAD_RUN_ID=run_id,
    )
    if options.catalog:
        env["RCM_LOAD_CATALOG"] = str(Path(options.catalog).resolve())
    log_path = directory / "locust.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    return LocustRun(process, control, log_path, command)


# -- sampling ---------------------------------------------------------------------


@dataclass(slots=True)
class CpuWatch:
    """CPU of a process tree, sampled: per-process percent of one core."""

    root_pid: int
    _processes: dict[int, Any] = field(default_factory=dict)

    def sample(self) -> dict[int, float]:
        import psutil

        try:
            root = psutil.Process(self.root_pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            return {}
        percents: dict[int, float] = {}
        for process in tree:
            known = self._processes.setdefault(process.pid, process)
            try:
                # The first call of a process primes it and reads 0.
                percents[process.pid] = float(known.cpu_percent(None))
            except psutil.Error:
                continue
        return percents


@dataclass(slots=True)
class Sample:
    t: float
    phase: str
    scrapes: dict[str, Scrape]
    locust_cpu: dict[int, float]
    hub_cpu: float | None
    # The whole machine, all cores, 0-100: others' work shows here too.
    machine_cpu: float


@dataclass(slots=True)
class Sampler:
    hubs: Hubs
    tenants: list[str]
    locust_cpu: CpuWatch
    hub_cpu: CpuWatch | None
    t0: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    errors: int = 0
    _last_progress: float = 0.0

    def take(self, phase: str) -> Sample | None:
        try:
            scrapes = scrape_all(self.hubs)
        except LoadError:
            self.errors += 1
            return None
        hub_cpu = None
        if self.hub_cpu is not None:
            hub_cpu = sum(self.hub_cpu.sample().values())
        import psutil

        sample = Sample(
            time.time() - self.t0,
            phase,
            scrapes,
            self.locust_cpu.sample(),
            hub_cpu,
            float(psutil.cpu_percent(None)),
        )
        self.samples.append(sample)
        return sample

    def progress(self, sample: Sample | None) -> None:
        if sample is None or sample.t - self._last_progress < PROGRESS_INTERVAL_S:
            return
        self._last_progress = sample.t
        total = self._totals(sample)
        previous = next(
            (s for s in reversed(self.samples[:-1]) if sample.t - s.t >= 4.5), None
        )
        rate = ""
        if previous is not None:
            delivered = total["delivered"] - self._totals(previous)["delivered"]
            rate = f" ({delivered / (sample.t - previous.t):,.0f}/s)"
        busiest = max(sample.locust_cpu.values(), default=0.0)
        hub = "" if sample.hub_cpu is None else f", hub {sample.hub_cpu:.0f}%"
        say(
            f"t={sample.t:4.0f}s {sample.phase}: {total['subscribers']:.0f} streams, "
            f"{total['delivered']:,.0f} delivered{rate}, {total['queued']:.0f} queued, "
            f"drops bp {total['backpressure']:.0f} disc {total['disconnected']:.0f}; "
            f"CPU: busiest Locust process {busiest:.0f}%{hub}, machine "
            f"{sample.machine_cpu:.0f}%"
        )

    def _totals(self, sample: Sample) -> dict[str, float]:
        total = dict.fromkeys(
            ("subscribers", "delivered", "queued", "backpressure", "disconnected"), 0.0
        )
        for scrape_ in sample.scrapes.values():
            for tenant in self.tenants:
                total["subscribers"] += scrape_.value(
                    "rcm_realtime_subscribers", tenant_id=tenant
                )
                total["delivered"] += scrape_.value(
                    "rcm_realtime_delivered_total", tenant_id=tenant
                )
                total["queued"] += scrape_.value(
                    "rcm_realtime_queued", tenant_id=tenant
                )
                for reason in ("backpressure", "disconnected"):
                    total[reason] += scrape_.value(
                        "rcm_realtime_dropped_total", tenant_id=tenant, reason=reason
                    )
        return total


def saturation(samples: list[Sample], window: int = 5) -> tuple[float, int | None]:
    """The highest mean CPU of any Locust process over ``window`` samples in a row."""
    series: dict[int, list[float]] = {}
    for sample in samples:
        for pid, percent in sample.locust_cpu.items():
            series.setdefault(pid, []).append(percent)
    worst, worst_pid = 0.0, None
    for pid, values in series.items():
        recent: deque[float] = deque(maxlen=window)
        for value in values:
            recent.append(value)
            if len(recent) == window and sum(recent) / window > worst:
                worst, worst_pid = sum(recent) / window, pid
    return worst, worst_pid


# -- the run ------------------------------------------------------------------------


@dataclass(slots=True)
class RunResult:
    directory: Path
    reconciliation: Reconciliation
    warnings: list[str]
    summary: dict[str, Any]


def run_load(options: LoadOptions) -> int:
    if find_spec("locust") is None:
        raise LoadError("Locust is not installed: pip install locust")
    locustfile_path()
    hubs: Hubs | None = None
    if options.urls:
        # Running hubs are checked before anything is written.
        hubs = target_hubs(options)
        problems = [p for p in (_probe(url) for url in hubs.urls) if p is not None]
        if problems:
            raise LoadError("; ".join(problems))
        scrape_all(hubs)
    directory = _report_directory(options.report_dir)
    try:
        if hubs is None:
            hubs = start_hubs(options, directory)
        result = _run(options, directory, hubs)
    except KeyboardInterrupt:
        say(f"interrupted; what was written is in {directory}")
        return 130
    print(result.directory / "index.html")
    for warning in result.warnings:
        say(f"WARNING: {warning}")
    verdict = "reconciled" if result.reconciliation.passed else "DID NOT reconcile"
    say(f"{verdict}; report in {result.directory}/index.html")
    for check in result.reconciliation.unexplained:
        say(f"  failed: {check.name}: {check.detail}")
    return 0 if result.reconciliation.passed else 1


def _report_directory(parent: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        for n in range(100):
            directory = parent / (f"load-{stamp}" if n == 0 else f"load-{stamp}-{n}")
            try:
                directory.mkdir()
            except FileExistsError:
                continue
            return directory
    except OSError as error:
        raise LoadError(
            f"cannot create the report folder in {parent} ({error.strerror})"
        ) from error
    raise LoadError(f"too many reports named load-{stamp} in {parent}")


def _run(options: LoadOptions, directory: Path, hubs: Hubs) -> RunResult:
    run_id = uuid.uuid4().hex[:6]
    tenants = [f"load-{run_id}-{n}" for n in range(1, options.tenants + 1)]
    warnings: list[str] = []
    locust: LocustRun | None = None
    try:
        start = scrape_all(hubs)
        locust = start_locust(options, hubs, tenants, run_id, directory)
        sampler = Sampler(
            hubs,
            tenants,
            CpuWatch(locust.process.pid),
            CpuWatch(hubs.process.pid) if hubs.process is not None else None,
        )
        if options.workers:
            say(
                f"waiting for {options.workers} Locust worker(s); on each machine run:"
                f"\n    locust -f loadtests/locustfile.py --worker --master-host "
                f"<this machine> --master-port {options.master_port}"
            )
        started_at = _wait_started(
            locust, LOCUST_START_TIMEOUT_S + (600 if options.workers else 0)
        )
        sampler.t0 = started_at
        say(
            f"Locust running ({options.load_processes} process(es)); "
            + (
                f"open model, about {options.users} clients connected"
                if options.churn
                else f"{options.users} SSE users"
            )
            + f", {options.events_per_s:g} events/s for {options.duration_s:g} s"
        )
        _sample_until(sampler, locust, started_at + options.duration_s, "publishing")

        locust.signal_file("stop-publishing")
        published = _wait_published(sampler, locust, options.publishers)
        drained = _wait_drained(sampler, start, tenants, published, options)
        if not drained:
            warnings.append(
                f"the hubs did not drain within {options.drain_timeout_s:g} s; "
                "what was still queued shows in the reconciliation"
            )
        locust.stop()
        clients = locust.read("clients.json")
        end = scrape_all(hubs)
        sampler.take("stopped")
    finally:
        if locust is not None:
            locust.kill()
        hubs.stop()

    reconciliation = reconcile(
        tenants=tenants,
        start=start,
        end=end,
        clients=clients,
        published=published,
        expected_processes=options.load_processes,
    )
    worst, worst_pid = saturation(sampler.samples)
    if worst >= SATURATED_PERCENT:
        warnings.append(
            f"the load generator was CPU-saturated: Locust process {worst_pid} ran at "
            f"{worst:.0f}% of a core for 5 s; its latencies measure Locust, not the "
            "hub. Use --processes, fewer users, or workers on other machines"
        )
    if sampler.errors:
        warnings.append(f"{sampler.errors} metric scrapes failed during the run")
    if clients is None:
        warnings.append("the load clients did not report; see " + str(locust.log_path))

    from ._load_report import write_report

    summary = write_report(
        directory=directory,
        options=options,
        command=_command_line(),
        locust_command=locust.command,
        tenants=tenants,
        started_at=sampler.t0,
        samples=sampler.samples,
        reconciliation=reconciliation,
        hub_latency=hub_latency_quantiles(start, end),
        clients=clients,
        published=published,
        warnings=warnings,
        saturation=(worst, worst_pid),
    )
    return RunResult(directory, reconciliation, warnings, summary)


def _command_line() -> str:
    return " ".join(["rcm-realtime", *sys.argv[1:]])


def _wait_started(locust: LocustRun, timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        started = locust.read("started.json")
        if started is not None:
            return float(started["at"])
        if not locust.alive():
            raise LoadError(
                f"Locust exited before starting (code {locust.process.returncode}):\n"
                + _tail(locust.log_path)
            )
        time.sleep(0.1)
    raise LoadError(
        f"Locust did not start within {timeout_s:.0f} s:\n" + _tail(locust.log_path)
    )


def _ticks(until: float) -> Iterator[None]:
    """Yield once a sampling interval until the wall clock reaches ``until``."""
    while time.time() < until:
        next_tick = time.time() + SAMPLE_INTERVAL_S
        yield
        time.sleep(max(0.0, min(next_tick, until) - time.time()))


def _sample_until(
    sampler: Sampler, locust: LocustRun, until: float, phase: str
) -> None:
    for _ in _ticks(until):
        sampler.progress(sampler.take(phase))
        if not locust.alive():
            raise LoadError(
                f"Locust exited during the run (code {locust.process.returncode}):\n"
                + _tail(locust.log_path)
            )


def _wait_published(
    sampler: Sampler, locust: LocustRun, publishers: int
) -> dict[str, Any] | None:
    deadline = time.time() + PUBLISHERS_STOP_TIMEOUT_S
    while time.time() < deadline:
        published = locust.read("published.json")
        if published is not None and len(published.get("publishers", {})) >= publishers:
            accepted, _, _ = accepted_per_tenant(published)
            say(f"publishers stopped; {sum(accepted.values())} events accepted")
            return published
        sampler.take("stopping publishers")
        time.sleep(0.2)
    say("WARNING: not every publisher reported its count")
    return locust.read("published.json")


def _wait_drained(
    sampler: Sampler,
    baseline: dict[str, Scrape],
    tenants: list[str],
    published: dict[str, Any] | None,
    options: LoadOptions,
) -> bool:
    """Until every replica dispatched every accepted event and holds nothing back.

    With a known count the condition is exact; without one (a publisher did not
    report), dispatch must stand still for a second instead.
    """
    accepted, _, uncertain = accepted_per_tenant(published)
    deadline = time.time() + options.drain_timeout_s
    still: list[float] = []
    while time.time() < deadline:
        sample = sampler.take("draining")
        if sample is not None:
            idle = all(
                s.value("rcm_realtime_queued", tenant_id=t) == 0
                and s.value("rcm_realtime_batches_open", tenant_id=t) == 0
                for s in sample.scrapes.values()
                for t in tenants
            )
            dispatched = [
                s.summed("rcm_realtime_events_dispatched_total", t)
                for s in sample.scrapes.values()
                for t in tenants
            ]
            if published is not None and not uncertain:
                complete = all(
                    s.summed("rcm_realtime_events_dispatched_total", t)
                    >= accepted.get(t, 0)
                    + baseline[url].summed("rcm_realtime_events_dispatched_total", t)
                    for url, s in sample.scrapes.items()
                    for t in tenants
                )
            else:
                still.append(sum(dispatched))
                complete = len(still) >= 3 and len(set(still[-3:])) == 1
            if idle and complete:
                say("hubs drained")
                return True
        time.sleep(0.2)
    return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text("utf-8", errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join("    " + line for line in text.splitlines()[-lines:])
