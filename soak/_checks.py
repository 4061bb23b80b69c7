"""The soak's verdicts, as pure functions of what the run recorded.

Nothing here talks to a process or a socket: the run hands in scrapes, log text,
client stream records and memory samples, and gets back one ``Check`` per law.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client.parser import text_string_to_metric_families

from ._model import StreamEnd, StreamRecord

# Memory is flat when the mean RSS of the last third of the judged span is at most
# MEMORY_GROWTH_LIMIT, or MEMORY_SLACK_MIB, above the mean of its first third,
# whichever is larger. The slack is what a replica may still add after its
# warm-up without leaking: its window of recently dispatched event ids (between
# 32 768 and 65 536 ids, about 5 MiB of strings, and two set tables of up to
# 2 MiB each) takes 11 minutes to fill at 100 events/s, longer than the soak, and
# the allocator keeps the high-water mark of a burst (a broker's backlog
# dispatched at once) as resident memory.
MEMORY_GROWTH_LIMIT = 0.10
MEMORY_SLACK_MIB = 10.0
MIN_JUDGED_SAMPLES = 9
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    title: str
    passed: bool
    summary: str
    details: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "title": self.title,
            "passed": self.passed,
            "summary": self.summary,
            "details": list(self.details),
        }


# -- metrics -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TenantFigures:
    fanout: int = 0
    delivered: int = 0
    dropped_permission: int = 0
    dropped_backpressure: int = 0
    dropped_disconnected: int = 0
    queued: int = 0
    dispatched: int = 0
    subscribers: int = 0

    def ledger_gap(self) -> int:
        """Zero while the ledger holds."""
        return self.fanout - (
            self.delivered
            + self.dropped_permission
            + self.dropped_backpressure
            + self.dropped_disconnected
            + self.queued
        )


@dataclass(frozen=True, slots=True)
class Scrape:
    """One /metrics answer of one replica instance."""

    at_s: float
    instance: str
    tenants: dict[str, TenantFigures]
    backlog: int

    def total(self, name: str) -> int:
        return sum(int(getattr(figures, name)) for figures in self.tenants.values())


_TENANT_FIELDS = {
    "rcm_realtime_fanout_total": "fanout",
    "rcm_realtime_delivered_total": "delivered",
    "rcm_realtime_queued": "queued",
    "rcm_realtime_subscribers": "subscribers",
    "rcm_realtime_events_dispatched_total": "dispatched",
}
_DROP_FIELDS = {
    "permission": "dropped_permission",
    "backpressure": "dropped_backpressure",
    "disconnected": "dropped_disconnected",
}


def parse_scrape(text: str, *, at_s: float, instance: str) -> Scrape:
    """The per-tenant figures of one Prometheus exposition."""
    values: dict[str, dict[str, int]] = {}
    backlog = 0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name
            if name == "rcm_realtime_bus_backlog":
                backlog = int(sample.value)
                continue
            tenant = sample.labels.get("tenant_id")
            if tenant is None:
                continue
            if name == "rcm_realtime_dropped_total":
                field_name = _DROP_FIELDS.get(sample.labels.get("reason", ""))
            else:
                field_name = _TENANT_FIELDS.get(name)
            if field_name is None:
                continue
            tenant_values = values.setdefault(tenant, {})
            # Dispatched comes per event type; everything else once per tenant.
            tenant_values[field_name] = tenant_values.get(field_name, 0) + int(
                sample.value
            )
    return Scrape(
        at_s=at_s,
        instance=instance,
        tenants={tenant: TenantFigures(**fields) for tenant, fields in values.items()},
        backlog=backlog,
    )


def check_ledger(scrapes: Sequence[Scrape]) -> Check:
    """fanout = delivered + dropped{permission,backpressure,disconnected} + queued,
    per tenant, on every scrape of every instance."""
    violations: list[str] = []
    pairs = 0
    instances = set()
    for scrape in scrapes:
        instances.add(scrape.instance)
        for tenant, figures in sorted(scrape.tenants.items()):
            pairs += 1
            gap = figures.ledger_gap()
            if gap:
                violations.append(
                    f"{scrape.instance} at {scrape.at_s:.1f} s, tenant {tenant}: "
                    f"fanout {figures.fanout} = delivered {figures.delivered} + "
                    f"dropped {figures.dropped_permission}/"
                    f"{figures.dropped_backpressure}/{figures.dropped_disconnected} "
                    f"+ queued {figures.queued} is off by {gap}"
                )
    passed = bool(scrapes) and not violations
    if not scrapes:
        summary = "no scrape succeeded, so the ledger was never seen"
    elif violations:
        summary = f"{len(violations)} of {pairs} tenant ledgers were off"
    else:
        summary = (
            f"exact on all {pairs} tenant ledgers of {len(scrapes)} scrapes "
            f"of {len(instances)} instances"
        )
    return Check(
        "ledger_exact",
        "every replica's ledger exact",
        passed,
        summary,
        tuple(violations[:20]),
    )


# -- hub logs ----------------------------------------------------------------------

_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')
_TIMESTAMP = re.compile(r"^ts=(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
ERROR_LEVELS = frozenset({"ERROR", "CRITICAL"})
TRACEBACK = "Traceback (most recent call last)"
OUTAGE_GROUPING_S = 5.0  # disconnects this close together are one outage


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One record of a replica's log; lines that follow it without a timestamp
    (a traceback) belong to it. Output outside the log format has level OUTPUT."""

    instance: str
    at_s: float | None
    level: str
    text: str
    continuation: tuple[str, ...] = ()
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def is_error(self) -> bool:
        return self.level in ERROR_LEVELS or any(
            TRACEBACK in line for line in (self.text, *self.continuation)
        )


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        inner = value[1:-1]
        return (
            inner.replace("\\n", "\n")
            .replace("\\r", "\r")
            .replace('\\"', '"')
            .replace("\\\\", "\\")
        )
    return value


