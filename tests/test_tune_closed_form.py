"""The tuner against a closed form: Poisson arrivals inside an interchange.

With exponential gaps of rate lambda, one gap lasts at least w with probability
exp(-lambda w). A bucket completes early exactly when one of its gaps does, so an
interchange of n events (n - 1 independent gaps) gets a premature batch.completed
with probability 1 - (1 - exp(-lambda w)) ** (n - 1), and the number of premature
completions over all gaps is binomial with p = exp(-lambda w). Both shares measured
on the synthesizer must lie within a normal-approximation interval of that p for
the sample size (z = 3.29: 99.9 % two-sided per check).
"""

from __future__ import annotations

import math

import pytest

from tuning import Arrivals, WindowResult, parse_model, sweep

EVENTS = 5
INTERCHANGES = 4000
Z = 3.29
MEANS_S = (1.0, 0.4)
WINDOWS_MS = (250, 1000, 2000, 4000)


def poisson_model(mean_s: float) -> str:
    return f"""
[defaults]
interchanges = {INTERCHANGES}
events = {{ distribution = "fixed", value = {EVENTS} }}
gap = {{ distribution = "exponential", mean = {mean_s} }}
pause = {{ probability = 0 }}
between = {{ distribution = "fixed", value = "1h" }}
transit = {{ distribution = "fixed", value = 0 }}

[[partners]]
id = "poisson"
"""


@pytest.fixture(scope="module")
def swept() -> dict[float, tuple[Arrivals, dict[int, WindowResult]]]:
    found = {}
    for mean_s in MEANS_S:
        arrivals = parse_model(poisson_model(mean_s), "poisson.toml").generate(7)
        results = sweep(arrivals, WINDOWS_MS, workers=1)
        found[mean_s] = (arrivals, {r.window_ms: r for r in results})
    return found


def within_interval(observed: int, trials: int, p: float) -> tuple[bool, str]:
    half_width = Z * math.sqrt(p * (1 - p) / trials)
    share = observed / trials
    return abs(share - p) <= half_width, (
        f"observed {share:.5f}, expected {p:.5f} +- {half_width:.5f} (n={trials})"
    )


CASES = [
    pytest.param(mean_s, window_ms, id=f"mean{mean_s:g}s-w{window_ms}ms")
    for mean_s in MEANS_S
    for window_ms in WINDOWS_MS
]


@pytest.mark.parametrize(("mean_s", "window_ms"), CASES)
def test_premature_share_per_interchange_matches_closed_form(
    swept: dict[float, tuple[Arrivals, dict[int, WindowResult]]],
    mean_s: float,
    window_ms: int,
) -> None:
    """Interchanges with a premature completion: 1 - (1 - exp(-lambda w))^(n-1)."""
    stats = swept[mean_s][1][window_ms].overall
    p_gap = math.exp(-(window_ms / 1000) / mean_s)
    expected = 1 - (1 - p_gap) ** (EVENTS - 1)

    ok, detail = within_interval(stats.premature, stats.interchanges, expected)

    assert stats.interchanges == INTERCHANGES
    assert ok, detail


@pytest.mark.parametrize(("mean_s", "window_ms"), CASES)
def test_premature_completions_per_gap_match_closed_form(
    swept: dict[float, tuple[Arrivals, dict[int, WindowResult]]],
    mean_s: float,
    window_ms: int,
) -> None:
    """Every completion beyond an interchange's last is one gap of at least w,
    which happens with probability exp(-lambda w)."""
    stats = swept[mean_s][1][window_ms].overall
    gaps = INTERCHANGES * (EVENTS - 1)
    early = stats.completions - stats.interchanges

    ok, detail = within_interval(early, gaps, math.exp(-(window_ms / 1000) / mean_s))

    assert ok, detail


@pytest.mark.parametrize("window_ms", WINDOWS_MS, ids=lambda w: f"w{w}ms")
def test_latency_is_the_window_when_events_arrive_as_they_occur(
    swept: dict[float, tuple[Arrivals, dict[int, WindowResult]]], window_ms: int
) -> None:
    """Without transit time the final completion comes exactly one window after
    the interchange's last event."""
    stats = swept[1.0][1][window_ms].overall

    assert stats.latency_p50_s == pytest.approx(window_ms / 1000, abs=1e-6)
    assert stats.latency_p95_s == pytest.approx(window_ms / 1000, abs=1e-6)
