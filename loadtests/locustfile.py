"""Locust load for the realtime hub: real SSE streams, a publisher, and churn.

User classes (name them on the command line to choose the model):

- ``SseUser``: the closed model. Each user is one person with a Faker name, a tenant
  and a catalog role, on one stream for the whole run; it reconnects when the
  stream ends (``server_shutdown``, a replica going away), honouring ``retry:``
  with jitter and sending ``Last-Event-ID``.
- ``ChurnDriver``: the open model. Clients arrive as a Poisson process and stay an
  exponentially distributed time (mean ``--rcm-session-s``), so that on average
  ``--rcm-clients`` are connected; each driver carries its share of the arrivals.
- ``PublisherUser``: posts single events, batches and ISA-13 interchanges at
  ``--rcm-events-per-s`` in all (shared among ``--rcm-publishers`` publishers).

Each stream reports to Locust under request type ``SSE``: ``connect`` (time to the
response headers), ``first event`` (time to the ``ready`` frame), ``event`` (one per
catalog event; its response time is now minus the envelope's ``occurredAt``, so the
percentiles are end-to-end latency), ``reconnect`` (time without a stream), and
``sequence`` failures for gaps and duplicates.

Tokens are signed here from the hub's key (``--rcm-secret`` or
``RCM_REALTIME_JWT_SECRET``); roles and permissions come from the catalog TOML.

``rcm-realtime load`` drives all of this through a control directory
(``--rcm-control-dir``): it writes ``stop-publishing`` and then ``stop``; the master
(or the only process) writes ``started.json``, ``published.json`` (what the
publishers had accepted once they stopped) and ``clients.json`` (what every
process's clients received), which it reconciles against the hubs' metrics.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import gevent.pool
from locust import FastHttpUser, User, events, task
from locust.exception import StopUser
from locust.runners import LocalRunner, MasterRunner, WorkerRunner

from loadtests._publish import EventFactory, Post
from loadtests._setup import (
    Identities,
    LoadCatalog,
    LoadSetupError,
    Target,
    parse_targets,
    parse_tenants,
    read_catalog,
    sign,
)
from loadtests._stream import SseSession, StreamSettings
from loadtests._tally import ClientTally

log = logging.getLogger("loadtests")

STOP_PUBLISHING = "rcm_stop_publishing"
PUBLISHED = "rcm_published"
TALLY = "rcm_tally"


def _add_arguments(parser: Any) -> None:
    # Custom arguments reach the workers with the spawn order, on any machine.
    parser.add_argument(
        "--rcm-urls",
        env_var="RCM_LOAD_URLS",
        default="",
        help="hub replicas, comma-separated base URLs; streams spread over them",
    )
    parser.add_argument(
        "--rcm-secret",
        env_var="RCM_REALTIME_JWT_SECRET",
        default="",
        is_secret=True,
        help="the hubs' HS256 key, to sign the users' tokens",
    )
    parser.add_argument(
        "--rcm-tenants",
        env_var="RCM_LOAD_TENANTS",
        default="load-a,load-b",
        help="tenants, comma-separated; users and events spread over them",
    )
    parser.add_argument(
        "--rcm-catalog",
        env_var="RCM_LOAD_CATALOG",
        default="",
        help="catalog TOML for roles and permissions (default: the shipped one)",
    )
    parser.add_argument(
        "--rcm-events-per-s",
        env_var="RCM_LOAD_EVENTS_PER_S",
        type=float,
        default=20.0,
        help="events published per second, all publishers together",
    )
    parser.add_argument(
        "--rcm-publishers",
        env_var="RCM_LOAD_PUBLISHERS",
        type=int,
        default=1,
        help="number of PublisherUser instances",
    )
    parser.add_argument(
        "--rcm-clients",
        env_var="RCM_LOAD_CLIENTS",
        type=int,
        default=0,
        help="open model: mean number of connected clients",
    )
    parser.add_argument(
        "--rcm-session-s",
        env_var="RCM_LOAD_SESSION_S",
        type=float,
        default=30.0,
        help="open model: mean time a client stays connected",
    )
    parser.add_argument(
        "--rcm-drivers",
        env_var="RCM_LOAD_DRIVERS",
        type=int,
        default=1,
        help="open model: number of ChurnDriver instances sharing the arrivals",
    )
    parser.add_argument(
        "--rcm-control-dir",
        env_var="RCM_LOAD_CONTROL_DIR",
        default="",
        help="directory through which `rcm-realtime load` steers the run",
    )
    parser.add_argument(
        "--rcm-run-id",
        env_var="RCM_LOAD_RUN_ID",
        default="",
        help="marks this run's events (default: random)",
    )


@dataclass(slots=True)
class RunConfig:
    targets: list[Target]
    secret: str
    tenants: list[str]
    catalog: LoadCatalog
    events_per_s: float
    publishers: int
    clients: int
    session_s: float
    drivers: int
    run_id: str

    @classmethod
    def from_options(cls, options: Any) -> RunConfig:
        if not options.rcm_secret:
            raise LoadSetupError(
                "no signing key: set RCM_REALTIME_JWT_SECRET or pass --rcm-secret"
            )
        for name in ("rcm_publishers", "rcm_drivers"):
            if getattr(options, name) < 1:
                raise LoadSetupError(f"--{name.replace('_', '-')} must be at least 1")
        if options.rcm_events_per_s <= 0 or options.rcm_session_s <= 0:
            raise LoadSetupError("--rcm-events-per-s and --rcm-session-s must be > 0")
        return cls(
            targets=parse_targets(options.rcm_urls),
            secret=options.rcm_secret,
            tenants=parse_tenants(options.rcm_tenants),
            catalog=read_catalog(options.rcm_catalog or None),
            events_per_s=float(options.rcm_events_per_s),
            publishers=int(options.rcm_publishers),
            clients=int(options.rcm_clients),
            session_s=float(options.rcm_session_s),
            drivers=int(options.rcm_drivers),
            run_id=options.rcm_run_id or uuid.uuid4().hex[:12],
        )


@dataclass(slots=True)
class ProcessState:
    """This Locust process's share of the run."""

    config: RunConfig | None = None
    identities: Identities | None = None
    tally: ClientTally = field(default_factory=ClientTally)
    stop_publishing: gevent.event.Event = field(default_factory=gevent.event.Event)
    # Each tenant's users go round the replicas from a random start per process, so
    # every replica carries every tenant.
    users_per_tenant: Counter[str] = field(default_factory=Counter)
    target_offset: int = field(default_factory=lambda: random.randrange(1 << 16))
    tally_sent: bool = False
    # Master (or single process) only: what the others reported.
    aggregate: ClientTally = field(default_factory=ClientTally)
    processes_reported: int = 0
    published: dict[str, dict[str, Any]] = field(default_factory=dict)
    clients_written: bool = False


