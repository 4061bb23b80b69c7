"""What a run of a scenario produced, on either target, and how it is judged."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ._model import Check, Expectation, Scenario, Truth

LabelSet = tuple[tuple[str, str], ...]
SeriesKey = tuple[str, LabelSet]

COUNTER_SUFFIXES = ("_total", "_count", "_sum", "_bucket")


def label_set(labels: Mapping[str, str]) -> LabelSet:
    return tuple(sorted(labels.items()))


@dataclass(slots=True)
class Sample:
    """Every metric of one replica at one scenario time."""

    at_s: float
    replica: int
    values: dict[SeriesKey, float]


@dataclass(slots=True)
class ClientRecord:
    name: str
    group: str
    tenant: str
    behaviour: str
    expected: int = 0
    received: int = 0
    missed: int = 0
    leaked: int = 0
    duplicates: int = 0
    shutdown_frames: int = 0
    reload_notices: int = 0
    connect_times: list[float] = field(default_factory=list)


@dataclass(slots=True)
class InterchangeRecord:
    tenant: str
    trading_partner: str
    isa13: str
    last_event_s: float
    completions: list[float] = field(default_factory=list)

    @property
    def premature(self) -> int:
        """Completions that came while events of the interchange were still due."""
        return sum(1 for at in self.completions if at < self.last_event_s)


@dataclass(slots=True)
class RunResult:
    scenario: Scenario
    target: str
    samples: list[Sample]
    clients: list[ClientRecord]
    interchanges: list[InterchangeRecord]
    wall_s: float = 0.0
    operations: list[tuple[float, str]] = field(default_factory=list)
    ledger_violations: list[str] = field(default_factory=list)

    def series(
        self, metric: str, labels: Mapping[str, str], replica: int | None
    ) -> list[tuple[float, float]]:
        """(time, value) of a metric summed over label sets that contain
        ``labels``, for one replica or summed over all at each sample time."""
        wanted = set(labels.items())
        by_time: dict[float, float] = {}
        for sample in self.samples:
            if replica is not None and sample.replica != replica:
                continue
            total = 0.0
            for (name, labelset), value in sample.values.items():
                if name == metric and wanted <= set(labelset):
                    total += value
            by_time[sample.at_s] = by_time.get(sample.at_s, 0.0) + total
        return sorted(by_time.items())

    def final(self, metric: str, labels: Mapping[str, str]) -> float:
        points = self.series(metric, labels, None)
        return points[-1][1] if points else 0.0

    def final_families(self, families: Iterable[str]) -> dict[SeriesKey, float]:
        """Final values summed over replicas, per (metric, labels)."""
        wanted = set(families)
        last_time = max((s.at_s for s in self.samples), default=0.0)
        totals: dict[SeriesKey, float] = {}
        for sample in self.samples:
            if sample.at_s != last_time:
                continue
            for (name, labels), value in sample.values.items():
                if name in wanted:
                    totals[(name, labels)] = totals.get((name, labels), 0.0) + value
        return totals


@dataclass(frozen=True, slots=True)
class Verdict:
    expectation: Expectation
    seen: float | None
    passed: bool
    detail: str


def judge(result: RunResult) -> list[Verdict]:
    verdicts = [_judge_one(result, e) for e in result.scenario.expectations]
    verdicts.append(_ledger_verdict(result))
    return verdicts


def _ledger_verdict(result: RunResult) -> Verdict:
    from ._model import Op

    ledger = Expectation(
        name="ledger holds at every sample",
        metric="ledger",
        truth=None,
        labels={},
        replica=None,
        group=None,
        tenant=None,
        check=Check.VALUE,
        op=Op.EQ,
        value=0,
        at_s=None,
        from_s=0.0,
        to_s=None,
        within_s=0.0,
        aggregate="sum",
    )
    count = len(result.ledger_violations)
    detail = result.ledger_violations[0] if count else f"{len(result.samples)} samples"
    return Verdict(ledger, float(count), count == 0, detail)


def _judge_one(result: RunResult, expectation: Expectation) -> Verdict:
    if expectation.truth is not None:
        seen = truth_value(result, expectation)
        return Verdict(
            expectation,
            seen,
            expectation.op.holds(seen, expectation.value),
            f"{len(_clients_of(result, expectation))} clients",
        )
    assert expectation.metric is not None
    points = result.series(expectation.metric, expectation.labels, expectation.replica)
    if not points:
        points = [(0.0, 0.0)]
    end = result.scenario.duration_s
    check = expectation.check
    if check is Check.VALUE:
        at = expectation.at_s if expectation.at_s is not None else math.inf
        seen = _value_at(points, at)
        return Verdict(
            expectation, seen, expectation.op.holds(seen, expectation.value), ""
        )
    window_end = expectation.to_s if expectation.to_s is not None else math.inf
    if check is Check.INCREASE:
        seen = _value_at(points, window_end) - _value_at(points, expectation.from_s)
        return Verdict(
            expectation, seen, expectation.op.holds(seen, expectation.value), ""
        )
    window = [v for t, v in points if expectation.from_s <= t <= window_end]
    if check in (Check.MAX, Check.MIN):
        if not window:
            return Verdict(expectation, None, False, "no sample in the window")
        seen = max(window) if check is Check.MAX else min(window)
        return Verdict(
            expectation, seen, expectation.op.holds(seen, expectation.value), ""
        )
    # REACHES: the first sample at or after from_s where the condition holds.
    limit = expectation.from_s + expectation.within_s
    for at, value in points:
        if at < expectation.from_s:
            continue
        if expectation.op.holds(value, expectation.value):
            reached = at - expectation.from_s
            return Verdict(
                expectation,
                value,
                at <= limit,
                f"after {reached:.1f} s (allowed {expectation.within_s:g} s)",
            )
    last = points[-1][1]
    return Verdict(
        expectation, last, False, f"never within {end - expectation.from_s:.1f} s"
    )


def _value_at(points: list[tuple[float, float]], at: float) -> float:
    """The last sampled value at or before ``at`` (the first one if none is)."""
    value = points[0][1]
    for t, v in points:
        if t > at:
            break
        value = v
    return value


def _clients_of(result: RunResult, expectation: Expectation) -> list[ClientRecord]:
    return [
        c
        for c in result.clients
        if (expectation.group is None or c.group == expectation.group)
        and (expectation.tenant is None or c.tenant == expectation.tenant)
    ]


def truth_value(result: RunResult, expectation: Expectation) -> float:
    truth = expectation.truth
    if truth in (Truth.PREMATURE_COMPLETIONS, Truth.COMPLETIONS):
        interchanges = [
            i
            for i in result.interchanges
            if expectation.tenant is None or i.tenant == expectation.tenant
        ]
        per = [
            float(
                i.premature
                if truth is Truth.PREMATURE_COMPLETIONS
                else len(i.completions)
            )
            for i in interchanges
        ]
        return _aggregate(per, expectation.aggregate)
    clients = _clients_of(result, expectation)
    if truth is Truth.MAX_CONNECT_RATE:
        per_second: dict[int, int] = {}
        for client in clients:
            for at in client.connect_times[1:]:
                per_second[int(at)] = per_second.get(int(at), 0) + 1
        return float(max(per_second.values(), default=0))
    attribute = {
        Truth.MISSED_EVENTS: "missed",
        Truth.LEAKED_EVENTS: "leaked",
        Truth.RECEIVED_EVENTS: "received",
        Truth.DUPLICATES: "duplicates",
        Truth.SHUTDOWN_FRAMES: "shutdown_frames",
        Truth.RELOAD_NOTICES: "reload_notices",
    }
    if truth is Truth.CONNECTS:
        per = [float(len(c.connect_times)) for c in clients]
    elif truth is Truth.SILENT_MISSES:
        per = [float(c.missed) for c in clients if not c.reload_notices]
    else:
        assert truth is not None
        per = [float(getattr(c, attribute[truth])) for c in clients]
    return _aggregate(per, expectation.aggregate)


def _aggregate(values: list[float], how: str) -> float:
    if not values:
        return 0.0
    if how == "max":
        return max(values)
    if how == "min":
        return min(values)
    return sum(values)


def check_ledger(sample: Sample) -> str | None:
    """A sentence when the contract's ledger fails in ``sample``, else None."""
    tenants = {
        dict(labels).get("tenant_id")
        for (name, labels) in sample.values
        if name == "rcm_realtime_fanout_total"
    }
    for tenant in sorted(t for t in tenants if t):
        fanout = _tenant_value(sample, tenant, "rcm_realtime_fanout_total")
        accounted = (
            _tenant_value(sample, tenant, "rcm_realtime_delivered_total")
            + sum(
                _tenant_value(sample, tenant, "rcm_realtime_dropped_total", reason=r)
                for r in ("permission", "backpressure", "disconnected")
            )
            + _tenant_value(sample, tenant, "rcm_realtime_queued")
        )
        if fanout != accounted:
            return (
                f"replica {sample.replica} at {sample.at_s:.1f} s, tenant {tenant}: "
                f"fanout {fanout:g} != delivered + dropped + queued {accounted:g}"
            )
    return None


def _tenant_value(sample: Sample, tenant: str, name: str, **labels: str) -> float:
    return sample.values.get((name, label_set({"tenant_id": tenant, **labels})), 0.0)


@dataclass(frozen=True, slots=True)
class FidelityRow:
    metric: str
    labels: LabelSet
    sim: float
    hub: float
    within: bool


def compare_targets(sim: RunResult, hub: RunResult) -> list[FidelityRow]:
    fidelity = sim.scenario.fidelity
    sim_final = sim.final_families(fidelity.compare)
    hub_final = hub.final_families(fidelity.compare)
    rows: list[FidelityRow] = []
    for key in sorted(set(sim_final) | set(hub_final)):
        name, labels = key
        if any(set(ignored.items()) <= set(labels) for ignored in fidelity.ignore):
            continue
        left = sim_final.get(key, 0.0)
        right = hub_final.get(key, 0.0)
        difference = abs(left - right)
        allowed = max(fidelity.absolute, fidelity.relative * max(abs(left), abs(right)))
        rows.append(FidelityRow(name, labels, left, right, difference <= allowed))
    return rows
