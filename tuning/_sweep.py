"""The sweep: replay arrivals through the hub core's own batch synthesizer, once per
quiet window, in virtual time.

The driver plays the part of the hub's timer: before each arrival it completes every
bucket whose deadline has come, at that deadline, then hands the event to
``observe``. A gap exactly as long as the window therefore completes the bucket
first: it has been quiet for the whole window, which is what the contract asks.
Everything measured is read from what the synthesizer emits and reports
(``batch.completed`` payloads, ``open_count``); nothing here decides when a bucket
completes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

import numpy as np

from hub.core import BatchRef, BatchSynthesizer, Envelope

from ._arrivals import Arrivals

# Two-sided 95 %: the z used for every confidence bound the tuner reports.
Z_95 = 1.959963984540054


@dataclass(frozen=True, slots=True)
class WindowStats:
    """What one quiet window does to a set of interchanges (all, or one partner's)."""

    window_ms: int
    interchanges: int
    # Interchanges that got at least one batch.completed while events were to come.
    premature: int
    # batch.completed synthesized for these interchanges; one each is the ideal.
    completions: int
    max_completions: int
    # From the interchange's last occurredAt to its final batch.completed.
    latency_p50_s: float
    latency_p95_s: float
    # Buckets the synthesizer held open: peak, and mean over the whole replay.
    open_peak: int
    open_mean: float

    @property
    def premature_share(self) -> float:
        return self.premature / self.interchanges if self.interchanges else 0.0

    @property
    def premature_share_upper(self) -> float:
        """Wilson score upper bound of the premature share at 95 % confidence."""
        return wilson_upper(self.premature, self.interchanges)

    @property
    def completions_per_interchange(self) -> float:
        return self.completions / self.interchanges if self.interchanges else 0.0


@dataclass(frozen=True, slots=True)
class WindowResult:
    window_ms: int
    overall: WindowStats
    # In the order of ``Arrivals.partners``.
    partners: tuple[WindowStats, ...]


def wilson_upper(successes: int, trials: int, z: float = Z_95) -> float:
    if trials == 0:
        return 1.0
    share = successes / trials
    z2 = z * z
    centre = share + z2 / (2 * trials)
    spread = z * math.sqrt(share * (1 - share) / trials + z2 / (4 * trials * trials))
    return min(1.0, (centre + spread) / (1 + z2 / trials))


Progress = Callable[[int, int, int], None]


def sweep(
    arrivals: Arrivals,
    windows_ms: Sequence[int],
    *,
    workers: int | None = None,
    progress: Progress | None = None,
) -> list[WindowResult]:
    """One replay per window, spread over ``workers`` processes (default: every
    core). Each replay depends only on the arrivals and its window, so the results
    are the same whatever the number of workers; they come back ordered by window.
    """
    windows = sorted(set(windows_ms))
    count = min(workers or os.cpu_count() or 1, len(windows))
    results: dict[int, WindowResult] = {}

    if count <= 1:
        prepared = _Prepared(arrivals)
        for window_ms in windows:
            results[window_ms] = _measure(prepared, window_ms)
            if progress is not None:
                progress(len(results), len(windows), window_ms)
    else:
        with ProcessPoolExecutor(
            max_workers=count, initializer=_init_worker, initargs=(arrivals,)
        ) as pool:
            futures = {
                pool.submit(_measure_in_worker, window_ms): window_ms
                for window_ms in windows
            }
            for future in as_completed(futures):
                result = future.result()
                results[result.window_ms] = result
                if progress is not None:
                    progress(len(results), len(windows), result.window_ms)
    return [results[window_ms] for window_ms in windows]


# -- the replay ---------------------------------------------------------------------


class _Prepared:
    """Arrivals turned into envelopes once, shared by every window a process runs."""

    def __init__(self, arrivals: Arrivals) -> None:
        self.arrivals = arrivals
        self.times = arrivals.event_arrival_s.tolist()
        self.totals = arrivals.events_per_interchange().tolist()
        self.true_ends = arrivals.true_ends().tolist()
        self.partner_of = arrivals.interchange_partner.tolist()
        self.event_interchange = arrivals.event_interchange.tolist()

        refs: list[BatchRef] = []
        tenants: list[str] = []
        self.key_index: dict[tuple[str, str, str], int] = {}
        for index, isa13 in enumerate(arrivals.interchange_isa13):
            partner = arrivals.partners[self.partner_of[index]]
            refs.append(BatchRef(partner.trading_partner_id, isa13))
            tenants.append(partner.tenant_id)
            key = (partner.tenant_id, partner.trading_partner_id, isa13)
            self.key_index[key] = index
        payload: dict[str, object] = {}
        # The envelopes' occurredAt text, in the core's format (UTC, milliseconds),
        # written for all events at once.
        milliseconds = np.floor(
            (arrivals.epoch_s + arrivals.event_occurred_s) * 1000
        ).astype(np.int64)
        occurred_at = np.datetime_as_string(
            milliseconds.astype("datetime64[ms]"), unit="ms", timezone="UTC"
        ).tolist()
        self.envelopes = [
            Envelope(
                id=f"e{position}",
                type="claim.submitted",
                tenant_id=tenants[interchange],
                occurred_at=occurred_at[position],
                severity="info",
                payload=payload,
                batch=refs[interchange],
            )
            for position, interchange in enumerate(self.event_interchange)
        ]


_WORKER: _Prepared | None = None


def _init_worker(arrivals: Arrivals) -> None:
    global _WORKER
    _WORKER = _Prepared(arrivals)


def _measure_in_worker(window_ms: int) -> WindowResult:
    assert _WORKER is not None, "worker used before its initializer ran"
    return _measure(_WORKER, window_ms)


def _measure(prepared: _Prepared, window_ms: int) -> WindowResult:
    arrivals = prepared.arrivals
    synthesizer = BatchSynthesizer(window_ms / 1000)
    observe = synthesizer.observe
    due = synthesizer.due
    next_deadline = synthesizer.next_deadline
    open_count = synthesizer.open_count
    key_index = prepared.key_index
    totals = prepared.totals
    true_ends = prepared.true_ends
    partner_of = prepared.partner_of

    interchanges = arrivals.interchange_count
    seen = [0] * interchanges
    completions = [0] * interchanges
    premature = [False] * interchanges
    latency = [math.nan] * interchanges
    partners = len(arrivals.partners)
    start = prepared.times[0] if prepared.times else 0.0
    # Open buckets as step functions: count, peak, integral and time of last change,
    # for all partners together (index ``partners``) and for each one.
    opened = [0] * (partners + 1)
    peak = [0] * (partners + 1)
    area = [0.0] * (partners + 1)
    since = [start] * (partners + 1)

    def step(partner: int, at: float, change: int) -> None:
        for slot in (partner, partners):
            area[slot] += opened[slot] * (at - since[slot])
            since[slot] = at
            opened[slot] += change
            if opened[slot] > peak[slot]:
                peak[slot] = opened[slot]

    def complete_until(now: float) -> None:
        deadline = next_deadline()
        while deadline is not None and deadline <= now:
            for completion in due(deadline):
                body = completion.payload
                index = key_index[
                    (completion.tenant_id, body["tradingPartnerId"], body["isa13"])
                ]
                completions[index] += 1
                seen[index] += body["eventCount"]
                if seen[index] < totals[index]:
                    premature[index] = True
                else:
                    latency[index] = deadline - true_ends[index]
                step(partner_of[index], deadline, -1)
            deadline = next_deadline()

    envelopes = prepared.envelopes
    event_interchange = prepared.event_interchange
    for position, now in enumerate(prepared.times):
        complete_until(now)
        envelope = envelopes[position]
        tenant = envelope.tenant_id
        before = open_count(tenant)
        observe(envelope, now)
        if open_count(tenant) != before:
            step(partner_of[event_interchange[position]], now, +1)
    complete_until(math.inf)

    end = max(since)
    span = end - start
    partner_index = np.asarray(partner_of, dtype=np.int64)
    flags = np.asarray(premature, dtype=bool)
    counts = np.asarray(completions, dtype=np.int64)
    delays = np.asarray(latency, dtype=np.float64)

    def stats(mask: np.ndarray | None, slot: int) -> WindowStats:
        chosen = slice(None) if mask is None else mask
        chosen_delays = delays[chosen]
        p50, p95 = (
            np.percentile(chosen_delays, [50, 95]).tolist()
            if chosen_delays.size
            else (math.nan, math.nan)
        )
        chosen_counts = counts[chosen]
        return WindowStats(
            window_ms=window_ms,
            interchanges=int(chosen_counts.size),
            premature=int(flags[chosen].sum()),
            completions=int(chosen_counts.sum()),
            max_completions=int(chosen_counts.max()) if chosen_counts.size else 0,
            latency_p50_s=float(p50),
            latency_p95_s=float(p95),
            open_peak=peak[slot],
            open_mean=area[slot] / span if span > 0 else float(peak[slot]),
        )

    return WindowResult(
        window_ms=window_ms,
        overall=stats(None, partners),
        partners=tuple(
            stats(partner_index == partner, partner) for partner in range(partners)
        ),
    )
