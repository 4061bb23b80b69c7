"""What a run reports: the contract's metrics per replica as time series, and the
truth only a simulator knows (per client, per batch).

Everything here is plain records; the writers produce the same bytes for the same
records, so two runs of one world with one seed give identical files.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ._config import WorldConfig

SERIES_COLUMNS = (
    "time_s",
    "replica",
    "generation",
    "metric",
    "tenant_id",
    "event_type",
    "reason",
    "le",
    "value",
)


@dataclass(frozen=True, slots=True)
class SeriesRecord:
    """One sample of one metric; labels the metric lacks are empty strings.

    ``replica`` is empty for the world's own series (``sim_*``); ``generation``
    counts the replica's processes (a deploy starts a new one, with fresh counters).
    """

    time_s: float
    replica: str
    generation: int
    metric: str
    tenant_id: str
    event_type: str
    reason: str
    le: str
    value: float


@dataclass(frozen=True, slots=True)
class LedgerViolation:
    time_s: float
    replica: str
    generation: int
    tenant_id: str
    detail: str


@dataclass(frozen=True, slots=True)
class ClientTruth:
    """One client over the whole run."""

    client_id: str
    # The subscriber group it belongs to; empty for the drawn population.
    group: str
    tenant_id: str
    user: str
    kind: str
    roles: tuple[str, ...]
    scopes: tuple[str, ...]
    # Events of its tenant it holds the permission for, published while it wanted
    # the feed; the distinct ones it read; should minus got.
    should: int
    got: int
    missed: int
    duplicates: int
    completions: int
    # Frames the hub counted as written that the client never read.
    lost_in_socket: int
    connections: int
    # (time, replica) of every stream it opened.
    connects: list[tuple[float, str]]
    # server_shutdown frames it read.
    farewells: int
    refused: int
    # Reconnects the hub could not replay for (the client was told to reload).
    reload_notices: int
    streams_ended: dict[str, int]
    # From its first connection to the end (or to its leaving): how long it
    # wanted the feed, and how long of that it held a stream.
    wanted_s: float
    connected_s: float
    # The longest time from an event's occurredAt to the client reading it.
    staleness_max_s: float | None
    dark_spells: int
    half_open_spells: int
    final_state: str


@dataclass(frozen=True, slots=True)
class BatchTruth:
    """One interchange as one replica slot (all its processes) saw it."""

    tenant_id: str
    trading_partner_id: str
    isa13: str
    replica: str
    events: int
    first_event_s: float
    last_event_s: float
    truncated: bool
    # batch.completed synthesized for this bucket on this replica.
    completions: int
    # ... of which came before an event of the interchange that was still to come.
    premature: int
    # The first completion after the interchange's last event reached the replica:
    # how long after the last event was sent, and how many events it counted.
    latency_s: float | None
    final_event_count: int | None


@dataclass(frozen=True, slots=True)
class GenerationRun:
    """One process of one replica: its life and its final counters."""

    replica: str
    generation: int
    started_at_s: float
    closed_at_s: float | None
    # Every contract series of the process as it ended (or at the end of the run).
    final_series: tuple[SeriesRecord, ...]
    open_streams: int
    dispatched: int
    fanout: int
    delivered: int
    dropped: dict[str, int]
    disconnects: dict[str, int]
    batches_completed: int
    bus_offered: int
    # What the replica's bus faults took over the whole run (every process).
    bus_dropped: int
    bus_cut: int


@dataclass(frozen=True, slots=True)
class SimulationResult:
    config: WorldConfig
    tenants: tuple[str, ...]
    trading_partners: tuple[str, ...]
    series: list[SeriesRecord]
    clients: list[ClientTruth]
    batches: list[BatchTruth]
    ledger_violations: list[LedgerViolation]
    ledger_checks: int
    generations: list[GenerationRun]
    published: int
    sample_times: list[float]
    wall_s: float = 0.0
    _index: dict[str, list[SeriesRecord]] = field(
        default_factory=dict, repr=False, compare=False
    )

    # -- queries -----------------------------------------------------------------------

    def records(self, metric: str) -> list[SeriesRecord]:
        if not self._index:
            index: dict[str, list[SeriesRecord]] = defaultdict(list)
            for record in self.series:
                index[record.metric].append(record)
            self._index.update(index)
        return self._index.get(metric, [])

    def timeline(
        self, metric: str, *, replica: str | None = None, **labels: str
    ) -> list[tuple[float, float]]:
        """The metric summed over matching series at every sample time."""
        sums: dict[float, float] = dict.fromkeys(self.sample_times, 0.0)
        for record in self.records(metric):
            if replica is not None and record.replica != replica:
                continue
            if any(getattr(record, key) != value for key, value in labels.items()):
                continue
            sums[record.time_s] += record.value
        return sorted(sums.items())

    def value(
        self,
        metric: str,
        *,
        at: float | None = None,
        replica: str | None = None,
        **labels: str,
    ) -> float:
        """The metric summed over matching series at one sample (default: last)."""
        when = self.sample_times[-1] if at is None else at
        for time_s, total in self.timeline(metric, replica=replica, **labels):
            if time_s == when:
                return total
        raise KeyError(f"no sample at {when} s")

    def increase(
        self,
        metric: str,
        start_s: float,
        end_s: float,
        *,
        replica: str | None = None,
        **labels: str,
    ) -> float:
        """How much a counter grew from ``start_s`` to ``end_s`` (sample times),
        summed over matching series; a process that started in between (a deploy)
        counts from zero, as Prometheus reads a counter reset."""
        first: dict[tuple[str, int, str, str, str, str], float] = {}
        last: dict[tuple[str, int, str, str, str, str], float] = {}
        for record in self.records(metric):
            if replica is not None and record.replica != replica:
                continue
            if any(getattr(record, key) != value for key, value in labels.items()):
                continue
            key = (
                record.replica,
                record.generation,
                record.tenant_id,
                record.event_type,
                record.reason,
                record.le,
            )
            if record.time_s <= start_s:
                first[key] = record.value
            if record.time_s <= end_s:
                last[key] = record.value
        return sum(value - first.get(key, 0.0) for key, value in last.items())

    def final_total(
        self, metric: str, *, replica: str | None = None, **labels: str
    ) -> float:
        """A counter at the end as Prometheus' reset handling reads it: what every
        process of the matching replicas counted, summed over matching series."""
        total = 0.0
        for run in self.generations:
            if replica is not None and run.replica != replica:
                continue
            for record in run.final_series:
                if record.metric != metric:
                    continue
                if all(getattr(record, key) == value for key, value in labels.items()):
                    total += record.value
        return total

    def total(self, field_name: str) -> int:
        """A counter of every process of every replica, summed (``delivered`` ...)."""
        return sum(int(getattr(run, field_name)) for run in self.generations)

    def dropped(self, reason: str) -> int:
        return sum(run.dropped.get(reason, 0) for run in self.generations)

    def disconnects(self, reason: str) -> int:
        return sum(run.disconnects.get(reason, 0) for run in self.generations)

    # -- files -------------------------------------------------------------------------

    def series_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(SERIES_COLUMNS)
        for r in self.series:
            writer.writerow(
                (
                    _number(r.time_s),
                    r.replica,
                    r.generation,
                    r.metric,
                    r.tenant_id,
                    r.event_type,
                    r.reason,
                    r.le,
                    _number(r.value),
                )
            )
        return buffer.getvalue()

    def clients_jsonl(self) -> str:
        return _json_lines(self.clients)

    def batches_jsonl(self) -> str:
        return _json_lines(self.batches)

    def write(self, directory: str | Path) -> list[Path]:
        """``series.csv``, ``clients.jsonl`` and ``batches.jsonl`` in ``directory``."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        files = {
            "series.csv": self.series_csv(),
            "clients.jsonl": self.clients_jsonl(),
            "batches.jsonl": self.batches_jsonl(),
        }
        paths = []
        for name, text in files.items():
            path = out / name
            path.write_text(text, "utf-8")
            paths.append(path)
        return paths

    # -- the summary -------------------------------------------------------------------

    def summary_table(self) -> str:
        return format_summary(self)


