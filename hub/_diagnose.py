"""The stale-dashboard escalation, as pure analysis over parsed scrapes.

Input: for each replica, two scrapes of ``/metrics`` taken a few seconds apart and,
when the operator has an admin token, the tenant's subscriber states. Output: a
``Diagnosis`` with one verdict, the findings behind it in escalation order, and the
evidence lines an operator reads. The I/O that gathers the input lives elsewhere.

The escalation order is the runbook's: nobody connected; permission drops (a stale
role, or a new type no role seeds); backpressure and evictions (a slow client or a
flapping network); a replica that dispatches less than its peers or sits on a bus
backlog (its subscription); events dropped as ``unknown_type`` (a missing catalog
row); replicas that could not be read. The verdict is the first finding.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from .core import Catalog, ScrapeError

# A replica lags when it dispatched less than this share of its busiest peer.
LAG_RATIO = 0.5
# Below this many events at the busiest replica, rate differences are noise.
LAG_MIN_EVENTS = 5
# A backlog this large is a finding even while the replica still dispatches.
BACKLOG_HIGH = 1000

DROP_REASONS = ("permission", "backpressure", "disconnected", "unknown_type")
DISCONNECT_REASONS = ("client", "evicted", "admin", "shutdown")


class Verdict(enum.StrEnum):
    NEVER_CONNECTED = "never_connected"  # no replica has a stream of the tenant
    STALE_ROLE = "stale_role"  # subscribers lack a scope some role would seed
    UNSEEDED_TYPE = "unseeded_type"  # a type's scope is seeded by no role at all
    BACKPRESSURE = "backpressure"  # slow client or flapping network
    STALLED_REPLICA = "stalled_replica"  # a replica's bus subscription lags
    UNKNOWN_TYPE = "unknown_type"  # events whose type has no catalog row
    UNREACHABLE = "unreachable"  # some replicas could not be read
    HEALTHY = "healthy"  # nothing found
    UNDIAGNOSABLE = "undiagnosable"  # no replica could be read


class Basis(enum.StrEnum):
    WINDOW = "window"  # counter increases between the two scrapes
    SINCE_START = "since_start"  # the window was quiet: counts since replica start


# -- scrapes -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TenantCounts:
    """One tenant's counters on one replica (totals, or increases over a window)."""

    dispatched: Mapping[str, float] = field(default_factory=dict)
    dropped: Mapping[str, float] = field(default_factory=dict)
    disconnects: Mapping[str, float] = field(default_factory=dict)
    fanout: float = 0.0
    delivered: float = 0.0

    @property
    def events(self) -> float:
        return sum(self.dispatched.values())

    def drop(self, reason: str) -> float:
        return self.dropped.get(reason, 0.0)

    def disconnect(self, reason: str) -> float:
        return self.disconnects.get(reason, 0.0)

    def active(self) -> bool:
        return self.events > 0 or self.fanout > 0 or any(self.dropped.values())

    def since(self, earlier: TenantCounts) -> TenantCounts:
        """Increases since ``earlier``; a counter that went down was reset by a
        restart between the scrapes, so its whole new value is the increase."""
        return TenantCounts(
            dispatched=_increase(self.dispatched, earlier.dispatched),
            dropped=_increase(self.dropped, earlier.dropped),
            disconnects=_increase(self.disconnects, earlier.disconnects),
            fanout=_grown(self.fanout, earlier.fanout),
            delivered=_grown(self.delivered, earlier.delivered),
        )


def _grown(now: float, before: float) -> float:
    return now - before if now >= before else now


def _increase(
    now: Mapping[str, float], before: Mapping[str, float]
) -> dict[str, float]:
    return {key: _grown(value, before.get(key, 0.0)) for key, value in now.items()}


@dataclass(frozen=True, slots=True)
class Scrape:
    """One replica's exposition at one instant, for every tenant."""

    taken_at: float
    subscribers: Mapping[str, float]
    queued: Mapping[str, float]
    tenants: Mapping[str, TenantCounts]
    bus_backlog: float

    def tenant(self, tenant_id: str) -> TenantCounts:
        return self.tenants.get(tenant_id, TenantCounts())

    def events_all_tenants(self) -> float:
        return sum(counts.events for counts in self.tenants.values())