STATE = ProcessState()


def _config() -> RunConfig:
    if STATE.config is None:
        raise StopUser()
    return STATE.config


def _report(environment: Any) -> Any:
    fire = environment.events.request.fire

    def report(
        name: str, response_time: float, length: int, error: BaseException | None
    ) -> None:
        fire(
            request_type="SSE",
            name=name,
            response_time=response_time,
            response_length=length,
            exception=error,
            context={},
        )

    return report


def new_session(environment: Any) -> SseSession:
    config = _config()
    assert STATE.identities is not None
    identity = STATE.identities.next()
    STATE.users_per_tenant[identity.tenant_id] += 1
    token = sign(
        config.secret,
        subject=identity.subject,
        tenant_id=identity.tenant_id,
        scopes=identity.scopes,
        roles=(identity.role,),
    )
    return SseSession(
        targets=config.targets,
        first_target=STATE.users_per_tenant[identity.tenant_id] + STATE.target_offset,
        identity=identity,
        token=token,
        permission_of=config.catalog.permission_of,
        tally=STATE.tally,
        report=_report(environment),
        settings=StreamSettings(),
    )


class SseUser(User):  # type: ignore[misc]
    """One person on the feed for the whole run (the closed model)."""

    def on_start(self) -> None:
        self.session: SseSession | None = new_session(self.environment)

    @task
    def stream(self) -> None:
        assert self.session is not None
        self.session.run()

    def on_stop(self) -> None:
        session = getattr(self, "session", None)
        if session is not None:
            session.leave()