def parse_log(text: str, *, instance: str, wall_origin: float) -> list[LogRecord]:
    """Records of one replica's output; ``at_s`` is seconds after ``wall_origin``
    (the log's local time read as this machine's local time)."""
    records: list[LogRecord] = []
    pending: tuple[str, float | None, str, dict[str, str]] | None = None
    continuation: list[str] = []

    def flush() -> None:
        if pending is not None:
            line, at_s, level, fields = pending
            records.append(
                LogRecord(instance, at_s, level, line, tuple(continuation), fields)
            )

    for line in text.splitlines():
        stamp = _TIMESTAMP.match(line)
        if stamp is None and pending is not None:
            continuation.append(line)
            continue
        flush()
        continuation = []
        if stamp is None:
            pending = (line, None, "OUTPUT", {})
            continue
        at = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        fields = {key: _unquote(value) for key, value in _FIELD.findall(line)}
        pending = (line, at - wall_origin, fields.get("level", "INFO"), fields)
    flush()
    return records


@dataclass(frozen=True, slots=True)
class HubStream:
    """One stream as its replica logged it when it ended."""

    instance: str
    subscriber_id: str
    tenant: str
    delivered: int
    reason: str
    at_s: float | None


def hub_streams(records: Iterable[LogRecord]) -> list[HubStream]:
    streams = []
    for record in records:
        fields = record.fields
        if fields.get("event") != "subscriber_disconnected":
            continue
        streams.append(
            HubStream(
                instance=record.instance,
                subscriber_id=fields.get("subscriber", ""),
                tenant=fields.get("tenant", ""),
                delivered=int(fields.get("delivered", "0") or 0),
                reason=fields.get("reason", ""),
                at_s=record.at_s,
            )
        )
    return streams


@dataclass(frozen=True, slots=True)
class Outage:
    """A broker outage the replicas logged: when, which instances, how long."""

    at_s: float
    instances: tuple[str, ...]
    down_s: float | None

    def describe(self) -> str:
        down = "" if self.down_s is None else f", down {self.down_s:g} s"
        return f"at {self.at_s:.1f} s on {', '.join(self.instances)}{down}"


def foreign_outages(
    records: Iterable[LogRecord], injected: tuple[float, float] | None
) -> list[Outage]:
    """Broker outages the replicas logged outside the injected restart's window
    (another run restarting the shared broker)."""
    lost = sorted(
        (record.at_s, record.instance)
        for record in records
        if record.fields.get("event") == "bus_disconnected"
        and record.at_s is not None
        and not (injected is not None and injected[0] <= record.at_s <= injected[1])
    )
    back = [
        (record.at_s, record.instance, _seconds(record.fields.get("down_s", "")))
        for record in records
        if record.fields.get("event") == "bus_reconnected" and record.at_s is not None
    ]
    groups: list[tuple[float, list[str]]] = []
    for at_s, instance in lost:
        if groups and at_s - groups[-1][0] <= OUTAGE_GROUPING_S:
            groups[-1][1].append(instance)
        else:
            groups.append((at_s, [instance]))
    outages = []
    for at_s, instances in groups:
        downs = []
        for instance in set(instances):
            # The instance's first reconnection after the loss ends its outage.
            after = [(b, d) for b, i, d in back if i == instance and b >= at_s]
            if after:
                downs.append(min(after)[1])
        outages.append(
            Outage(at_s, tuple(sorted(set(instances))), max(downs) if downs else None)
        )
    return outages


