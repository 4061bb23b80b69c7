"""The simulator against queueing theory: one subscriber is an M/M/1/K queue.

With Poisson arrivals at rate lambda, exponential draining at rate mu and room for
K frames (the one being written counts: the core keeps a frame queued until
``mark_written``), an arriving frame finds the queue full, and is dropped as
backpressure, with the blocking probability

    P_K = (1 - rho) rho^K / (1 - rho^(K+1)),   rho = lambda / mu.

Each case runs independent replications and builds a 99 % Student t interval from
them; the formula must fall inside, and the interval must be narrow enough to
exclude the blocking probability of one slot more or one slot less, so a model
that miscounts the frame in service fails.
"""

from __future__ import annotations

import math
import statistics

import pytest
from scipy import stats

from sim import World

from .sim_worlds import queueing_world

CAPACITY = 5
DRAIN_RATE = 10.0
REPLICATIONS = 20
CONFIDENCE = 0.99


def blocking_probability(rho: float, capacity: int) -> float:
    if rho == 1.0:
        return 1 / (capacity + 1)
    return (1 - rho) * rho**capacity / (1 - rho ** (capacity + 1))


def dropped_share(rho: float, duration_s: float, seed: int) -> float:
    """Backpressure drops per frame offered, after the first quarter (warm-up)."""
    result = World(
        queueing_world(
            arrival_rate=rho * DRAIN_RATE,
            drain_rate=DRAIN_RATE,
            capacity=CAPACITY,
            duration_s=duration_s,
            seed=seed,
        )
    ).run()
    warm = duration_s / 4

    def increase(metric: str, **labels: str) -> float:
        return result.value(metric, at=duration_s, **labels) - result.value(
            metric, at=warm, **labels
        )

    offered = increase("rcm_realtime_fanout_total")
    assert offered > 0
    return increase("rcm_realtime_dropped_total", reason="backpressure") / offered


@pytest.mark.parametrize(
    ("rho", "duration_s"),
    [(0.5, 600.0), (0.9, 400.0), (1.2, 400.0)],
    ids=["rho-0.5", "rho-0.9", "rho-1.2"],
)
def test_backpressure_drops_match_mm1k_blocking_probability(
    rho: float, duration_s: float
) -> None:
    """The share of frames dropped for backpressure is the M/M/1/K blocking
    probability, within a 99 % interval over independent replications."""
    shares = [
        dropped_share(rho, duration_s, seed=1000 + replication)
        for replication in range(REPLICATIONS)
    ]
    mean = statistics.mean(shares)
    quantile = stats.t.ppf(1 - (1 - CONFIDENCE) / 2, REPLICATIONS - 1)
    half_width = quantile * statistics.stdev(shares) / math.sqrt(REPLICATIONS)
    low, high = mean - half_width, mean + half_width

    expected = blocking_probability(rho, CAPACITY)
    assert low <= expected <= high, (
        f"P_K = {expected:.4f} outside [{low:.4f}, {high:.4f}]"
    )
    for neighbour in (CAPACITY - 1, CAPACITY + 1):
        other = blocking_probability(rho, neighbour)
        assert not low <= other <= high, (
            f"the interval [{low:.4f}, {high:.4f}] cannot tell K={CAPACITY} from "
            f"K={neighbour} (P = {other:.4f})"
        )