class ChurnDriver(User):  # type: ignore[misc]
    """Arrivals of the open model: Poisson arrivals, exponential stays."""

    fixed_count = 1

    def on_start(self) -> None:
        self.visitors = gevent.pool.Group()
        self.random = random.Random()

    @task
    def arrive(self) -> None:
        config = _config()
        if config.clients <= 0:
            log.error("ChurnDriver needs --rcm-clients (the mean connected clients)")
            raise StopUser()
        share = config.clients / config.drivers
        arrivals_per_s = share / config.session_s
        # Start in the steady state: a Poisson number of clients already there, each
        # with an exponential stay (memoryless), let in at the spawn rate.
        spawn_rate = float(getattr(self.environment.parsed_options, "spawn_rate", 0))
        pace_s = config.drivers / spawn_rate if spawn_rate > 0 else 0.0
        for _ in range(_poisson(self.random, share)):
            self.visitors.spawn(
                self._visit, self.random.expovariate(1 / config.session_s)
            )
            gevent.sleep(pace_s)
        while True:
            gevent.sleep(self.random.expovariate(arrivals_per_s))
            self.visitors.spawn(
                self._visit, self.random.expovariate(1 / config.session_s)
            )

    def _visit(self, stay_s: float) -> None:
        session = new_session(self.environment)
        try:
            with gevent.Timeout(stay_s, False):
                session.run()
        finally:
            session.leave()

    def on_stop(self) -> None:
        visitors = getattr(self, "visitors", None)
        if visitors is not None:
            visitors.kill(block=True, timeout=StreamSettings().drain_timeout_s + 5)


def _poisson(rng: random.Random, mean: float) -> int:
    """How many arrivals of a rate-``mean`` process fall in one unit of time."""
    count, elapsed = 0, rng.expovariate(mean) if mean > 0 else math.inf
    while elapsed < 1.0:
        count += 1
        elapsed += rng.expovariate(mean)
    return count


class PublisherUser(FastHttpUser):  # type: ignore[misc]
    """Posts events, batches and interchanges at its share of the rate."""

    fixed_count = 1
    host = "http://127.0.0.1"

    @task
    def publish(self) -> None:
        config = _config()
        publisher_id = f"p-{uuid.uuid4().hex[:8]}"
        factory = EventFactory(
            publisher_id=publisher_id,
            run_id=config.run_id,
            tenants=config.tenants,
            catalog=config.catalog,
        )
        headers = {
            "Authorization": "Bearer "
            + sign(
                config.secret,
                subject=f"load-{publisher_id}",
                tenant_id=None,
                scopes=["realtime.publish"],
                roles=["INTEGRATION_SERVICE"],
            )
        }
        rate = config.events_per_s / config.publishers
        targets = itertools.cycle(config.targets)
        accepted: Counter[str] = Counter()
        refused = uncertain = 0
        started = time.monotonic()
        offered = 0
        while not STATE.stop_publishing.is_set():
            for post in factory.next_posts():
                status = self._post(next(targets), post, headers)
                if status == 202:
                    accepted[post.tenant_id] += post.events
                elif status == 0:
                    uncertain += post.events
                else:
                    refused += post.events
                offered += post.events
            delay = started + offered / rate - time.monotonic()
            if delay > 0:
                STATE.stop_publishing.wait(delay)
        self.environment.runner.send_message(
            PUBLISHED,
            {
                "publisher": publisher_id,
                "accepted": dict(accepted),
                "refused": refused,
                "uncertain": uncertain,
                "seconds": round(time.monotonic() - started, 3),
            },
        )
        while True:
            gevent.sleep(3600)

    def _post(self, target: Target, post: Post, headers: dict[str, str]) -> int:
        with self.client.post(
            target.base + post.path,
            json=post.body,
            headers=headers,
            name=f"POST {post.kind}",
            catch_response=True,
        ) as response:
            status = int(response.status_code or 0)
            if status == 202:
                response.success()
            else:
                response.failure(f"{status}: {(response.text or '')[:200]}")
            return status


