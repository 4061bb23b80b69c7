"""Reconciling a load run: what the clients saw against what the hubs counted.

Pure functions over scrapes of ``/metrics`` and the load clients' tallies, so the
rules can be tested without a run. A run reconciles when:

- the ledger holds on every replica, for every tenant, at the first and last scrape;
- every replica dispatched every event the publishers had accepted, once;
- the events the clients received equal the hubs' ``delivered`` increase, per tenant;
- the hubs drained (nothing queued, no batch open) before the clients left;
- every drop has a reason that explains it: ``permission`` (the role mix), and
  ``backpressure`` or ``disconnected`` only with the client-side trace they leave;
  ``unknown_type`` never (the publishers send catalog types only);
- no client saw a duplicate, another tenant's event or an event its role may not
  read, and every load process reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

LEDGER_DROP_REASONS = ("permission", "backpressure", "disconnected")
DROP_REASONS = (*LEDGER_DROP_REASONS, "unknown_type")

LabelSet = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Scrape:
    """One replica's ``/metrics`` at one moment."""

    replica: str
    at: float
    samples: Mapping[tuple[str, LabelSet], float]

    @classmethod
    def parse(cls, replica: str, at: float, text: str) -> Scrape:
        samples: dict[tuple[str, LabelSet], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = tuple(sorted(sample.labels.items()))
                samples[(sample.name, labels)] = float(sample.value)
        return cls(replica, at, samples)

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, tuple(sorted(labels.items()))), 0.0)

    def summed(self, name: str, tenant: str) -> float:
        """``name`` for ``tenant``, summed over its other labels."""
        total = 0.0
        for (sample_name, labels), value in self.samples.items():
            if sample_name == name and ("tenant_id", tenant) in labels:
                total += value
        return total

    def tenants(self) -> set[str]:
        return {
            value
            for (name, labels) in self.samples
            if name == "rcm_realtime_fanout_total"
            for key, value in labels
            if key == "tenant_id"
        }

    def ledger_gap(self, tenant: str) -> float:
        """fanout - (delivered + dropped{permission,backpressure,disconnected} +
        queued): zero while the ledger holds."""
        accounted = (
            self.value("rcm_realtime_delivered_total", tenant_id=tenant)
            + sum(
                self.value("rcm_realtime_dropped_total", tenant_id=tenant, reason=r)
                for r in LEDGER_DROP_REASONS
            )
            + self.value("rcm_realtime_queued", tenant_id=tenant)
        )
        return self.value("rcm_realtime_fanout_total", tenant_id=tenant) - accounted


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(slots=True)
class TenantRow:
    """One replica's counters for one tenant over the run."""

    replica: str
    tenant: str
    dispatched: int
    fanout: int
    delivered: int
    dropped: dict[str, int]
    queued_at_end: int
    batches_open_at_end: int
    batches_completed: int
    ledger_gap_start: int
    ledger_gap_end: int


@dataclass(slots=True)
class Reconciliation:
    checks: list[Check] = field(default_factory=list)
    rows: list[TenantRow] = field(default_factory=list)
    received: dict[str, int] = field(default_factory=dict)
    delivered: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    accepted: dict[str, int] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def unexplained(self) -> list[Check]:
        return [check for check in self.checks if not check.ok]

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "checks": [
                {"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks
            ],
            "received": self.received,
            "delivered": self.delivered,
            "dropped": self.dropped,
            "accepted": self.accepted,
            "rows": [
                {
                    "replica": r.replica,
                    "tenant": r.tenant,
                    "dispatched": r.dispatched,
                    "fanout": r.fanout,
                    "delivered": r.delivered,
                    "dropped": r.dropped,
                    "queued_at_end": r.queued_at_end,
                    "batches_open_at_end": r.batches_open_at_end,
                    "batches_completed": r.batches_completed,
                    "ledger_gap_start": r.ledger_gap_start,
                    "ledger_gap_end": r.ledger_gap_end,
                }
                for r in self.rows
            ],
        }


def accepted_per_tenant(
    published: Mapping[str, Any] | None,
) -> tuple[dict[str, int], int, int]:
    """Events the publishers had accepted (202), per tenant; plus refused and
    uncertain (no answer: the hub may or may not have taken them)."""
    accepted: dict[str, int] = {}
    refused = uncertain = 0
    for report in (published or {}).get("publishers", {}).values():
        for tenant, count in report.get("accepted", {}).items():
            accepted[tenant] = accepted.get(tenant, 0) + int(count)
        refused += int(report.get("refused", 0))
        uncertain += int(report.get("uncertain", 0))
    return accepted, refused, uncertain


