"""The sweep's measurements, the model's generator and the recommendation rules."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tuning import (
    Arrivals,
    load_arrival_log,
    parse_model,
    recommend,
    sweep,
    wilson_upper,
)
from tuning._report import TuningReport, render_table

HEADER = "tenant_id,trading_partner_id,isa13,occurred_at\n"


def tiny_log(tmp_path: Path) -> Arrivals:
    """Partner a: events at 0 s and 2 s of one interchange; partner b: one at 1 s."""
    path = tmp_path / "tiny.csv"
    path.write_text(
        HEADER
        + "acme,a,000000001,2026-03-02T08:00:00.000Z\n"
        + "acme,b,000000007,2026-03-02T08:00:01.000Z\n"
        + "acme,a,000000001,2026-03-02T08:00:02.000Z\n"
    )
    return load_arrival_log(path)


def test_hand_computed_replay_of_a_tiny_log(tmp_path: Path) -> None:
    """With a 1.5 s window: a completes at 1.5 s, reopens at 2 s and completes again
    at 3.5 s; b completes at 2.5 s. Open buckets are 1, 2, 1, 2, 1 over 3.5 s."""
    [result] = sweep(tiny_log(tmp_path), [1500], workers=1)
    stats = result.overall

    assert (stats.interchanges, stats.premature, stats.completions) == (2, 1, 3)
    assert stats.max_completions == 2
    assert stats.latency_p50_s == pytest.approx(1.5)
    assert stats.latency_p95_s == pytest.approx(1.5)
    assert stats.open_peak == 2
    assert stats.open_mean == pytest.approx(4.5 / 3.5)
    a, b = result.partners
    assert (a.premature, a.completions, a.open_peak) == (1, 2, 1)
    assert (b.premature, b.completions, b.open_peak) == (0, 1, 1)
    assert a.open_mean + b.open_mean == pytest.approx(stats.open_mean)


def test_gap_equal_to_the_window_completes_the_bucket(tmp_path: Path) -> None:
    """A bucket quiet for exactly the window is complete: the 2 s gap of partner a
    is premature at a 2000 ms window and not at 2001 ms."""
    results = sweep(tiny_log(tmp_path), [2000, 2001], workers=1)

    assert [r.partners[0].premature for r in results] == [1, 0]


TRANSIT_MODEL = """
[defaults]
interchanges = 600
events = { distribution = "uniform", min = 2, max = 30 }
gap = { distribution = "exponential", mean = "300ms" }
pause = { probability = 0.02, distribution = "uniform", min = "1s", max = "6s" }
transit = { distribution = "lognormal", median = "200ms", sigma = 1.0, cap = "3s" }

[[partners]]
id = "one"

[[partners]]
id = "two"
tenant = "globex"
"""


def test_premature_interchanges_are_those_with_a_long_arrival_gap() -> None:
    """Even with transit jitter reordering events, the synthesizer completes an
    interchange early exactly when two of its consecutive arrivals lie a window
    or more apart."""
    arrivals = parse_model(TRANSIT_MODEL, "transit.toml").generate(11)
    windows_ms = [500, 1000, 2000, 4000, 7000]
    longest = np.zeros(arrivals.interchange_count)
    last = np.full(arrivals.interchange_count, np.nan)
    for interchange, at in zip(
        arrivals.event_interchange.tolist(),
        arrivals.event_arrival_s.tolist(),
        strict=True,
    ):
        if not math.isnan(last[interchange]):
            longest[interchange] = max(longest[interchange], at - last[interchange])
        last[interchange] = at

    results = sweep(arrivals, windows_ms, workers=1)

    assert [r.overall.premature for r in results] == [
        int((longest >= w / 1000).sum()) for w in windows_ms
    ]


def test_latency_adds_the_transit_of_the_last_arrival() -> None:
    """The final completion comes a window after the last arrival, so its latency
    after the true end is the window plus the last event's lateness."""
    arrivals = parse_model(TRANSIT_MODEL, "transit.toml").generate(11)
    last_arrival = np.full(arrivals.interchange_count, -np.inf)
    np.maximum.at(last_arrival, arrivals.event_interchange, arrivals.event_arrival_s)
    lateness = last_arrival - arrivals.true_ends()

    [result] = sweep(arrivals, [3000], workers=1)

    assert result.overall.latency_p50_s == pytest.approx(
        3 + float(np.percentile(lateness, 50)), abs=1e-6
    )
    assert result.overall.latency_p95_s == pytest.approx(
        3 + float(np.percentile(lateness, 95)), abs=1e-6
    )


def test_adding_a_partner_leaves_the_others_arrivals_unchanged() -> None:
    """Each partner draws from its own seeded stream."""
    alone = parse_model(
        '[defaults]\ninterchanges = 50\n[[partners]]\nid = "one"\n', "a.toml"
    ).generate(5)
    both = parse_model(
        '[defaults]\ninterchanges = 50\n[[partners]]\nid = "zero"\n'
        '[[partners]]\nid = "one"\n',
        "b.toml",
    ).generate(5)
    one_in_both = both.interchange_partner[both.event_interchange] == 1

    assert np.array_equal(
        np.sort(alone.event_occurred_s), np.sort(both.event_occurred_s[one_in_both])
    )


def test_partner_tables_replace_defaults_which_replace_the_builtin() -> None:
    """Layers: built-in [defaults], then the file's [defaults], then the partner."""
    model = parse_model(
        """
        [defaults]
        interchanges = 10
        gap = { distribution = "fixed", value = "1s" }
        [[partners]]
        id = "plain"
        [[partners]]
        id = "own"
        gap = { distribution = "uniform", min = "1s", max = "2s" }
        """,
        "layers.toml",
    )
    plain, own = model.partners

    assert plain.interchanges == own.interchanges == 10
    assert plain.gap.kind == "fixed" and plain.gap.parameters == (1.0,)
    assert own.gap.kind == "uniform" and own.gap.parameters == (1.0, 2.0)
    assert plain.transit.kind == "lognormal", "built-in transit kept"


@pytest.mark.parametrize("trials", [10, 500, 5000], ids=lambda n: f"n{n}")
def test_wilson_upper_bound_with_nothing_observed(trials: int) -> None:
    """With no premature interchange the bound is z^2 / (n + z^2)."""
    z2 = 1.959963984540054**2

    assert wilson_upper(0, trials) == pytest.approx(z2 / (trials + z2))


def test_no_window_meeting_the_target_is_said_plainly(tmp_path: Path) -> None:
    """When even the widest window leaves too many premature interchanges the
    recommendation is none, and the table says which scopes to sweep wider."""
    arrivals = tiny_log(tmp_path)
    results = sweep(arrivals, [500, 1000], workers=1)
    found = recommend(results, arrivals.partners, 0.001)
    report = TuningReport(
        source="tiny.csv",
        kind="log",
        seed=None,
        partners=arrivals.partners,
        interchanges=arrivals.interchange_count,
        events=arrivals.event_count,
        target_share=0.001,
        results=tuple(results),
        recommendations=found,
    )

    text = render_table(report)

    assert found.overall.window_ms is None
    assert found.overall.stats.window_ms == 1000
    assert [p.window_ms for p in found.partners] == [None, 500]
    assert "none of the windows tried" in text
    assert "no window tried meets the target for: acme/a" in text