def _seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0


def check_errors(
    records: Iterable[LogRecord], windows: Sequence[tuple[float, float]]
) -> tuple[Check, list[LogRecord], list[LogRecord]]:
    """ERROR lines (and tracebacks) fail the soak unless they fall inside the
    window of an injected fault. Returns the check, the unexplained records and
    the excused ones."""
    unexplained: list[LogRecord] = []
    excused: list[LogRecord] = []
    for record in records:
        if not record.is_error:
            continue
        at = record.at_s
        if at is not None and any(start <= at <= end for start, end in windows):
            excused.append(record)
        else:
            unexplained.append(record)
    details = tuple(
        f"{record.instance} at "
        f"{'?' if record.at_s is None else f'{record.at_s:.1f}'} s: {record.text}"
        for record in unexplained[:20]
    )
    if unexplained:
        summary = f"{len(unexplained)} error lines outside every fault window"
    else:
        summary = (
            f"none outside the fault windows ({len(excused)} inside them, "
            "caused by the faults)"
        )
    check = Check(
        "no_unexplained_errors",
        "no error logged that an injected fault did not cause",
        not unexplained,
        summary,
        details,
    )
    return check, unexplained, excused


# -- client-received against delivered ------------------------------------------------


@dataclass(slots=True)
class Reconciliation:
    """Client-received against delivered for one replica process instance."""

    instance: str
    killed: bool
    delivered_total: int | None  # its final scrape; None when it was killed
    hub_streams: int = 0
    hub_delivered: int = 0
    client_streams: int = 0
    received: int = 0
    exact_streams: int = 0
    cut_streams: int = 0
    cut_dark: int = 0  # of those, cut after the client had stopped reading
    in_flight: int = 0
    in_flight_dark: int = 0
    in_flight_max: int = 0
    in_flight_min: int = 0
    open_at_kill: int = 0
    open_at_kill_received: int = 0
    unknown_to_clients: int = 0
    unknown_to_clients_delivered: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    def line(self) -> str:
        if self.killed:
            return (
                f"{self.instance} (SIGKILLed): counters lost with the process; "
                f"{self.hub_streams} streams it ended before the kill reconcile "
                f"({self.exact_streams} exactly, {self.cut_streams} cut with "
                f"{self.in_flight:+d} in flight); {self.open_at_kill} streams open "
                f"at the kill received {self.open_at_kill_received} frames that "
                "cannot be reconciled"
            )
        return (
            f"{self.instance}: delivered_total {self.delivered_total} = clients "
            f"received {self.received} + in flight at {self.cut_streams} client "
            f"cuts {self.in_flight:+d} ({self.in_flight_dark:+d} at "
            f"{self.cut_dark} drops after going dark, "
            f"{self.in_flight - self.in_flight_dark:+d} at "
            f"{self.cut_streams - self.cut_dark} closes while reading; per cut "
            f"{self.in_flight_min:+d}..{self.in_flight_max:+d}); "
            f"{self.exact_streams} streams ended by the hub match exactly"
        )

    def to_json(self) -> dict[str, object]:
        return {
            "instance": self.instance,
            "killed": self.killed,
            "deliveredTotal": self.delivered_total,
            "hubStreams": self.hub_streams,
            "hubDelivered": self.hub_delivered,
            "clientStreams": self.client_streams,
            "received": self.received,
            "exactStreams": self.exact_streams,
            "cutStreams": self.cut_streams,
            "inFlightAtCuts": self.in_flight,
            "cutAfterGoingDark": self.cut_dark,
            "inFlightAtCutsAfterGoingDark": self.in_flight_dark,
            "inFlightPerCut": [self.in_flight_min, self.in_flight_max],
            "openAtKill": self.open_at_kill,
            "openAtKillReceived": self.open_at_kill_received,
            "hubStreamsUnknownToClients": self.unknown_to_clients,
            "hubStreamsUnknownToClientsDelivered": self.unknown_to_clients_delivered,
            "problems": self.problems,
        }