# -- process wiring ------------------------------------------------------------------


def _on_init(environment: Any, **_: Any) -> None:
    runner = environment.runner
    options = environment.parsed_options
    if options is not None and not isinstance(runner, WorkerRunner):
        try:
            config = RunConfig.from_options(options)
        except LoadSetupError as error:
            log.error("load setup: %s", error)
            raise SystemExit(2) from None
        PublisherUser.fixed_count = config.publishers
        ChurnDriver.fixed_count = config.drivers
    if isinstance(runner, WorkerRunner | LocalRunner):
        runner.register_message(STOP_PUBLISHING, _on_stop_publishing)
    if isinstance(runner, MasterRunner | LocalRunner):
        runner.register_message(PUBLISHED, _on_published)
        runner.register_message(TALLY, _on_tally)
        control = getattr(options, "rcm_control_dir", "") if options else ""
        if control:
            gevent.spawn(_control, environment, Path(control))


def _on_test_start(environment: Any, **_: Any) -> None:
    runner = environment.runner
    STATE.tally_sent = False
    if not isinstance(runner, MasterRunner):
        config = RunConfig.from_options(environment.parsed_options)
        STATE.config = config
        STATE.identities = Identities(config.catalog, config.tenants)
        PublisherUser.host = config.targets[0].base
    if not isinstance(runner, WorkerRunner):
        _write(environment, "started.json", {"at": time.time(), "pid": os.getpid()})


def _on_test_stop(environment: Any, **_: Any) -> None:
    runner = environment.runner
    if isinstance(runner, MasterRunner) or STATE.tally_sent:
        return
    STATE.tally_sent = True
    runner.send_message(TALLY, STATE.tally.to_json())


def _on_quitting(environment: Any, **_: Any) -> None:
    if not isinstance(environment.runner, WorkerRunner):
        _write_clients(environment)


def _on_stop_publishing(environment: Any, msg: Any, **_: Any) -> None:
    STATE.stop_publishing.set()


def _on_published(environment: Any, msg: Any, **_: Any) -> None:
    STATE.published[str(msg.data["publisher"])] = dict(msg.data)
    _write(environment, "published.json", {"publishers": STATE.published})


def _on_tally(environment: Any, msg: Any, **_: Any) -> None:
    STATE.aggregate.merge(msg.data)
    STATE.processes_reported += 1


def _control(environment: Any, directory: Path) -> None:
    """Follow ``rcm-realtime load``'s orders from the control directory."""
    runner = environment.runner
    stop_publishing_sent = False
    while True:
        if not stop_publishing_sent and (directory / "stop-publishing").exists():
            stop_publishing_sent = True
            runner.send_message(STOP_PUBLISHING)
        if (directory / "stop").exists():
            # stop() waits for every worker to stop its users; their tallies arrive
            # before their "stopped" notice, so the sum is complete after it.
            runner.stop()
            _write_clients(environment)
            runner.quit()
            return
        gevent.sleep(0.2)


def _write_clients(environment: Any) -> None:
    if STATE.clients_written:
        return
    STATE.clients_written = True
    document = STATE.aggregate.to_json()
    document["processes_reported"] = STATE.processes_reported
    _write(environment, "clients.json", document)


def _write(environment: Any, name: str, document: dict[str, Any]) -> None:
    options = environment.parsed_options
    directory = getattr(options, "rcm_control_dir", "") if options else ""
    if not directory:
        return
    path = Path(directory) / name
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(document, indent=1, sort_keys=True))
    partial.replace(path)


# Locust's event hooks are untyped; registered here, once, in the order they fire.
_hooks: Any = events
_hooks.init_command_line_parser.add_listener(_add_arguments)
_hooks.init.add_listener(_on_init)
_hooks.test_start.add_listener(_on_test_start)
_hooks.test_stop.add_listener(_on_test_stop)
_hooks.quitting.add_listener(_on_quitting)