def parse_scrape(text: str, *, taken_at: float) -> Scrape:
    """The hub's metrics from Prometheus text; anything else raises ScrapeError."""
    subscribers: dict[str, float] = {}
    queued: dict[str, float] = {}
    dispatched: dict[str, dict[str, float]] = {}
    dropped: dict[str, dict[str, float]] = {}
    disconnects: dict[str, dict[str, float]] = {}
    fanout: dict[str, float] = {}
    delivered: dict[str, float] = {}
    backlog: float | None = None
    try:
        families = list(text_string_to_metric_families(text))
    except (ValueError, TypeError, IndexError) as error:
        raise ScrapeError(f"the answer is not Prometheus text ({error})") from error
    for family in families:
        for sample in family.samples:
            labels = sample.labels
            tenant = labels.get("tenant_id", "")
            value = float(sample.value)
            match sample.name:
                case "rcm_realtime_subscribers":
                    subscribers[tenant] = value
                case "rcm_realtime_queued":
                    queued[tenant] = value
                case "rcm_realtime_events_dispatched_total":
                    per_type = dispatched.setdefault(tenant, {})
                    per_type[labels.get("event_type", "")] = value
                case "rcm_realtime_dropped_total":
                    dropped.setdefault(tenant, {})[labels.get("reason", "")] = value
                case "rcm_realtime_disconnects_total":
                    reason = labels.get("reason", "")
                    disconnects.setdefault(tenant, {})[reason] = value
                case "rcm_realtime_fanout_total":
                    fanout[tenant] = value
                case "rcm_realtime_delivered_total":
                    delivered[tenant] = value
                case "rcm_realtime_bus_backlog":
                    backlog = value
    if backlog is None:
        raise ScrapeError(
            "the answer has no rcm_realtime_bus_backlog: is this an rcm-realtime hub?"
        )
    names = set(subscribers) | set(dispatched) | set(dropped) | set(fanout)
    tenants = {
        name: TenantCounts(
            dispatched=dispatched.get(name, {}),
            dropped=dropped.get(name, {}),
            disconnects=disconnects.get(name, {}),
            fanout=fanout.get(name, 0.0),
            delivered=delivered.get(name, 0.0),
        )
        for name in names
    }
    return Scrape(taken_at, subscribers, queued, tenants, backlog)