def reconcile(
    streams: Sequence[StreamRecord],
    logged: Sequence[HubStream],
    *,
    instance: str,
    delivered_total: int | None,
    killed: bool,
    cut_tolerance: int,
) -> Reconciliation:
    """Match each client stream of ``instance`` with the hub's record of it.

    A stream the hub ended with a farewell was read to its end, so the client
    holds exactly what the hub counted delivered. A stream cut by its client (or
    evicted by the hub) loses what was in flight: frames counted delivered but
    still in buffers (positive), or frames of a write the hub had not finished
    counting that the client already parsed (negative); ``cut_tolerance`` bounds
    either. A killed instance's counters died with it: only streams it ended
    before the kill can be reconciled, from its log.
    """
    result = Reconciliation(instance, killed, delivered_total)
    by_id = {stream.subscriber_id: stream for stream in logged}
    result.hub_streams = len(logged)
    result.hub_delivered = sum(stream.delivered for stream in logged)
    seen: set[str] = set()
    for record in streams:
        if record.subscriber_id is None:
            continue
        result.client_streams += 1
        result.received += record.received
        hub = by_id.get(record.subscriber_id)
        if hub is None:
            if killed:
                result.open_at_kill += 1
                result.open_at_kill_received += record.received
            else:
                result.problems.append(
                    f"stream {record.subscriber_id} (session {record.session}) "
                    "has no record in its replica's log"
                )
            continue
        seen.add(record.subscriber_id)
        gap = hub.delivered - record.received
        if record.end is StreamEnd.FAREWELL and hub.reason != "evicted":
            if gap:
                result.problems.append(
                    f"stream {record.subscriber_id} ended by the hub "
                    f"({record.farewell}): delivered {hub.delivered}, "
                    f"received {record.received}"
                )
            else:
                result.exact_streams += 1
        elif record.end is StreamEnd.CUT or hub.reason == "evicted":
            result.cut_streams += 1
            result.in_flight += gap
            if record.went_dark:
                result.cut_dark += 1
                result.in_flight_dark += gap
            result.in_flight_max = max(result.in_flight_max, gap)
            result.in_flight_min = min(result.in_flight_min, gap)
            if abs(gap) > cut_tolerance:
                result.problems.append(
                    f"stream {record.subscriber_id} cut with {gap:+d} frames in "
                    f"flight, beyond what the buffers hold ({cut_tolerance})"
                )
        else:
            result.problems.append(
                f"stream {record.subscriber_id} ended without a farewell on a "
                f"replica that was not killed (delivered {hub.delivered}, "
                f"received {record.received}, hub reason {hub.reason})"
            )
    for hub in logged:
        if hub.subscriber_id not in seen:
            result.unknown_to_clients += 1
            result.unknown_to_clients_delivered += hub.delivered
    if result.unknown_to_clients_delivered:
        result.problems.append(
            f"{result.unknown_to_clients} streams no client saw open were "
            f"delivered {result.unknown_to_clients_delivered} frames"
        )
    if not killed:
        if delivered_total is None:
            result.problems.append("its final scrape failed")
        elif delivered_total != result.hub_delivered:
            result.problems.append(
                f"delivered_total {delivered_total} differs from the sum of its "
                f"streams' delivered counts in its log ({result.hub_delivered})"
            )
    return result


def check_reconciliations(results: Sequence[Reconciliation]) -> Check:
    problems = [
        f"{result.instance}: {problem}"
        for result in results
        for problem in result.problems
    ]
    live = [r for r in results if not r.killed]
    delivered = sum(r.delivered_total or 0 for r in live)
    received = sum(r.received for r in live)
    in_flight = sum(r.in_flight for r in live)
    summary = (
        f"live instances: delivered {delivered} = received {received} + in flight "
        f"at client cuts {in_flight:+d}"
    )
    if problems:
        summary = f"{len(problems)} problems; " + summary
    return Check(
        "received_equals_delivered",
        "client-received equals delivered",
        bool(results) and not problems,
        summary,
        tuple([r.line() for r in results] + problems[:20]),
    )


