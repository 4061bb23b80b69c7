"""Prometheus exposition of the core's plain counters, one registry per replica."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .core import (
    DisconnectReason,
    DropReason,
    HubCore,
    LatencyHistogram,
)


class HubCollector(Collector):
    def __init__(
        self,
        core: HubCore,
        latency: LatencyHistogram,
        backlog: Callable[[], int],
    ) -> None:
        self._core = core
        self._latency = latency
        self._backlog = backlog

    def collect(self) -> Iterator[Metric]:
        stats = self._core.statistics()
        subscribers = GaugeMetricFamily(
            "rcm_realtime_subscribers",
            "Open streams on this replica",
            labels=["tenant_id"],
        )
        dispatched = CounterMetricFamily(
            "rcm_realtime_events_dispatched",
            "Events taken from this replica's bus subscription and dispatched",
            labels=["tenant_id", "event_type"],
        )
        fanout = CounterMetricFamily(
            "rcm_realtime_fanout",
            "(event, subscriber of that tenant) pairs considered at dispatch",
            labels=["tenant_id"],
        )
        delivered = CounterMetricFamily(
            "rcm_realtime_delivered",
            "Frames written to subscribers' connections",
            labels=["tenant_id"],
        )
        dropped = CounterMetricFamily(
            "rcm_realtime_dropped",
            "Frames or events dropped, by reason",
            labels=["tenant_id", "reason"],
        )
        queued = GaugeMetricFamily(
            "rcm_realtime_queued",
            "Frames waiting in subscriber queues",
            labels=["tenant_id"],
        )
        disconnects = CounterMetricFamily(
            "rcm_realtime_disconnects",
            "Streams ended, by reason",
            labels=["tenant_id", "reason"],
        )
        batches_open = GaugeMetricFamily(
            "rcm_realtime_batches_open",
            "Batch buckets not yet quiet",
            labels=["tenant_id"],
        )
        batches_completed = CounterMetricFamily(
            "rcm_realtime_batches_completed",
            "batch.completed events synthesized",
            labels=["tenant_id"],
        )
        for tenant, t in sorted(stats.tenants.items()):
            subscribers.add_metric([tenant], t.subscribers)
            for event_type, count in sorted(t.dispatched.items()):
                dispatched.add_metric([tenant, event_type], count)
            fanout.add_metric([tenant], t.fanout)
            delivered.add_metric([tenant], t.delivered)
            for reason in DropReason:
                dropped.add_metric([tenant, reason.value], t.dropped[reason])
            queued.add_metric([tenant], t.queued)
            for disconnect in DisconnectReason:
                disconnects.add_metric(
                    [tenant, disconnect.value], t.disconnects[disconnect]
                )
            batches_open.add_metric([tenant], t.batches_open)
            batches_completed.add_metric([tenant], t.batches_completed)
        backlog = GaugeMetricFamily(
            "rcm_realtime_bus_backlog",
            "Messages waiting in this replica's bus subscription",
            value=self._backlog(),
        )
        latency = HistogramMetricFamily(
            "rcm_realtime_delivery_latency_seconds",
            "occurredAt to frame written",
            buckets=self._latency.cumulative(),
            sum_value=self._latency.total,
        )
        yield from (
            subscribers,
            dispatched,
            fanout,
            delivered,
            dropped,
            queued,
            disconnects,
            batches_open,
            batches_completed,
            backlog,
            latency,
        )


def replica_registry(
    core: HubCore, latency: LatencyHistogram, backlog: Callable[[], int]
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HubCollector(core, latency, backlog))
    return registry
