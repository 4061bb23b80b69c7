"""The simulator: a SimPy world of replicas, a bus, clients and operations, built
around the hub's own core, so its metrics are the hub's metrics.

    from sim import World, load_world

    result = World(load_world("world.toml")).run()
    print(result.summary_table())
    result.write("out/")
"""

from hub.core import LATENCY_BUCKETS

from ._bus import SubscriptionStatistics
from ._config import (
    AdminDisconnect,
    BusModel,
    Checks,
    ClientMix,
    Clients,
    CpuModel,
    DeployNewType,
    Emitter,
    FaultWindow,
    HubSettings,
    Interchanges,
    Operation,
    RollingDeploy,
    SubscriberGroup,
    Topology,
    Workload,
    WorldConfig,
    WorldConfigError,
    combined_faults,
    load_world,
    world_from_mapping,
)
from ._cpu import (
    CpuRecords,
    CpuStatistics,
    ReplicaCpu,
    spread_latencies,
    weighted_quantile,
)
from ._population import ClientKind
from ._random import Distribution, parse_distribution
from ._report import (
    SERIES_COLUMNS,
    BatchTruth,
    ClientTruth,
    GenerationRun,
    LedgerViolation,
    SeriesRecord,
    SimulationResult,
)
from ._world import Progress, SimClock, World, run_world

__all__ = [
    "LATENCY_BUCKETS",
    "SERIES_COLUMNS",
    "AdminDisconnect",
    "BatchTruth",
    "BusModel",
    "Checks",
    "ClientKind",
    "ClientMix",
    "ClientTruth",
    "Clients",
    "CpuModel",
    "CpuRecords",
    "CpuStatistics",
    "DeployNewType",
    "Distribution",
    "Emitter",
    "FaultWindow",
    "GenerationRun",
    "HubSettings",
    "Interchanges",
    "LedgerViolation",
    "Operation",
    "Progress",
    "ReplicaCpu",
    "RollingDeploy",
    "SeriesRecord",
    "SimClock",
    "SimulationResult",
    "SubscriberGroup",
    "SubscriptionStatistics",
    "Topology",
    "Workload",
    "World",
    "WorldConfig",
    "WorldConfigError",
    "combined_faults",
    "load_world",
    "parse_distribution",
    "run_world",
    "spread_latencies",
    "weighted_quantile",
    "world_from_mapping",
]
