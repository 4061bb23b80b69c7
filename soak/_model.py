"""What a soak run is asked to do, the timeline it derives, and what it records."""

from __future__ import annotations

import enum
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hub.core import ConfigError, RealtimeError

DEFAULT_BUS = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_DURATION_S = 600.0
CI_DURATION_S = 60.0
MIN_DURATION_S = 30.0
# The RabbitMQ tests hold this file while they run; a soak holds it while it
# restarts the broker, so a restart never lands in the middle of one of them.
BROKER_LOCK = Path(tempfile.gettempdir()) / "rcm-realtime-rabbitmq-tests.lock"
TENANTS = ("soak-north", "soak-south", "soak-east")


@dataclass(frozen=True, slots=True)
class SoakOptions:
    duration_s: float = DEFAULT_DURATION_S
    replicas: int = 3
    clients: int = 60
    events_per_s: float = 100.0
    bus_url: str = DEFAULT_BUS
    report_dir: Path = Path("reports/soak")
    port: int = 0  # first of the replicas' ports; 0 picks free ports
    seed: int = 0
    broker_lock: Path = BROKER_LOCK

    def validate(self) -> None:
        """Raise ConfigError naming the first option that cannot work."""
        if not math.isfinite(self.duration_s) or self.duration_s < MIN_DURATION_S:
            raise ConfigError(
                f"--duration must be at least {MIN_DURATION_S:g}s, so that the "
                "warm-up, the broker restart and the replica kill fit in it"
            )
        if self.replicas < 2:
            raise ConfigError(
                "--replicas must be at least 2: the clients of the killed replica "
                "need another one to reconnect to"
            )
        if self.replicas > 16:
            raise ConfigError("--replicas must be at most 16 on one machine")
        if self.clients < 1 or self.clients > 2000:
            raise ConfigError("--clients must be between 1 and 2000")
        if not math.isfinite(self.events_per_s) or not 0 < self.events_per_s <= 2000:
            raise ConfigError("--events-per-s must be above 0 and at most 2000")
        if not self.bus_url.startswith(("amqp://", "amqps://")):
            raise ConfigError(
                "--bus must be an amqp:// URL: the soak restarts the broker, "
                "which the in-process bus does not have"
            )
        if self.port and not 1024 <= self.port <= 65535 - self.replicas:
            raise ConfigError(f"--port {self.port} leaves no room for the replicas")


@dataclass(frozen=True, slots=True)
class Plan:
    """The run's timeline and client behaviour, derived from its duration so
    that a 60 s run and a 10 min run inject the same faults in proportion."""

    duration_s: float
    warmup_s: float  # memory may grow until then; afterwards it must stay flat
    broker_restart_at_s: float
    broker_down_s: float
    kill_at_s: float
    kill_down_s: float
    kill_slot: int
    session_life_s: float  # mean of the exponential session lifetime
    flapping_share: float
    flap_every_s: float  # mean time between two drops of a flapping client
    dark_min_s: float
    dark_max_s: float
    close_share: float  # sessions that end by closing; the others' tokens expire
    narrow_share: float  # sessions whose token lacks most read scopes
    sample_every_s: float
    scrape_every_s: float
    # The broker restart is given up when the lock is not free by then, so
    # that its outage never overlaps the replica kill.
    lock_deadline_s: float

    @classmethod
    def for_options(cls, options: SoakOptions) -> Plan:
        duration = options.duration_s
        return cls(
            duration_s=duration,
            warmup_s=0.2 * duration,
            broker_restart_at_s=0.3 * duration,
            broker_down_s=min(10.0, max(3.0, 0.02 * duration)),
            kill_at_s=0.5 * duration,
            kill_down_s=min(5.0, max(1.0, 0.01 * duration)),
            kill_slot=1,
            session_life_s=min(90.0, max(10.0, duration / 6)),
            flapping_share=0.25,
            flap_every_s=min(30.0, max(4.0, duration / 30)),
            dark_min_s=1.0,
            # Below the hub's 30 s eviction: a dark client is dropped by its own
            # hand, not evicted, so its stream ends as the soak intends.
            dark_max_s=min(18.0, max(2.0, duration / 15)),
            close_share=0.3,
            narrow_share=0.2,
            sample_every_s=min(2.0, max(0.5, duration / 120)),
            scrape_every_s=min(2.0, max(0.5, duration / 120)),
            lock_deadline_s=0.45 * duration,
        )


class StreamEnd(enum.StrEnum):
    FAREWELL = "farewell"  # the hub ended it: server_shutdown or token_expired, EOF
    CUT = "cut"  # the client dropped its socket (reset, unread data discarded)
    LOST = "lost"  # it ended without a farewell and not by the client's hand
    REFUSED = "refused"  # no stream: the connection or the request was refused


@dataclass(slots=True)
class StreamRecord:
    """One connection of one client session, as the client saw it."""

    session: int
    tenant: str
    slot: int
    instance: str  # the replica process instance that served it, like "r2#1"
    opened_s: float
    resumed: bool  # sent Last-Event-ID
    # The id it resumed after was a batch.completed, which each replica
    # synthesizes at its own point in its sequence.
    resumed_after_completion: bool = False
    status: int = 0
    subscriber_id: str | None = None
    replica_id: str | None = None
    received: int = 0  # event frames (with an id), replays included
    duplicates: int = 0
    duplicate_types: dict[str, int] = field(default_factory=dict)
    reload_notices: int = 0
    farewell: str | None = None
    went_dark: bool = False  # stopped reading before it was cut
    end: StreamEnd = StreamEnd.REFUSED
    closed_s: float = 0.0
    receive_buffer: int = 0  # the client socket's kernel receive buffer, bytes


@dataclass(slots=True)
class FaultRecord:
    """One injected fault: what, where, and the window its effects may last."""

    kind: str  # broker_restart, replica_kill
    target: str
    planned_s: float
    started_s: float | None = None
    ended_s: float | None = None  # every replica ready again
    injected: bool = False
    error: str | None = None
    steps: dict[str, float] = field(default_factory=dict)
    streams_open: int = 0

    def window(self, margin_s: float) -> tuple[float, float] | None:
        if self.started_s is None:
            return None
        end = self.ended_s if self.ended_s is not None else float("inf")
        return (self.started_s - margin_s, end + margin_s)


@dataclass(slots=True)
class InstanceRecord:
    """One process of one replica slot; a restart after SIGKILL is a new one."""

    slot: int
    number: int
    replica_id: str
    port: int
    pid: int
    log_path: Path
    spawned_s: float
    ready_s: float | None = None
    killed_s: float | None = None
    stopped_s: float | None = None
    exit_code: int | None = None

    @property
    def key(self) -> str:
        return f"{self.replica_id}#{self.number}"


class SoakError(RealtimeError):
    """The soak could not run as planned (a hub would not start, the broker could
    not be reached). A check that fails is a verdict, not this error."""