# -- readings ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubscriberView:
    """One open stream of the tenant, as the admin endpoint lists it."""

    subscriber_id: str
    replica_id: str
    user: str
    scopes: frozenset[str]
    roles: frozenset[str]
    state: str
    queued: int
    delivered: int
    dropped_permission: int
    dropped_backpressure: int
    backpressure_seconds: float | None
    connected_seconds: float

    @classmethod
    def from_json(cls, item: Mapping[str, Any]) -> SubscriberView:
        """One member of the admin listing; raises ScrapeError when malformed."""
        try:
            pressure = item.get("backpressureSeconds")
            return cls(
                subscriber_id=str(item["subscriberId"]),
                replica_id=str(item["replicaId"]),
                user=str(item.get("user", "")),
                scopes=frozenset(str(s) for s in item.get("scopes", [])),
                roles=frozenset(str(r) for r in item.get("roles", [])),
                state=str(item.get("state", "")),
                queued=int(item.get("queued", 0)),
                delivered=int(item.get("delivered", 0)),
                dropped_permission=int(item.get("droppedPermission", 0)),
                dropped_backpressure=int(item.get("droppedBackpressure", 0)),
                backpressure_seconds=None if pressure is None else float(pressure),
                connected_seconds=float(item.get("connectedSeconds", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ScrapeError(
                f"the subscriber listing has a malformed member ({error})"
            ) from error

    def as_json(self) -> dict[str, Any]:
        return {
            "subscriberId": self.subscriber_id,
            "replicaId": self.replica_id,
            "user": self.user,
            "scopes": sorted(self.scopes),
            "roles": sorted(self.roles),
            "state": self.state,
            "queued": self.queued,
            "delivered": self.delivered,
            "droppedPermission": self.dropped_permission,
            "droppedBackpressure": self.dropped_backpressure,
            "backpressureSeconds": self.backpressure_seconds,
            "connectedSeconds": self.connected_seconds,
        }


@dataclass(frozen=True, slots=True)
class ReplicaReading:
    """What could be read from one replica URL."""

    url: str
    replica_id: str | None = None
    first: Scrape | None = None
    second: Scrape | None = None
    problem: str | None = None  # why the metrics could not be read (in full)
    subscribers: tuple[SubscriberView, ...] | None = None  # None: not asked or refused
    admin_problem: str | None = None

    @property
    def name(self) -> str:
        return f"{self.replica_id} ({self.url})" if self.replica_id else self.url

    @property
    def readable(self) -> bool:
        return self.first is not None or self.second is not None

    def scrapes(self) -> tuple[Scrape, Scrape]:
        """First and last scrape; a replica read once counts with a zero window."""
        first = self.first or self.second
        last = self.second or self.first
        assert first is not None and last is not None
        return first, last


# -- the diagnosis -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    verdict: Verdict
    summary: str
    evidence: tuple[str, ...]
    next_step: str

    def as_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.value,
            "summary": self.summary,
            "evidence": list(self.evidence),
            "nextStep": self.next_step,
        }


@dataclass(frozen=True, slots=True)
class ReplicaSummary:
    """One replica's figures for the tenant, as the evidence table shows them."""

    url: str
    replica_id: str | None
    read: bool  # False when its metrics could not be read at all
    problem: str | None
    subscribers: float = 0.0
    counts: TenantCounts = field(default_factory=TenantCounts)
    totals: TenantCounts = field(default_factory=TenantCounts)
    events_all_tenants: float = 0.0  # every tenant's events, over the window
    bus_backlog: float = 0.0
    bus_backlog_before: float = 0.0
    queued: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.replica_id} ({self.url})" if self.replica_id else self.url

    def as_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "replicaId": self.replica_id,
            "read": self.read,
            "problem": self.problem,
            "subscribers": self.subscribers,
            "dispatched": dict(sorted(self.counts.dispatched.items())),
            "dispatchedAllTenantsInWindow": self.events_all_tenants,
            "fanout": self.counts.fanout,
            "delivered": self.counts.delivered,
            "dropped": dict(sorted(self.counts.dropped.items())),
            "disconnects": dict(sorted(self.counts.disconnects.items())),
            "queued": self.queued,
            "busBacklog": self.bus_backlog,
            "busBacklogBefore": self.bus_backlog_before,
        }


PROBLEM_EXIT = 1
UNDIAGNOSABLE_EXIT = 2


@dataclass(frozen=True, slots=True)
class Diagnosis:
    tenant: str
    verdict: Verdict
    findings: tuple[Finding, ...]
    replicas: tuple[ReplicaSummary, ...]
    notes: tuple[str, ...]  # per-replica problems and caveats, one line each
    window_s: float
    basis: Basis
    subscribers: tuple[SubscriberView, ...] | None

    @property
    def exit_status(self) -> int:
        if self.verdict is Verdict.UNDIAGNOSABLE:
            return UNDIAGNOSABLE_EXIT
        return 0 if self.verdict is Verdict.HEALTHY else PROBLEM_EXIT

    @property
    def summary(self) -> str:
        return self.findings[0].summary if self.findings else ""

    @property
    def next_step(self) -> str:
        return self.findings[0].next_step if self.findings else ""

    def as_json(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "verdict": self.verdict.value,
            "summary": self.summary,
            "nextStep": self.next_step,
            "exitStatus": self.exit_status,
            "windowSeconds": round(self.window_s, 3),
            "basis": self.basis.value,
            "findings": [finding.as_json() for finding in self.findings],
            "replicas": [replica.as_json() for replica in self.replicas],
            "notes": list(self.notes),
            "subscribers": None
            if self.subscribers is None
            else [s.as_json() for s in self.subscribers],
        }


