"""Client and interchange truth, defined once for both targets.

A target reports what each client read (event ids and how often), when it
connected, and which events the hubs made during the run (recorded failures,
synthesized completions); the records here turn that into the figures the
expectations judge, the same way on the simulator and on real hubs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from hub import load_catalog
from hub.core import Catalog, CatalogRow

from ._model import SubscriberGroup
from ._result import ClientRecord, InterchangeRecord
from ._schedule import Schedule

# What every run starts from: the shipped catalog.
SHIPPED_CATALOG: Catalog = load_catalog()


@dataclass(slots=True)
class CatalogHistory:
    """The catalog at the start of a run, and the rows deployed during it."""

    changes: list[tuple[float, CatalogRow]] = field(default_factory=list)

    def deploy(self, at_s: float, row: CatalogRow) -> None:
        self.changes.append((at_s, row))

    def permission_at(self, event_type: str, at_s: float) -> str | None:
        """The permission an event type needed when it was published: the latest
        row deployed by then, else the shipped catalog's row."""
        permission = None
        row = SHIPPED_CATALOG.row(event_type)
        if row is not None:
            permission = row.required_permission
        for changed_at, deployed in self.changes:
            if changed_at <= at_s and deployed.type == event_type:
                permission = deployed.required_permission
        return permission

    def catalog_at(self, at_s: float) -> Catalog:
        """The catalog in force at ``at_s``."""
        catalog = SHIPPED_CATALOG
        for changed_at, deployed in self.changes:
            if changed_at <= at_s:
                catalog = catalog.with_row(deployed)
        return catalog


def group_scopes(group: SubscriberGroup) -> frozenset[str]:
    """What a group's tokens hold: its scopes and those its roles seed."""
    return frozenset(group.scopes) | SHIPPED_CATALOG.scopes_for_roles(group.roles)


@dataclass(frozen=True, slots=True)
class HubMade:
    """Events the hubs made during a run, by id, with their tenant."""

    failures: Mapping[str, str]
    completions: Mapping[str, str]


def client_record(
    *,
    name: str,
    group: SubscriberGroup,
    schedule: Schedule,
    history: CatalogHistory,
    made: HubMade,
    received: Mapping[str, int],
    connect_times: list[float],
    shutdown_frames: int,
    reload_notices: int,
) -> ClientRecord:
    """One client's truth.

    Expected: its tenant's events its scopes allow (by the catalog in force at
    publish time) published from its first connection on, and every recorded
    failure of its tenant once it connected (behind ``batches.read``). Allowed,
    besides: the same events before its first connection and the completions
    synthesized for its tenant; anything else it read leaked.
    """
    scopes = group_scopes(group)
    first = connect_times[0] if connect_times else None
    mine = group.tenant
    expected: set[str] = set()
    allowed: set[str] = set()
    for event in schedule.events:
        if event.tenant != mine:
            continue
        permission = history.permission_at(event.type, event.at_s)
        if permission is None or permission not in scopes:
            continue
        allowed.add(event.event_id)
        if first is not None and event.at_s >= first:
            expected.add(event.event_id)
    if "batches.read" in scopes:
        failures = {i for i, tenant in made.failures.items() if tenant == mine}
        allowed |= failures
        if first is not None:
            expected |= failures
        allowed |= {i for i, tenant in made.completions.items() if tenant == mine}
    read = set(received)
    return ClientRecord(
        name=name,
        group=group.name,
        tenant=mine,
        behaviour=group.behaviour.value,
        expected=len(expected),
        received=sum(received.values()),
        missed=len(expected - read),
        leaked=len(read - allowed),
        duplicates=sum(count - 1 for count in received.values()),
        shutdown_frames=shutdown_frames,
        reload_notices=reload_notices,
        connect_times=connect_times,
    )


def interchange_records(
    schedule: Schedule, completions: Iterable[tuple[float, str, str, str]]
) -> list[InterchangeRecord]:
    """Each interchange of the schedule with the times ``batch.completed`` came
    for it: ``completions`` holds (time, tenant, trading partner, isa13), the
    first sighting of each completion id across replicas."""
    records = {
        (i.tenant, i.trading_partner, i.isa13): InterchangeRecord(
            i.tenant, i.trading_partner, i.isa13, i.last_event_s
        )
        for i in schedule.interchanges
    }
    for at_s, tenant, partner, isa13 in sorted(completions):
        record = records.get((tenant, partner, isa13))
        if record is not None:
            record.completions.append(at_s)
    return list(records.values())
