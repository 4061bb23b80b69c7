"""The same state machine as ``test_properties_hub.py``, driving a simulated replica.

The replica is the simulator's own (``sim.World`` with one replica): events reach
it through the simulated bus, it ticks on simulated time at the deadlines its core
returns and right after dispatching, and a close cuts the streams left unread at
the end of its shutdown grace, then the process ends. The machine plays the clients'
side of each stream as it does for the bare core, so the laws are checked on the
simulator's paths with the model unchanged.
"""

from __future__ import annotations

from hypothesis import settings

from hub.core import Catalog, CoreSettings, Envelope
from sim import World, WorldConfig, world_from_mapping

from .stateful import CoreAdapter, HubMachine, HubUnderTest

MACHINE_RUNS = 300
MAX_STEPS = 100_000
# Off the half-second grid of the machine's time steps, so that cutting the streams
# left at close never falls on the same instant as a tick.
SHUTDOWN_GRACE_S = 3.25


def one_replica_world(settings: CoreSettings) -> WorldConfig:
    """A world of one replica, no workload and no clients of its own."""
    return world_from_mapping(
        {
            "seed": 7,
            "duration_s": 3600,
            "start": "2027-01-15T08:00:00Z",
            "hub": {
                "queue_size": settings.queue_size,
                "evict_after_s": settings.evict_after_s,
                "quiet_window_ms": round(settings.quiet_window_s * 1000),
                "retry_ms": settings.retry_ms,
                "shutdown_grace_s": SHUTDOWN_GRACE_S,
                "shutdown_retry_spread_ms": settings.shutdown_retry_spread_ms,
                "replay_max_events": settings.replay_max_events,
                "replay_max_age_s": settings.replay_max_age_s,
                "max_streams_per_tenant": settings.max_streams_per_tenant,
                "max_streams_per_token": settings.max_streams_per_token,
            },
            "topology": {"replicas": 1, "tenants": 1, "subscribers": 0},
            "bus": {"latency": "fixed:0"},
        },
        source="<property tests>",
    )


class SimAdapter(CoreAdapter):
    """A simulated replica; the edge's writes are the clients' reads, as for the
    bare core, and everything else is the simulator's."""

    ticks_on_its_own = True
    shutdown_grace_s: float | None = SHUTDOWN_GRACE_S

    def __init__(self, settings: CoreSettings, catalog: Catalog) -> None:
        self.settings = settings
        self.catalog = catalog
        self.world = World(one_replica_world(settings), catalog=catalog)
        self.replica = self.world.replicas[0]
        self.generation = self.replica.start()
        self.core = self.generation.core
        self.connections = []
        self._announced = 0
        assert self.core.settings == settings

    def now(self) -> float:
        return float(self.world.env.now)

    def publish(self, envelope: Envelope) -> None:
        self.world.publish(envelope)
        self._run_due()

    def advance(self, seconds: float, *, tick: bool = True) -> None:
        env = self.world.env
        target = env.now + seconds
        steps = 0
        while env.peek() <= target:
            env.step()
            steps += 1
            # A replica whose timer re-arms without time moving on would spin here
            # for ever; fail instead, saying where.
            assert steps < MAX_STEPS, (
                f"the simulation took {MAX_STEPS} steps without reaching {target} s "
                f"(it is at {env.now} s)"
            )
        if target > env.now:
            env.run(until=target)

    def completions(self) -> list[tuple[float, Envelope]]:
        new = self.replica.completions[self._announced :]
        self._announced = len(self.replica.completions)
        return [(completion.at_s, completion.envelope) for completion in new]

    def close(self) -> None:
        self.replica.close(restart_after_s=None)
        self._write_farewells(self.connections)

    def after_edge(self) -> None:
        self.generation.settle()
        self._run_due()

    def _run_due(self) -> None:
        """Process what the simulation has due at this very instant."""
        env = self.world.env
        while env.peek() <= env.now:
            env.step()


class SimHubMachine(HubMachine):
    """The simulator's replica, one process on simulated time."""

    def make_hub(self, settings: CoreSettings, catalog: Catalog) -> HubUnderTest:
        return SimAdapter(settings, catalog)


TestSimulatedReplicaKeepsTheLaws = SimHubMachine.TestCase
TestSimulatedReplicaKeepsTheLaws.settings = settings(
    max_examples=max(MACHINE_RUNS, settings().max_examples)
)