def diagnose(
    tenant: str, readings: Sequence[ReplicaReading], catalog: Catalog
) -> Diagnosis:
    """Walk the escalation path over what was read; the first finding is the verdict."""
    notes = [f"{r.name}: {r.problem}" for r in readings if r.problem and r.readable]
    notes += [f"{r.name}: {r.admin_problem}" for r in readings if r.admin_problem]
    readable = [r for r in readings if r.readable]
    if not readable:
        return _undiagnosable(tenant, readings, notes)

    window_s = max(last.taken_at - first.taken_at for first, last in _pairs(readable))
    window = [_summary(tenant, r, windowed=True) for r in readable]
    basis = Basis.WINDOW
    if not any(s.counts.active() for s in window):
        # No event of the tenant moved in the window: judge on the counts since each
        # replica started, and say so, rather than call a quiet tenant healthy.
        basis = Basis.SINCE_START
        window = [_summary(tenant, r, windowed=False) for r in readable]
        notes.append(
            f"no event of {tenant} moved in the {window_s:.1f} s window; the figures "
            "below count since each replica started"
        )
    summaries = window + [
        ReplicaSummary(r.url, r.replica_id, read=False, problem=r.problem)
        for r in readings
        if not r.readable
    ]
    listed = [s for r in readable if r.subscribers is not None for s in r.subscribers]
    subscribers = (
        tuple(listed) if any(r.subscribers is not None for r in readable) else None
    )
    context = _Context(tenant, catalog, window, basis, window_s, subscribers)

    findings: list[Finding] = []
    for check in (
        _never_connected,
        _permission,
        _backpressure,
        _stalled,
        _unknown_type,
    ):
        findings.extend(check(context))
    unreachable = [r for r in readings if not r.readable]
    if unreachable:
        findings.append(_unreachable(unreachable, len(readings)))
    verdict = findings[0].verdict if findings else Verdict.HEALTHY
    if verdict in (Verdict.HEALTHY, Verdict.UNREACHABLE):
        # What the readable replicas say still matters when some are missing.
        findings.append(_healthy(context))
    return Diagnosis(
        tenant=tenant,
        verdict=verdict,
        findings=tuple(findings),
        replicas=tuple(summaries),
        notes=tuple(notes),
        window_s=window_s,
        basis=basis,
        subscribers=subscribers,
    )


def _pairs(readings: Iterable[ReplicaReading]) -> Iterable[tuple[Scrape, Scrape]]:
    return (r.scrapes() for r in readings)


def _summary(tenant: str, reading: ReplicaReading, *, windowed: bool) -> ReplicaSummary:
    first, last = reading.scrapes()
    totals = last.tenant(tenant)
    counts = totals.since(first.tenant(tenant)) if windowed else totals
    events_all = _grown(last.events_all_tenants(), first.events_all_tenants())
    return ReplicaSummary(
        url=reading.url,
        replica_id=reading.replica_id,
        read=True,
        problem=reading.problem,
        subscribers=last.subscribers.get(tenant, 0.0),
        counts=counts,
        totals=totals,
        events_all_tenants=events_all,
        bus_backlog=last.bus_backlog,
        bus_backlog_before=first.bus_backlog,
        queued=last.queued.get(tenant, 0.0),
    )


def _undiagnosable(
    tenant: str, readings: Sequence[ReplicaReading], notes: list[str]
) -> Diagnosis:
    refused = [r for r in readings if r.problem and "refused" in r.problem]
    if refused and len(refused) == len(readings):
        next_step = (
            "pass the hub's metrics bearer (--token, METRICS_BEARER or "
            "RCM_REALTIME_METRICS_BEARER) or a token with metrics.read"
        )
    else:
        next_step = (
            "check the URLs (one per replica, like http://host:port) and that the "
            "replicas run: /healthz answers while the process is up"
        )
    finding = Finding(
        Verdict.UNDIAGNOSABLE,
        f"no replica of the {len(readings)} given could be read",
        tuple(f"{r.name}: {r.problem}" for r in readings),
        next_step,
    )
    return Diagnosis(
        tenant=tenant,
        verdict=Verdict.UNDIAGNOSABLE,
        findings=(finding,),
        replicas=tuple(
            ReplicaSummary(r.url, r.replica_id, read=False, problem=r.problem)
            for r in readings
        ),
        notes=tuple(notes),
        window_s=0.0,
        basis=Basis.WINDOW,
        subscribers=None,
    )


