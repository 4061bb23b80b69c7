"""The fault vocabulary and its seeded decisions (pure, shared with the simulator)."""

from __future__ import annotations

import math
import random
import re
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.core import (
    ConfigError,
    FaultInjector,
    FaultKind,
    Faults,
    Latency,
    LatencyShape,
)
from hub.core._faults import MAX_DELAY_S


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("0.05", Latency.fixed(0.05)),
        ("50ms", Latency.fixed(0.05)),
        ("fixed:2s", Latency.fixed(2.0)),
        ("uniform:10ms,200ms", Latency.uniform(0.01, 0.2)),
        ("exp:50ms", Latency.exponential(0.05)),
        ("exponential:0.1", Latency.exponential(0.1)),
        ("lognormal:20ms,0.5", Latency.lognormal(0.02, 0.5)),
    ],
    ids=["bare-seconds", "ms", "fixed", "uniform", "exp", "exponential", "lognormal"],
)
def test_latency_spec_reads_each_shape(spec: str, expected: Latency) -> None:
    """Each documented spec form reads as the distribution it names."""
    assert Latency.parse(spec) == expected


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("soon", "not a duration"),
        ("gamma:1s", "unknown shape"),
        ("uniform:1s", "takes 2 value"),
        ("EXP:1s", "unknown shape"),
        ("exp:-1s", "not a duration"),
        ("lognormal:1s,wide", "not a number"),
    ],
    ids=[
        "word",
        "unknown-shape",
        "uniform-one-value",
        "upper-case-shape",
        "negative",
        "bad-shape",
    ],
)
def test_bad_latency_spec_is_refused_with_a_reason(spec: str, fragment: str) -> None:
    """A spec that cannot be read raises ConfigError saying what is wrong."""
    with pytest.raises(ConfigError, match=fragment):
        Latency.parse(spec)


def test_uniform_bounds_may_come_in_either_order() -> None:
    """``uniform:200ms,10ms`` is the same range as ``uniform:10ms,200ms``."""
    assert Latency.parse("uniform:200ms,10ms") == Latency.uniform(0.01, 0.2)


@pytest.mark.parametrize(
    "latency",
    [
        Latency.fixed(0.25),
        Latency.uniform(0.01, 0.2),
        Latency.exponential(0.05),
        Latency.lognormal(0.02, 0.5),
    ],
    ids=["fixed", "uniform", "exp", "lognormal"],
)
def test_latency_spec_round_trips(latency: Latency) -> None:
    """``spec()`` writes what ``parse`` reads back as the same distribution."""
    assert Latency.parse(latency.spec()) == latency


@given(
    low=st.floats(0, 5, allow_nan=False),
    width=st.floats(0, 5, allow_nan=False),
    seed=st.integers(0, 2**32),
)
def test_uniform_draws_stay_between_its_bounds(
    low: float, width: float, seed: int
) -> None:
    """Every uniform draw lies between the low and high bounds."""
    latency = Latency.uniform(low, low + width)
    rng = random.Random(seed)
    for _ in range(20):
        assert low <= latency.draw(rng) <= low + width


def test_custom_latency_draws_from_the_seeded_generator() -> None:
    """A custom sampler gets the injector's seeded generator, so runs repeat."""

    def jitter(rng: random.Random) -> float:
        return rng.choice((0.01, 0.02, 0.5))

    first = FaultInjector("r1", seed=3, faults=Faults(latency=Latency.custom(jitter)))
    second = FaultInjector("r1", seed=3, faults=Faults(latency=Latency.custom(jitter)))
    dues = [first.arrive(f"e{n}", float(n)) for n in range(50)]
    assert dues == [second.arrive(f"e{n}", float(n)) for n in range(50)]
    assert Latency.custom(jitter).shape is LatencyShape.CUSTOM


def test_custom_latency_refuses_a_negative_delay() -> None:
    """A sampler that returns a negative delay is an error, not a time machine."""
    latency = Latency.custom(lambda rng: -1.0)
    with pytest.raises(ConfigError, match="finite and >= 0"):
        latency.draw(random.Random(0))


def test_drop_takes_the_same_messages_for_the_same_seed() -> None:
    """Two injectors with one seed and replica id drop exactly the same ids."""
    runs = []
    for _ in range(2):
        injector = FaultInjector("r2", seed=11, faults=Faults(drop=0.3))
        for n in range(500):
            injector.arrive(f"e{n}", 0.0)
        runs.append(injector.taken_ids(FaultKind.DROP))
    assert runs[0] == runs[1]
    assert 100 < len(runs[0]) < 200


def test_replicas_draw_from_independent_generators() -> None:
    """The same seed gives different replicas different drops."""
    taken = []
    for replica in ("r1", "r2"):
        injector = FaultInjector(replica, seed=11, faults=Faults(drop=0.5))
        for n in range(200):
            injector.arrive(f"e{n}", 0.0)
        taken.append(injector.taken_ids(FaultKind.DROP))
    assert taken[0] != taken[1]


def test_switching_latency_on_leaves_drop_decisions_unchanged() -> None:
    """Drops and delays use separate generators: adding latency keeps the drops."""
    plain = FaultInjector("r1", seed=5, faults=Faults(drop=0.4))
    latent = FaultInjector(
        "r1", seed=5, faults=Faults(drop=0.4, latency=Latency.exponential(0.1))
    )
    for n in range(300):
        plain.arrive(f"e{n}", 0.0)
        latent.arrive(f"e{n}", 0.0)
    assert plain.taken_ids(FaultKind.DROP) == latent.taken_ids(FaultKind.DROP)


