"""The reference hub: the aiohttp edge, bus adapters, tokens and metrics around
``hub.core``."""

from ._bus import (
    Bus,
    FaultBoard,
    MemoryBus,
    MemorySubscription,
    QueuedSubscription,
    Subscription,
    SubscriptionClosed,
)
from ._config import Settings, load_catalog, settings_from_env
from ._diagnose import Diagnosis, Verdict
from ._diagnose_cli import DiagnoseOptions, diagnose_live
from ._publisher import EventPublisher, new_event_id, now_iso
from ._serve import ServeOptions, open_bus, serve, start_replicas
from ._server import Replica, ReplicaState
from ._tokens import Claims, TokenVerifier, issue_token, parse_duration
from .core import LatencyHistogram

__all__ = [
    "Bus",
    "Claims",
    "DiagnoseOptions",
    "Diagnosis",
    "EventPublisher",
    "FaultBoard",
    "LatencyHistogram",
    "MemoryBus",
    "MemorySubscription",
    "QueuedSubscription",
    "Replica",
    "ReplicaState",
    "ServeOptions",
    "Settings",
    "Subscription",
    "SubscriptionClosed",
    "TokenVerifier",
    "Verdict",
    "diagnose_live",
    "issue_token",
    "load_catalog",
    "new_event_id",
    "now_iso",
    "open_bus",
    "parse_duration",
    "serve",
    "settings_from_env",
    "start_replicas",
]