# -- the checks --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Context:
    tenant: str
    catalog: Catalog
    replicas: list[ReplicaSummary]  # the readable ones
    basis: Basis
    window_s: float
    subscribers: tuple[SubscriberView, ...] | None

    @property
    def span(self) -> str:
        if self.basis is Basis.WINDOW:
            return f"in {self.window_s:.1f} s"
        return "since the replicas started"

    def count(self, value: float) -> str:
        """A count, with its rate per second when it comes from the window."""
        text = _number(value)
        if self.basis is Basis.WINDOW and self.window_s > 0 and value:
            return f"{text} ({value / self.window_s:.1f}/s)"
        return text

    def dropped(self, reason: str) -> float:
        return sum(r.counts.drop(reason) for r in self.replicas)

    def disconnected(self, reason: str) -> float:
        return sum(r.counts.disconnect(reason) for r in self.replicas)

    def reached(self) -> dict[str, float]:
        """Event types that reached the tenant: every replica takes every event
        from its own subscription, so the busiest replica's count is the count."""
        merged: dict[str, float] = {}
        for replica in self.replicas:
            for event_type, count in replica.counts.dispatched.items():
                if count > merged.get(event_type, 0.0):
                    merged[event_type] = count
        return dict(sorted(merged.items()))


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def _plural(value: float, noun: str) -> str:
    return f"{_number(value)} {noun}{'' if value == 1 else 's'}"


def _names(items: Iterable[str]) -> str:
    listed = sorted(items)
    return ", ".join(listed) if listed else "none"


def _never_connected(ctx: _Context) -> list[Finding]:
    if any(r.subscribers > 0 for r in ctx.replicas):
        return []
    evidence = []
    closed: dict[str, float] = {}
    for replica in ctx.replicas:
        line = f"{replica.name}: 0 subscribers of {ctx.tenant}"
        events = replica.counts.events
        if events:
            line += f"; {ctx.count(events)} events of it dispatched {ctx.span}"
        evidence.append(line)
        for reason, count in replica.totals.disconnects.items():
            closed[reason] = closed.get(reason, 0.0) + count
    ever_seen = any(
        r.totals.active() or any(r.totals.disconnects.values()) for r in ctx.replicas
    )
    if not ever_seen:
        summary = (
            f"no replica has ever seen tenant {ctx.tenant}: no stream, no event "
            "(the client never connected)"
        )
    elif any(closed.values()):
        ended = ", ".join(f"{_number(v)} {k}" for k, v in sorted(closed.items()) if v)
        summary = (
            f"no replica holds a stream of {ctx.tenant} now; streams that opened "
            "earlier closed and none came back"
        )
        evidence.append(f"streams of {ctx.tenant} closed since start: {ended}")
    else:
        summary = (
            f"no replica holds a stream of {ctx.tenant}: events arrive, nobody "
            "listens (the client never connected)"
        )
    return [
        Finding(
            Verdict.NEVER_CONNECTED,
            summary,
            tuple(evidence),
            "check the client side: the browser's token must carry tenant_id "
            f"'{ctx.tenant}', the page must reach /v1/realtime/stream (proxy, "
            "firewall), and the hub's log shows request_refused lines for tokens it "
            "turned away",
        )
    ]


def _permission(ctx: _Context) -> list[Finding]:
    drops = ctx.dropped("permission")
    if not drops:
        return []
    reached = ctx.reached()
    needs: dict[str, list[str]] = {}  # permission -> types that reached the tenant
    uncatalogued: list[str] = []
    for event_type in reached:
        row = ctx.catalog.rows.get(event_type)
        if row is None:
            uncatalogued.append(event_type)
        else:
            needs.setdefault(row.required_permission, []).append(event_type)

    evidence = [
        f"{r.name}: {ctx.count(r.counts.drop('permission'))} permission drops "
        f"{ctx.span}"
        for r in ctx.replicas
        if r.counts.drop("permission")
    ]
    lacking: dict[str, list[SubscriberView]] = {}
    if ctx.subscribers:
        for permission in needs:
            missing = [s for s in ctx.subscribers if permission not in s.scopes]
            if missing:
                lacking[permission] = missing
    confirmed = bool(lacking)
    suspects = lacking if confirmed else {p: [] for p in needs}

    for event_type, count in reached.items():
        row = ctx.catalog.rows.get(event_type)
        if row is None:
            evidence.append(
                f"{event_type} reached {ctx.tenant} {_number(count)} times "
                f"{ctx.span}; the catalog diagnose read ({ctx.catalog.source}) has "
                "no row for it: pass the deployed one with --catalog"
            )
        elif row.required_permission in suspects:
            seeding = _names(ctx.catalog.roles_seeding(row.required_permission))
            evidence.append(
                f"{event_type} reached {ctx.tenant} {_number(count)} times "
                f"{ctx.span}; it needs {row.required_permission}, seeded by {seeding}"
            )

    findings = []
    unseeded = [p for p in suspects if not ctx.catalog.roles_seeding(p)]
    seeded = [p for p in suspects if ctx.catalog.roles_seeding(p)]
    if unseeded:
        types = [t for p in unseeded for t in needs[p]]
        lines = list(evidence)
        for permission in unseeded:
            if confirmed:
                lines.append(
                    f"{len(lacking[permission])} of {len(ctx.subscribers or ())} "
                    f"subscribers lack {permission}; no role in the catalog seeds it"
                )
        summary = (
            f"{_names(types)} reached {ctx.tenant} but need "
            f"{_names(unseeded)}, which no role seeds, so no token carries it: "
            "an unseeded new type"
        )
        if not confirmed:
            summary += " (inferred; --admin-token shows each subscriber's scopes)"
        findings.append(
            Finding(
                Verdict.UNSEEDED_TYPE,
                summary,
                tuple(lines),
                f"add {_names(unseeded)} to the scopes of the roles that should see "
                f"{_names(types)} in the catalog's [roles] table, deploy it, and have "
                "those users sign in again for tokens that carry it",
            )
        )
    if seeded or (not unseeded and not findings):
        findings.append(_stale_role(ctx, seeded, needs, lacking, evidence, confirmed))
    if uncatalogued and not findings:
        findings.append(_stale_role(ctx, [], needs, lacking, evidence, confirmed))
    return findings