@given(
    gaps=st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=60),
    seed=st.integers(0, 1000),
)
def test_latency_keeps_arrival_order(gaps: list[float], seed: int) -> None:
    """With random delays, no message is ever due before the one ahead of it."""
    injector = FaultInjector(
        "r1", seed=seed, faults=Faults(latency=Latency.lognormal(0.05, 1.5))
    )
    now = 0.0
    dues = []
    for n, gap in enumerate(gaps):
        now += gap
        due = injector.arrive(f"e{n}", now)
        assert due is not None and due >= now
        dues.append(due)
    assert dues == sorted(dues)


def test_cut_takes_every_arrival_and_counts_it() -> None:
    """While cut, every arrival is taken and tallied by id; after, none is."""
    injector = FaultInjector("r3", faults=Faults(cut=True))
    assert [injector.arrive(f"e{n}", 0.0) for n in range(3)] == [None] * 3
    injector.apply(Faults())
    assert injector.arrive("e3", 1.0) == 1.0
    stats = injector.statistics()
    assert (stats.cut, stats.dropped, stats.taken) == (3, 0, 3)
    assert injector.taken_ids(FaultKind.CUT) == ("e0", "e1", "e2")


def test_pause_and_latency_take_nothing() -> None:
    """Only drop and cut take messages; asking pause for its ids is an error."""
    injector = FaultInjector("r1", faults=Faults(paused=True, latency=Latency.fixed(1)))
    assert injector.arrive("e0", 0.0) == 1.0
    assert injector.statistics().taken == 0
    with pytest.raises(ValueError, match="only drop and cut"):
        injector.taken_ids(FaultKind.PAUSE)


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({}, Faults()),
        ({"paused": True}, Faults(paused=True)),
        ({"cut": True, "drop": 0.25}, Faults(cut=True, drop=0.25)),
        ({"latency": "exp:20ms"}, Faults(latency=Latency.exponential(0.02))),
        ({"latency": 0.5}, Faults(latency=Latency.fixed(0.5))),
        ({"latency": None, "drop": 1}, Faults(drop=1.0)),
    ],
    ids=[
        "none",
        "paused",
        "cut-and-drop",
        "latency-spec",
        "latency-seconds",
        "drop-all",
    ],
)
def test_faults_read_from_json(document: dict[str, object], expected: Faults) -> None:
    """The JSON form names the whole fault set; absent keys mean no such fault."""
    faults = Faults.from_json(document)
    assert faults == expected
    assert Faults.from_json(faults.to_json()) == faults


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ([], "JSON object"),
        ({"pause": True}, "unknown fault 'pause'"),
        ({"paused": "yes"}, "'paused' must be true or false"),
        ({"drop": 1.5}, "fraction from 0 to 1"),
        ({"drop": True}, "fraction from 0 to 1"),
        ({"latency": "slow"}, "not a duration"),
        ({"latency": math.inf}, "finite"),
    ],
    ids=[
        "not-object",
        "unknown-key",
        "paused-text",
        "drop-above-one",
        "drop-bool",
        "latency-word",
        "latency-infinite",
    ],
)
def test_bad_faults_json_is_refused_with_a_reason(
    document: object, fragment: str
) -> None:
    """Malformed fault JSON raises ConfigError naming the offending key."""
    with pytest.raises(ConfigError, match=fragment):
        Faults.from_json(document)


def test_faults_report_their_kinds() -> None:
    """``kinds`` lists exactly the faults switched on; the default has none."""
    assert Faults().kinds() == frozenset()
    assert not Faults().active
    faults = Faults(paused=True, drop=0.1, latency=Latency.fixed(0))
    assert faults.kinds() == {FaultKind.PAUSE, FaultKind.DROP, FaultKind.LATENCY}
    assert faults.holding and faults.active


@pytest.mark.parametrize(
    "latency",
    [
        Latency.lognormal(1.0, 1e60),
        Latency.fixed(1e300),
        Latency.exponential(1e300),
        Latency.custom(lambda rng: 1e300),
    ],
    ids=["lognormal-wide", "fixed-huge", "exp-huge", "custom-huge"],
)
def test_draws_stay_finite_whatever_the_parameters(latency: Latency) -> None:
    """However extreme a distribution, a draw is a finite delay, capped."""
    rng = random.Random(4)
    for _ in range(50):
        assert 0 <= latency.draw(rng) <= MAX_DELAY_S


def test_a_too_long_latency_spec_is_refused() -> None:
    """A spec over 64 characters is refused before it is read."""
    with pytest.raises(ConfigError, match="at most 64"):
        Latency.parse("0" * 63 + "1s")


@given(
    seconds=st.decimals(0, 10**9, places=6, allow_nan=False),
    shape=st.decimals(0, 10, places=3, allow_nan=False),
)
def test_specs_never_use_exponents_and_read_back_exactly(
    seconds: Decimal, shape: Decimal
) -> None:
    """Specs are written in plain decimals, and read back as the same values."""
    for latency in (
        Latency.fixed(float(seconds)),
        Latency.lognormal(float(seconds), float(shape)),
    ):
        spec = latency.spec()
        assert re.search(r"[0-9.][eE]", spec) is None, spec
        assert Latency.parse(spec) == latency
