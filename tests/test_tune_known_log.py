"""The tuner on a known log: ``tests/data/quiet_window_log.csv``.

The log (written by ``tests/data/make_quiet_window_log.py``) has ordinary gaps of at
most 1.5 s, and pauses whose longest is exactly 5.8 s for four partners and 11.8 s
for the slow one. With 100 interchanges per partner and 500 in all, a target of
0.1 % tolerates no premature interchange, so the recommendation must be the smallest
window of the grid longer than the longest pause: 6000 ms and 12000 ms.
"""

from __future__ import annotations

import csv
import itertools
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import pytest

from tuning import WindowResult, load_arrival_log, recommend, sweep
from tuning._command import DEFAULT_WINDOWS_MS

LOG = Path(__file__).parent / "data" / "quiet_window_log.csv"
SLOW = "ferrell-group/thomas-clark-edi"
REGULAR = (
    "ferrell-group/morse-barry-and-torres-edi",
    "johnson-llc/lawrence-group-edi",
    "johnson-llc/perez-mercado-edi",
    "walter-alexander-and-anderson/cunningham-cline-and-grant-edi",
)


@pytest.fixture(scope="module")
def results() -> list[WindowResult]:
    return sweep(load_arrival_log(LOG), DEFAULT_WINDOWS_MS, workers=1)


def longest_gaps() -> dict[tuple[str, str], float]:
    """Each interchange's longest gap, read straight from the file."""
    times: dict[tuple[str, str], list[float]] = defaultdict(list)
    with LOG.open(newline="") as handle:
        for row in csv.DictReader(handle):
            label = f"{row['tenant_id']}/{row['trading_partner_id']}"
            moment = datetime.fromisoformat(row["occurred_at"]).timestamp()
            times[(label, row["isa13"])].append(moment)
    longest = {}
    for key, moments in times.items():
        moments.sort()
        gaps = [b - a for a, b in itertools.pairwise(moments)]
        longest[key] = max(gaps, default=0.0)
    return longest


def test_log_has_the_pauses_the_generator_promises() -> None:
    """The expectation rests on these: 11.8 s for the slow partner, 5.8 s for the
    others, and nothing in between ordinary gaps and pauses above 1.5 s."""
    by_partner: dict[str, float] = defaultdict(float)
    for (label, _), gap in longest_gaps().items():
        by_partner[label] = max(by_partner[label], gap)

    assert by_partner[SLOW] == pytest.approx(11.8, abs=1e-6)
    for label in REGULAR:
        assert by_partner[label] == pytest.approx(5.8, abs=1e-6)


def test_known_log_recommends_the_first_window_above_the_longest_pause(
    results: list[WindowResult],
) -> None:
    """At 0.1 % no premature interchange is tolerated: 12000 ms overall and for
    every partner at once, 12000 ms for the slow partner and 6000 ms for the rest."""
    arrivals = load_arrival_log(LOG)
    found = recommend(results, arrivals.partners, 0.001)

    assert found.overall.window_ms == 12000
    assert found.every_partner.window_ms == 12000
    assert {item.scope: item.window_ms for item in found.partners} == {
        SLOW: 12000,
        **dict.fromkeys(REGULAR, 6000),
    }
    assert found.overall.stats.premature == 0
    assert not found.overall.confirmed, "500 interchanges cannot confirm 0.1 %"


@pytest.mark.parametrize("target", [0.001, 0.01, 0.05, 0.1], ids=lambda t: f"{t:.1%}")
def test_recommendation_agrees_with_longest_gaps_counted_from_the_file(
    results: list[WindowResult], target: float
) -> None:
    """An interchange is premature at window w exactly when one of its gaps lasts
    w or more; counting that from the raw file gives the same recommendations."""
    longest = longest_gaps()
    labels = sorted({label for label, _ in longest})

    def expected(scope: set[str]) -> int | None:
        chosen = [gap for (label, _), gap in longest.items() if label in scope]
        for window_ms in DEFAULT_WINDOWS_MS:
            early = sum(gap >= window_ms / 1000 for gap in chosen)
            if early / len(chosen) <= target:
                return window_ms
        return None

    found = recommend(results, load_arrival_log(LOG).partners, target)

    assert found.overall.window_ms == expected(set(labels))
    assert {item.scope: item.window_ms for item in found.partners} == {
        label: expected({label}) for label in labels
    }


def test_premature_counts_agree_with_longest_gaps_at_every_window(
    results: list[WindowResult],
) -> None:
    """The synthesizer's premature count at each window is the number of
    interchanges with a gap at least that long."""
    longest = list(longest_gaps().values())

    for result in results:
        window_s = result.window_ms / 1000
        assert result.overall.premature == sum(gap >= window_s for gap in longest), (
            result.window_ms
        )