def _stale_role(
    ctx: _Context,
    seeded: list[str],
    needs: Mapping[str, list[str]],
    lacking: Mapping[str, list[SubscriberView]],
    evidence: list[str],
    confirmed: bool,
) -> Finding:
    lines = list(evidence)
    if confirmed:
        total = len(ctx.subscribers or ())
        for permission in seeded:
            missing = lacking[permission]
            roles = ctx.catalog.roles_seeding(permission)
            lines.append(
                f"{len(missing)} of {total} subscribers lack {permission} "
                f"(needed by {_names(needs[permission])}); roles that seed it: "
                f"{_names(roles)}"
            )
            for view in missing:
                holds = sorted(set(roles) & view.roles)
                why = (
                    f"holds {', '.join(holds)}, so the token predates the role table"
                    if holds
                    else f"roles {_names(view.roles)}"
                )
                lines.append(
                    f"  {view.subscriber_id} on {view.replica_id} "
                    f"(user {view.user or '?'}): lacks {permission}; {why}"
                )
        permissions = _names(seeded)
        types = _names(t for p in seeded for t in needs[p])
        roles_text = _names({r for p in seeded for r in ctx.catalog.roles_seeding(p)})
        summary = (
            f"subscribers of {ctx.tenant} lack {permissions}, so {types} do not reach "
            f"them: a stale role (roles that seed it: {roles_text})"
        )
        next_step = (
            f"if these users should see {types}, give them one of {roles_text}; a "
            "user who already holds one signed in before the role table changed and "
            "needs a fresh sign-in for a token with the scope"
        )
    else:
        candidates = ", ".join(
            f"{_names(types)} ({permission})" for permission, types in needs.items()
        )
        summary = (
            f"subscribers of {ctx.tenant} lack the scope of some of the types that "
            f"reach them: likely a stale role (candidates: {candidates or 'unknown'})"
        )
        next_step = (
            "rerun with --admin-token to see which subscriber lacks which scope; "
            "then give the user a role that seeds it, or have them sign in again if "
            "they already hold it"
        )
        if not ctx.subscribers and ctx.subscribers is not None:
            next_step = (
                "the streams that dropped have closed; when the user is back, rerun "
                "with --admin-token to see which scope their token lacks"
            )
    return Finding(Verdict.STALE_ROLE, summary, tuple(lines), next_step)