def tenant_rows(
    tenants: Iterable[str], start: Mapping[str, Scrape], end: Mapping[str, Scrape]
) -> list[TenantRow]:
    rows = []
    for replica, last in end.items():
        first = start[replica]
        for tenant in tenants:

            def delta(
                name: str, first: Scrape = first, last: Scrape = last, **labels: str
            ) -> int:
                return int(last.value(name, **labels) - first.value(name, **labels))

            rows.append(
                TenantRow(
                    replica=replica,
                    tenant=tenant,
                    dispatched=int(
                        last.summed("rcm_realtime_events_dispatched_total", tenant)
                        - first.summed("rcm_realtime_events_dispatched_total", tenant)
                    ),
                    fanout=delta("rcm_realtime_fanout_total", tenant_id=tenant),
                    delivered=delta("rcm_realtime_delivered_total", tenant_id=tenant),
                    dropped={
                        reason: delta(
                            "rcm_realtime_dropped_total",
                            tenant_id=tenant,
                            reason=reason,
                        )
                        for reason in DROP_REASONS
                    },
                    queued_at_end=int(
                        last.value("rcm_realtime_queued", tenant_id=tenant)
                    ),
                    batches_open_at_end=int(
                        last.value("rcm_realtime_batches_open", tenant_id=tenant)
                    ),
                    batches_completed=delta(
                        "rcm_realtime_batches_completed_total", tenant_id=tenant
                    ),
                    ledger_gap_start=int(first.ledger_gap(tenant)),
                    ledger_gap_end=int(last.ledger_gap(tenant)),
                )
            )
    return rows


def reconcile(
    *,
    tenants: list[str],
    start: Mapping[str, Scrape],
    end: Mapping[str, Scrape],
    clients: Mapping[str, Any] | None,
    published: Mapping[str, Any] | None,
    expected_processes: int,
) -> Reconciliation:
    result = Reconciliation()
    result.rows = rows = tenant_rows(tenants, start, end)
    checks = result.checks

    # The ledger, for every tenant a replica knows, not only this run's.
    broken = [
        f"{scrape.replica} {tenant} at {moment}: gap {gap:+.0f}"
        for moment, scrapes in (("start", start), ("end", end))
        for scrape in scrapes.values()
        for tenant in sorted(scrape.tenants())
        if (gap := scrape.ledger_gap(tenant)) != 0
    ]
    checks.append(
        Check(
            "ledger holds",
            not broken,
            "; ".join(broken)
            or f"fanout = delivered + dropped + queued on {len(end)} replica(s), "
            "every tenant, first and last scrape",
        )
    )

    accepted, refused, uncertain = accepted_per_tenant(published)
    result.accepted = accepted
    if published is None:
        checks.append(Check("publishers reported", False, "no publisher report"))
    short = [
        f"{row.replica} {row.tenant}: dispatched {row.dispatched}, accepted "
        f"{accepted.get(row.tenant, 0)}"
        for row in rows
        if not _dispatch_matches(row.dispatched, accepted.get(row.tenant, 0), uncertain)
    ]
    checks.append(
        Check(
            "every replica dispatched every accepted event",
            not short,
            "; ".join(short)
            or f"{sum(accepted.values())} events accepted, each dispatched once by "
            f"each of {len(end)} replica(s)"
            + (f" ({refused} refused by the hub)" if refused else "")
            + (f" ({uncertain} posts without an answer)" if uncertain else ""),
        )
    )

    waiting = [
        f"{row.replica} {row.tenant}: {row.queued_at_end} queued, "
        f"{row.batches_open_at_end} batches open"
        for row in rows
        if row.queued_at_end or row.batches_open_at_end
    ]
    checks.append(
        Check(
            "hubs drained before the clients left",
            not waiting,
            "; ".join(waiting) or "nothing queued and no batch open at the end",
        )
    )

    for row in rows:
        result.delivered[row.tenant] = (
            result.delivered.get(row.tenant, 0) + row.delivered
        )
        for reason, count in row.dropped.items():
            result.dropped[reason] = result.dropped.get(reason, 0) + count

    if clients is None:
        checks.append(
            Check("clients reported", False, "the load clients wrote no tally")
        )
        return result
    reported = int(clients.get("processes_reported", 0))
    checks.append(
        Check(
            "every load process reported",
            reported >= expected_processes,
            f"{reported} of {expected_processes} process(es) sent their tally",
        )
    )
    result.received = {t: int(clients.get("received", {}).get(t, 0)) for t in tenants}
    mismatched = [
        f"{tenant}: received {result.received[tenant]}, delivered "
        f"{result.delivered.get(tenant, 0)}"
        for tenant in tenants
        if result.received[tenant] != result.delivered.get(tenant, 0)
    ]
    checks.append(
        Check(
            "clients received exactly what the hubs delivered",
            not mismatched,
            "; ".join(mismatched)
            or f"{sum(result.received.values())} events, per tenant: "
            + ", ".join(f"{t} {n}" for t, n in result.received.items()),
        )
    )
    checks.extend(_drop_checks(result.dropped, clients, refused))
    return result