def _number(value: float) -> str:
    if isinstance(value, int) or (math.isfinite(value) and value == int(value)):
        return str(int(value))
    return repr(float(value))


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _json_lines(records: Iterable[Any]) -> str:
    lines = [
        json.dumps(_plain(asdict(record)), sort_keys=True, separators=(",", ":"))
        for record in records
    ]
    return "".join(line + "\n" for line in lines)


def percentile(values: Sequence[float], share: float) -> float | None:
    """The nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [
        max(len(header[i]), *(len(row[i]) for row in rows)) if rows else len(header[i])
        for i in range(len(header))
    ]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [
            cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)
        ]
        return "  ".join([first, *rest]).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _count(value: int) -> str:
    return f"{value:,}"


def format_summary(result: SimulationResult) -> str:
    world = result.config
    lines = [
        f"world: seed {world.seed}, {world.duration_s:g} s of traffic "
        f"+ {world.settle:g} s settle, {world.topology.replicas} replicas, "
        f"{len(result.tenants)} tenants, {len(result.clients)} clients, "
        f"{_count(result.published)} events published",
        "",
    ]

    by_replica: dict[str, list[GenerationRun]] = defaultdict(list)
    for run in result.generations:
        by_replica[run.replica].append(run)
    header = [
        "replica",
        "procs",
        "streams",
        "dispatched",
        "fanout",
        "delivered",
        "drop:perm",
        "drop:backp",
        "drop:disc",
        "drop:unknown",
        "evicted",
        "shutdown",
        "admin",
        "client",
        "completed",
    ]
    rows: list[list[str]] = []

    def row(name: str, runs: Sequence[GenerationRun]) -> list[str]:
        def dropped(reason: str) -> int:
            return sum(run.dropped.get(reason, 0) for run in runs)

        def gone(reason: str) -> int:
            return sum(run.disconnects.get(reason, 0) for run in runs)

        last = [run for run in runs if run.closed_at_s is None]
        return [
            name,
            str(len(runs)),
            _count(sum(run.open_streams for run in last)),
            _count(sum(run.dispatched for run in runs)),
            _count(sum(run.fanout for run in runs)),
            _count(sum(run.delivered for run in runs)),
            _count(dropped("permission")),
            _count(dropped("backpressure")),
            _count(dropped("disconnected")),
            _count(dropped("unknown_type")),
            _count(gone("evicted")),
            _count(gone("shutdown")),
            _count(gone("admin")),
            _count(gone("client")),
            _count(sum(run.batches_completed for run in runs)),
        ]

    for name in sorted(by_replica, key=lambda n: int(n[1:])):
        rows.append(row(name, by_replica[name]))
    rows.append(row("total", result.generations))
    lines.extend(_table(header, rows))
    lines.append("")

    clients = result.clients
    kinds: dict[str, int] = defaultdict(int)
    for client in clients:
        kinds[client.kind] += 1
    should = sum(c.should for c in clients)
    got = sum(c.got for c in clients)
    missed = sum(c.missed for c in clients)
    share = f" ({100 * missed / should:.3f} %)" if should else ""
    worst = [c.staleness_max_s for c in clients if c.staleness_max_s is not None]
    lines.append(
        "clients: "
        + ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items()))
    )
    lines.append(
        f"  should {_count(should)}, got {_count(got)}, "
        f"missed {_count(missed)}{share}, "
        f"duplicates {_count(sum(c.duplicates for c in clients))}, lost in sockets "
        f"{_count(sum(c.lost_in_socket for c in clients))}, refused connects "
        f"{_count(sum(c.refused for c in clients))}"
    )
    per_second: dict[int, int] = defaultdict(int)
    for client in clients:
        for at, _ in client.connects:
            per_second[int(at)] += 1
    if per_second:
        busiest = max(per_second, key=lambda second: (per_second[second], -second))
        lines.append(
            f"  connects: {_count(sum(per_second.values()))} in all, at most "
            f"{_count(per_second[busiest])} in one second (at {busiest} s)"
        )
    if worst:
        p99 = percentile(worst, 0.99)
        assert p99 is not None
        lines.append(
            f"  staleness: worst client {max(worst):.3f} s, p99 of clients' worst "
            f"{p99:.3f} s"
        )

    batches = [b for b in result.batches if not b.truncated]
    if batches:
        premature = sum(1 for b in batches if b.premature)
        latencies = [b.latency_s for b in batches if b.latency_s is not None]
        p50 = percentile(latencies, 0.5)
        p95 = percentile(latencies, 0.95)
        never = sum(1 for b in batches if b.latency_s is None)
        lines.append(
            f"batches: {len(batches)} (interchange, replica) pairs; premature "
            f"completion in {premature} ({100 * premature / len(batches):.2f} %); "
            + (
                f"completion latency p50 {p50:.3f} s, p95 {p95:.3f} s"
                if p50 is not None and p95 is not None
                else "no completions"
            )
            + (f"; {never} never completed" if never else "")
        )

    verdict = (
        "exact"
        if not result.ledger_violations
        else f"BROKEN {len(result.ledger_violations)} times"
    )
    lines.append(f"ledger: {verdict} over {_count(result.ledger_checks)} checks")
    return "\n".join(lines) + "\n"