def _backpressure(ctx: _Context) -> list[Finding]:
    dropped = ctx.dropped("backpressure")
    evicted = ctx.disconnected("evicted")
    if not dropped and not evicted:
        return []
    evidence = []
    for r in ctx.replicas:
        c = r.counts
        if not (c.drop("backpressure") or c.disconnect("evicted")):
            continue
        evidence.append(
            f"{r.name}: {ctx.count(c.drop('backpressure'))} backpressure drops, "
            f"{_number(c.disconnect('evicted'))} evictions, "
            f"{_number(c.disconnect('client'))} client disconnects, "
            f"{_number(c.drop('disconnected'))} frames dropped on disconnect, "
            f"{_number(r.queued)} queued now"
        )
    for view in ctx.subscribers or ():
        if view.backpressure_seconds is None and not view.dropped_backpressure:
            continue
        pressed = (
            f"backpressured for {view.backpressure_seconds:.1f} s"
            if view.backpressure_seconds is not None
            else "reading again"
        )
        evidence.append(
            f"  {view.subscriber_id} on {view.replica_id} (user {view.user or '?'}): "
            f"{pressed}, {view.queued} queued, {view.dropped_backpressure} dropped"
        )
    return [
        Finding(
            Verdict.BACKPRESSURE,
            f"{_number(dropped)} frames for {ctx.tenant} were dropped on backpressure "
            f"and {_number(evicted)} streams evicted {ctx.span}: a client that stops "
            "reading (a slow machine or a flapping network)",
            tuple(evidence),
            "find the user (the admin listing, or subscriber_evicted lines in the "
            "hub's log) and check their network path: VPN, proxy buffering, a "
            "sleeping laptop; the browser reconnects on its own after an eviction. "
            "When many users show it at once, look at the replica's host and "
            "RCM_REALTIME_QUEUE_SIZE",
        )
    ]


def _stalled(ctx: _Context) -> list[Finding]:
    busiest = max(r.events_all_tenants for r in ctx.replicas)
    findings = []
    for r in ctx.replicas:
        took = r.events_all_tenants
        lagging = (
            len(ctx.replicas) > 1
            and busiest >= LAG_MIN_EVENTS
            and took < LAG_RATIO * busiest
        )
        not_draining = r.bus_backlog > 0 and r.bus_backlog >= r.bus_backlog_before
        stuck = not_draining and (took == 0 or r.bus_backlog >= BACKLOG_HIGH)
        if not (lagging or stuck):
            continue
        window = f"in {ctx.window_s:.1f} s"
        evidence = [
            f"{r.name}: dispatched {_number(took)} events (all tenants) {window}; "
            f"the busiest replica dispatched {_number(busiest)}",
            f"{r.name}: bus backlog {_number(r.bus_backlog_before)} then "
            f"{_number(r.bus_backlog)}" + (" (not draining)" if not_draining else ""),
            f"{r.name}: holds {_number(r.subscribers)} of {ctx.tenant}'s subscribers",
        ]
        reason = []
        if lagging:
            reason.append(
                f"dispatched {_number(took)} events against up to "
                f"{_number(busiest)} at its peers {window}"
            )
        if not_draining:
            reason.append(f"sits on a bus backlog of {_number(r.bus_backlog)}")
        findings.append(
            Finding(
                Verdict.STALLED_REPLICA,
                f"replica {r.replica_id or r.url} {' and '.join(reason)}: its bus "
                "subscription is stalled, and its clients miss events",
                tuple(evidence),
                f"check {r.replica_id or r.url}'s bus subscription (its queue and "
                "consumer on the broker, its /readyz and its log); restart it if it "
                "does not resume: its clients reconnect to the other replicas",
            )
        )
    return findings


def _unknown_type(ctx: _Context) -> list[Finding]:
    dropped = ctx.dropped("unknown_type")
    if not dropped:
        return []
    evidence = [
        f"{r.name}: {ctx.count(r.counts.drop('unknown_type'))} events of "
        f"{ctx.tenant} dropped as unknown_type {ctx.span}"
        for r in ctx.replicas
        if r.counts.drop("unknown_type")
    ]
    return [
        Finding(
            Verdict.UNKNOWN_TYPE,
            f"{_number(dropped)} events for {ctx.tenant} had a type with no catalog "
            f"row and were dropped {ctx.span}: a missing catalog row",
            tuple(evidence),
            "find the type the publisher sends (its log or its payloads), add a row "
            "for it to the catalog with its permission, severity and label, check it "
            "with `rcm-realtime catalog check`, and deploy",
        )
    ]


def _unreachable(readings: Sequence[ReplicaReading], total: int) -> Finding:
    return Finding(
        Verdict.UNREACHABLE,
        f"{len(readings)} of {total} replicas could not be read",
        tuple(f"{r.name}: {r.problem}" for r in readings),
        "check those replicas: their process, /healthz, the URL and the token; their "
        "clients reconnect to the others meanwhile",
    )