def _dispatch_matches(dispatched: int, accepted: int, uncertain: int) -> bool:
    if uncertain:
        return accepted <= dispatched <= accepted + uncertain
    return dispatched == accepted


def _drop_checks(
    dropped: Mapping[str, int], clients: Mapping[str, Any], refused: int
) -> list[Check]:
    checks = [
        Check(
            "drops for permission explained by the role mix",
            int(clients.get("forbidden_type", 0)) == 0,
            f"{dropped.get('permission', 0)} (event, subscriber) pairs outside the "
            "subscriber's role; no client received a type its role may not read"
            if not clients.get("forbidden_type")
            else f"{clients['forbidden_type']} events reached a client whose role may "
            "not read them",
        ),
        Check(
            "no unknown_type drops",
            dropped.get("unknown_type", 0) == 0,
            f"{dropped.get('unknown_type', 0)} events of types without a catalog row "
            "(the publishers send catalog types only)",
        ),
    ]
    gaps = int(clients.get("gaps", 0))
    backpressure = dropped.get("backpressure", 0)
    explained = gaps <= backpressure or refused > 0
    checks.append(
        Check(
            "gaps explained by backpressure drops",
            explained,
            f"clients saw {gaps} events missing within a connection; the hubs "
            f"dropped {backpressure} on backpressure"
            + (f"; publishers had {refused} events refused" if refused else ""),
        )
    )
    disconnected = dropped.get("disconnected", 0)
    departures = sum(
        int(clients.get(name, 0))
        for name in ("departures", "reconnects", "ended_without_farewell")
    ) + sum(int(n) for n in clients.get("farewells", {}).values())
    checks.append(
        Check(
            "disconnected drops explained by clients leaving",
            disconnected == 0 or departures > 0,
            f"{disconnected} frames queued for streams that then closed; "
            f"{departures} departures, reconnects and farewells",
        )
    )
    for name, what in (
        ("duplicates", "events seen twice"),
        ("foreign_tenant", "events of another tenant"),
        ("malformed", "frames that were not JSON"),
    ):
        count = int(clients.get(name, 0))
        checks.append(Check(f"no {what}", count == 0, f"{count} {what}"))
    return checks


def hub_latency_quantiles(
    start: Mapping[str, Scrape],
    end: Mapping[str, Scrape],
    quantiles: Iterable[float] = (0.5, 0.9, 0.99),
) -> dict[str, float | None]:
    """Quantiles of the hubs' own ``occurredAt`` to frame-written latency over the
    run, in ms, as the upper bound of the histogram bucket that holds them (all
    replicas together; ``None`` past the last finite bucket or without data)."""
    name = "rcm_realtime_delivery_latency_seconds_bucket"
    counts: dict[float, float] = {}
    for replica, last in end.items():
        first = start.get(replica)
        for (sample_name, labels), value in last.samples.items():
            if sample_name != name:
                continue
            bound = float(dict(labels)["le"])
            before = first.samples.get((sample_name, labels), 0.0) if first else 0.0
            counts[bound] = counts.get(bound, 0.0) + value - before
    bounds = sorted(counts)
    total = counts.get(float("inf"), 0.0)
    result: dict[str, float | None] = {}
    for quantile in quantiles:
        key = f"{quantile * 100:g}%"
        result[key] = None
        if total <= 0:
            continue
        for bound in bounds:
            if counts[bound] >= quantile * total:
                result[key] = None if bound == float("inf") else bound * 1000
                break
    return result