# -- memory ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemoryVerdict:
    instance: str
    start_mib: float | None
    end_mib: float | None
    peak_mib: float | None
    judged_from_s: float
    judged_until_s: float
    judged_samples: int
    first_third_mib: float | None
    last_third_mib: float | None
    flat: bool | None  # None: not judged (too short a life after its warm-up)
    note: str

    @property
    def growth(self) -> float | None:
        if self.first_third_mib is None or self.last_third_mib is None:
            return None
        return (self.last_third_mib - self.first_third_mib) / self.first_third_mib

    def to_json(self) -> dict[str, object]:
        return {
            "instance": self.instance,
            "startMiB": self.start_mib,
            "endMiB": self.end_mib,
            "peakMiB": self.peak_mib,
            "judgedFromS": self.judged_from_s,
            "judgedUntilS": self.judged_until_s,
            "judgedSamples": self.judged_samples,
            "firstThirdMiB": self.first_third_mib,
            "lastThirdMiB": self.last_third_mib,
            "growth": self.growth,
            "flat": self.flat,
            "note": self.note,
        }


def judge_memory(
    instance: str,
    samples: Sequence[tuple[float, int]],
    *,
    ready_s: float,
    until_s: float,
    warmup_s: float,
) -> MemoryVerdict:
    """Compare the mean RSS of the last third of the span after warm-up with the
    mean of its first third. The warm-up counts from the instance's start."""
    start = samples[0][1] / MIB if samples else None
    end = samples[-1][1] / MIB if samples else None
    peak = max(rss for _, rss in samples) / MIB if samples else None
    judged_from = max(ready_s, 0.0) + warmup_s
    judged = [(at, rss) for at, rss in samples if judged_from <= at <= until_s]
    if len(judged) < MIN_JUDGED_SAMPLES:
        return MemoryVerdict(
            instance,
            start,
            end,
            peak,
            judged_from,
            until_s,
            len(judged),
            None,
            None,
            None,
            f"not judged: {len(judged)} samples after its warm-up "
            f"(at least {MIN_JUDGED_SAMPLES} needed)",
        )
    third = len(judged) // 3
    first = statistics.fmean(rss for _, rss in judged[:third]) / MIB
    last = statistics.fmean(rss for _, rss in judged[-third:]) / MIB
    growth_mib = last - first
    flat = growth_mib <= MEMORY_SLACK_MIB or growth_mib <= first * MEMORY_GROWTH_LIMIT
    note = (
        f"last third {last:.1f} MiB vs first third {first:.1f} MiB "
        f"({growth_mib:+.1f} MiB, {growth_mib / first:+.1%})"
    )
    return MemoryVerdict(
        instance,
        start,
        end,
        peak,
        judged_from,
        until_s,
        len(judged),
        first,
        last,
        flat,
        note,
    )


def check_memory(verdicts: Sequence[MemoryVerdict]) -> Check:
    judged = [v for v in verdicts if v.flat is not None]
    growing = [v for v in judged if not v.flat]
    details = tuple(
        f"{v.instance}: {'flat' if v.flat else 'GROWING' if v.flat is False else '-'}"
        f" {v.note}"
        for v in verdicts
    )
    if not judged:
        summary = "no instance ran long enough after its warm-up to be judged"
    elif growing:
        summary = f"{len(growing)} of {len(judged)} judged instances kept growing"
    else:
        summary = (
            f"flat on all {len(judged)} judged instances (limit: +"
            f"{MEMORY_GROWTH_LIMIT:.0%} or +{MEMORY_SLACK_MIB:g} MiB, last third "
            "against first third after warm-up)"
        )
    return Check(
        "memory_flat",
        "memory flat after warm-up",
        bool(judged) and not growing,
        summary,
        details,
    )


# -- events published against dispatched ---------------------------------------


def check_dispatched(
    published: int, uncertain: int, dispatched: Mapping[str, int | None]
) -> Check:
    """Every replica that was never killed dispatched every published event once.

    ``uncertain`` events were sent in a request whose answer never came, so they
    may or may not have been published.
    """
    problems = []
    lines = []
    for instance, count in sorted(dispatched.items()):
        if count is None:
            problems.append(f"{instance}: its final scrape failed")
            continue
        lines.append(f"{instance}: dispatched {count} of {published} published")
        if not published <= count <= published + uncertain:
            problems.append(
                f"{instance} dispatched {count} events; {published} were published"
                + (f" (and {uncertain} perhaps)" if uncertain else "")
            )
    summary = (
        f"each of {len(dispatched)} replicas never killed dispatched all "
        f"{published} published events once"
        if not problems
        else f"{len(problems)} replicas disagree with what was published"
    )
    return Check(
        "nothing_lost",
        "every published event dispatched once by every replica never killed",
        bool(dispatched) and not problems,
        summary,
        tuple(lines + problems),
    )