def _healthy(ctx: _Context) -> Finding:
    subscribers = sum(r.subscribers for r in ctx.replicas)
    events = sum(ctx.reached().values())
    delivered = sum(r.counts.delivered for r in ctx.replicas)
    evidence = [
        f"{r.name}: {_plural(r.subscribers, 'subscriber')}, "
        f"{ctx.count(r.counts.events)} events dispatched, "
        f"{ctx.count(r.counts.delivered)} frames delivered, no drops {ctx.span}"
        for r in ctx.replicas
    ]
    next_step = (
        "nothing wrong on the hub side: have the user reload; if it persists, check "
        "that the publisher sends the events (the source tables hold the truth)"
    )
    if not events:
        next_step = (
            f"no event of {ctx.tenant} reached the replicas {ctx.span}: check that "
            "the publisher sends them (its log, POST /v1/realtime/events answers)"
        )
    return Finding(
        Verdict.HEALTHY,
        f"{ctx.tenant} looks healthy: {_plural(subscribers, 'subscriber')} on "
        f"{_plural(len(ctx.replicas), 'replica')}, {_plural(events, 'event')} "
        f"reached them and {_plural(delivered, 'frame')} were delivered "
        f"{ctx.span}, nothing dropped",
        tuple(evidence),
        next_step,
    )


# -- rendering ---------------------------------------------------------------------


def render_text(diagnosis: Diagnosis) -> str:
    """The report a person reads: verdict, evidence, next step, then the rest."""
    first = diagnosis.findings[0]
    lines = [
        f"tenant {diagnosis.tenant}: {diagnosis.verdict.value}",
        f"  {first.summary}",
        "",
        "evidence:",
    ]
    lines += [f"  {line}" for line in first.evidence]
    lines += ["", f"next step: {first.next_step}"]
    others = diagnosis.findings[1:]
    if others:
        lines += ["", "also found:"]
        for finding in others:
            lines.append(f"  {finding.verdict.value}: {finding.summary}")
            lines += [f"    {line}" for line in finding.evidence]
            lines.append(f"    next step: {finding.next_step}")
    lines += ["", f"replicas ({_basis_text(diagnosis)}):"]
    for replica in diagnosis.replicas:
        lines.append(f"  {_replica_line(replica)}")
    if diagnosis.notes:
        lines += ["", "notes:"]
        lines += [f"  {note}" for note in diagnosis.notes]
    if diagnosis.subscribers is not None:
        lines += ["", f"subscribers of {diagnosis.tenant} (admin listing):"]
        if not diagnosis.subscribers:
            lines.append("  none")
        for view in diagnosis.subscribers:
            pressure = (
                ""
                if view.backpressure_seconds is None
                else f", backpressured {view.backpressure_seconds:.1f} s"
            )
            lines.append(
                f"  {view.subscriber_id} on {view.replica_id}: user "
                f"{view.user or '?'}, {view.state}, up {view.connected_seconds:.0f} s, "
                f"scopes {_names(view.scopes)}, roles {_names(view.roles)}, "
                f"delivered {view.delivered}, queued {view.queued}, dropped "
                f"{view.dropped_permission} permission / "
                f"{view.dropped_backpressure} backpressure{pressure}"
            )
    return "\n".join(lines) + "\n"


def _basis_text(diagnosis: Diagnosis) -> str:
    if diagnosis.basis is Basis.WINDOW:
        return f"counts over {diagnosis.window_s:.1f} s"
    return "counts since each replica started"


def _replica_line(replica: ReplicaSummary) -> str:
    if not replica.read:
        return f"{replica.name}: not read ({replica.problem})"
    c = replica.counts
    drops = ", ".join(
        f"{reason} {_number(c.drop(reason))}"
        for reason in DROP_REASONS
        if c.drop(reason)
    )
    return (
        f"{replica.name}: {_plural(replica.subscribers, 'subscriber')}, "
        f"dispatched {_number(c.events)}, delivered {_number(c.delivered)}, "
        f"dropped {drops or 'none'}, queued {_number(replica.queued)}, "
        f"bus backlog {_number(replica.bus_backlog)}"
    )
