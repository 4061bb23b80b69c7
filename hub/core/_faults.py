"""Faults of one replica's bus subscription, and the seeded decisions that apply them.

The vocabulary is shared by the hub's in-process bus and the simulator's bus, so a
scenario means the same thing on both. Nothing here does I/O, reads a clock or knows
an event loop: the caller passes the time in and applies the delays it is given.

What each fault does to a subscription:

- paused: messages keep arriving and wait, counted in the backlog; nothing is taken
  until it is resumed, then everything waiting is delivered in order.
- latency: each arriving message waits a delay drawn from a distribution before it
  can be taken; order is kept (a message is never due before the one ahead of it).
- drop: each arriving message is lost with the given probability, drawn from a
  seeded generator; lost messages are counted and their ids kept.
- cut: the replica is cut off from the topic: messages arriving meanwhile are lost
  (counted, ids kept), messages already waiting stay until it is restored, and the
  subscription is not live, so the replica is not ready.
"""

from __future__ import annotations

import enum
import math
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from ._errors import ConfigError


class FaultKind(enum.StrEnum):
    PAUSE = "pause"  # messages wait, counted in the backlog
    LATENCY = "latency"  # each message waits a drawn delay
    DROP = "drop"  # a fraction of arriving messages is lost
    CUT = "cut"  # arriving messages are lost; the subscription is not live


class LatencyShape(enum.StrEnum):
    FIXED = "fixed"  # always ``a`` seconds
    UNIFORM = "uniform"  # uniform between ``a`` and ``b`` seconds
    EXPONENTIAL = "exponential"  # exponential with mean ``a`` seconds
    LOGNORMAL = "lognormal"  # log-normal with median ``a`` seconds, shape ``b``
    CUSTOM = "custom"  # drawn by a function of the seeded generator


LatencySampler = Callable[[random.Random], float]

# Longer delays are this one: a message this late is as good as never delivered.
MAX_DELAY_S = 1e9
MAX_SPEC_LENGTH = 64

_SHAPE_ALIASES = {
    "fixed": LatencyShape.FIXED,
    "uniform": LatencyShape.UNIFORM,
    "exp": LatencyShape.EXPONENTIAL,
    "exponential": LatencyShape.EXPONENTIAL,
    "lognormal": LatencyShape.LOGNORMAL,
}
# The OpenAPI description of the fault endpoint repeats this grammar as a pattern.
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(ms|s)?\s*$")
_NUMBER = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*$")
SPEC_HELP = (
    "a latency is '50ms', 'fixed:50ms', 'uniform:10ms,200ms', 'exp:50ms' "
    "(mean) or 'lognormal:50ms,0.5' (median, shape)"
)


@dataclass(frozen=True, slots=True)
class Latency:
    """A delay distribution; build it with the class methods or ``parse``."""

    shape: LatencyShape
    a: float = 0.0
    b: float = 0.0
    sampler: LatencySampler | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for name in ("a", "b"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"latency {name}={value!r} must be finite and >= 0")
        if (self.shape is LatencyShape.CUSTOM) != (self.sampler is not None):
            raise ConfigError("a custom latency, and only it, has a sampler function")

    @classmethod
    def fixed(cls, seconds: float) -> Latency:
        return cls(LatencyShape.FIXED, seconds)

    @classmethod
    def uniform(cls, low_s: float, high_s: float) -> Latency:
        """Uniform between the two bounds, given in either order."""
        return cls(LatencyShape.UNIFORM, min(low_s, high_s), max(low_s, high_s))

    @classmethod
    def exponential(cls, mean_s: float) -> Latency:
        return cls(LatencyShape.EXPONENTIAL, mean_s)

    @classmethod
    def lognormal(cls, median_s: float, shape: float) -> Latency:
        return cls(LatencyShape.LOGNORMAL, median_s, shape)

    @classmethod
    def custom(cls, sampler: LatencySampler) -> Latency:
        """Delays drawn by ``sampler(rng)``; the generator it gets is seeded."""
        return cls(LatencyShape.CUSTOM, sampler=sampler)

    @classmethod
    def parse(cls, spec: str) -> Latency:
        """Read a small spec: ``50ms``, ``fixed:0.05``, ``uniform:10ms,200ms``,
        ``exp:50ms``, ``lognormal:50ms,0.5``; bare numbers are seconds."""
        if len(spec) > MAX_SPEC_LENGTH:
            raise ConfigError(
                f"a latency spec has at most {MAX_SPEC_LENGTH} characters; {SPEC_HELP}"
            )
        name, colon, rest = spec.partition(":")
        if not colon:
            return cls.fixed(_seconds(spec, spec))
        shape = _SHAPE_ALIASES.get(name.strip())
        if shape is None:
            raise ConfigError(f"latency {spec!r}: unknown shape {name!r}; {SPEC_HELP}")
        args = rest.split(",")
        wanted = 2 if shape in (LatencyShape.UNIFORM, LatencyShape.LOGNORMAL) else 1
        if len(args) != wanted:
            raise ConfigError(
                f"latency {spec!r}: {shape.value} takes {wanted} value(s); {SPEC_HELP}"
            )
        if shape is LatencyShape.LOGNORMAL:
            return cls.lognormal(_seconds(args[0], spec), _number(args[1], spec))
        if shape is LatencyShape.UNIFORM:
            return cls.uniform(_seconds(args[0], spec), _seconds(args[1], spec))
        return cls(shape, _seconds(args[0], spec))

    def spec(self) -> str:
        """The spec ``parse`` reads back; a custom latency reads as ``custom``."""
        a, b = _plain(self.a), _plain(self.b)
        if self.shape is LatencyShape.FIXED:
            return f"fixed:{a}s"
        if self.shape is LatencyShape.UNIFORM:
            return f"uniform:{a}s,{b}s"
        if self.shape is LatencyShape.EXPONENTIAL:
            return f"exp:{a}s"
        if self.shape is LatencyShape.LOGNORMAL:
            return f"lognormal:{a}s,{b}"
        return "custom"

    def draw(self, rng: random.Random) -> float:
        """One delay in seconds, from 0 to ``MAX_DELAY_S``."""
        shape = self.shape
        if shape is LatencyShape.FIXED:
            value = self.a
        elif shape is LatencyShape.UNIFORM:
            value = rng.uniform(self.a, self.b)
        elif shape is LatencyShape.EXPONENTIAL:
            value = rng.expovariate(1 / self.a) if self.a > 0 else 0.0
        elif shape is LatencyShape.LOGNORMAL:
            # The exponent is capped so that no shape, however wide, overflows.
            exponent = min(rng.gauss(0.0, self.b), 700.0)
            value = self.a * math.exp(exponent) if self.a > 0 else 0.0
        else:
            assert self.sampler is not None
            value = float(self.sampler(rng))
            if not math.isfinite(value) or value < 0:
                raise ConfigError(
                    f"the latency function returned {value!r}; a delay is finite "
                    "and >= 0"
                )
        return min(value, MAX_DELAY_S)


def _plain(value: float) -> str:
    """The shortest exact decimal of ``value`` without an exponent, which the
    spec grammar does not have."""
    return format(Decimal(repr(value)), "f")


def _seconds(text: str, spec: str) -> float:
    match = _DURATION.match(text)
    if match is None:
        raise ConfigError(f"latency {spec!r}: {text.strip()!r} is not a duration")
    value = float(match.group(1))
    return value / 1000 if match.group(2) == "ms" else value


def _number(text: str, spec: str) -> float:
    match = _NUMBER.match(text)
    if match is None:
        raise ConfigError(f"latency {spec!r}: {text.strip()!r} is not a number")
    return float(match.group(1))


FAULT_KEYS = ("paused", "cut", "drop", "latency")


@dataclass(frozen=True, slots=True)
class Faults:
    """What is wrong with one subscription now; the default is nothing."""

    paused: bool = False
    cut: bool = False
    drop: float = 0.0
    latency: Latency | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.drop <= 1.0:
            raise ConfigError(f"drop={self.drop!r} must be a fraction from 0 to 1")

    @property
    def active(self) -> bool:
        return self.paused or self.cut or self.drop > 0 or self.latency is not None

    @property
    def holding(self) -> bool:
        """Nothing may be taken from the subscription while this holds."""
        return self.paused or self.cut

    def kinds(self) -> frozenset[FaultKind]:
        kinds = set()
        if self.paused:
            kinds.add(FaultKind.PAUSE)
        if self.cut:
            kinds.add(FaultKind.CUT)
        if self.drop > 0:
            kinds.add(FaultKind.DROP)
        if self.latency is not None:
            kinds.add(FaultKind.LATENCY)
        return frozenset(kinds)

    def changed(self, **changes: Any) -> Faults:
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        return {
            "paused": self.paused,
            "cut": self.cut,
            "drop": self.drop,
            "latency": None if self.latency is None else self.latency.spec(),
        }

    @classmethod
    def from_json(cls, document: Any) -> Faults:
        """The whole fault set from JSON; absent keys mean no such fault."""
        if not isinstance(document, Mapping):
            raise ConfigError(
                "faults are a JSON object with "
                + ", ".join(f"'{key}'" for key in FAULT_KEYS)
            )
        unknown = sorted(set(document) - set(FAULT_KEYS))
        if unknown:
            raise ConfigError(
                f"unknown fault {unknown[0]!r}; faults are "
                + ", ".join(f"'{key}'" for key in FAULT_KEYS)
            )
        paused = document.get("paused", False)
        cut = document.get("cut", False)
        for name, value in (("paused", paused), ("cut", cut)):
            if not isinstance(value, bool):
                raise ConfigError(f"'{name}' must be true or false")
        drop = document.get("drop", 0.0)
        if (
            isinstance(drop, bool)
            or not isinstance(drop, int | float)
            or not 0 <= drop <= 1
        ):
            raise ConfigError("'drop' must be a fraction from 0 to 1")
        raw_latency = document.get("latency")
        latency: Latency | None
        if raw_latency is None:
            latency = None
        elif isinstance(raw_latency, bool):
            raise ConfigError(f"'latency' must be a spec string; {SPEC_HELP}")
        elif isinstance(raw_latency, int | float):
            try:
                latency = Latency.fixed(float(raw_latency))
            except OverflowError:
                raise ConfigError(f"'latency' {raw_latency} is too large") from None
        elif isinstance(raw_latency, str):
            latency = Latency.parse(raw_latency)
        else:
            raise ConfigError(f"'latency' must be a spec string; {SPEC_HELP}")
        return cls(paused=paused, cut=cut, drop=float(drop), latency=latency)


NO_FAULTS = Faults()


@dataclass(frozen=True, slots=True)
class FaultStatistics:
    """What the faults of one replica's subscription have taken so far."""

    replica_id: str
    faults: Faults
    dropped: int
    cut: int

    @property
    def taken(self) -> int:
        return self.dropped + self.cut


class FaultInjector:
    """Applies one replica's faults to the messages that arrive at its subscription.

    Decisions draw from generators seeded by ``(seed, replica_id)``, one for drops
    and one for delays, so a replica's outcome depends neither on the other replicas'
    traffic nor on which other faults are switched on.
    """

    def __init__(
        self,
        replica_id: str,
        *,
        seed: int = 0,
        faults: Faults = NO_FAULTS,
        keep_ids: bool = True,
    ) -> None:
        self.replica_id = replica_id
        self.faults = faults
        self.keep_ids = keep_ids
        self._drop_rng = random.Random(f"{seed}/{replica_id}/drop")
        self._latency_rng = random.Random(f"{seed}/{replica_id}/latency")
        self._last_due = -math.inf
        self._taken: dict[FaultKind, list[str]] = {
            FaultKind.DROP: [],
            FaultKind.CUT: [],
        }
        self._counts = {FaultKind.DROP: 0, FaultKind.CUT: 0}

    def apply(self, faults: Faults) -> None:
        self.faults = faults

    def idle(self, now: float) -> bool:
        """True when arrivals at ``now`` are due at once and nothing is taken: no
        fault that acts on arrival is on, and no delayed message is still ahead."""
        faults = self.faults
        return (
            not faults.cut
            and faults.drop == 0
            and faults.latency is None
            and self._last_due <= now
        )

    def arrive(self, message_id: str, now: float) -> float | None:
        """When an arriving message may be taken, or None when a fault took it."""
        faults = self.faults
        if faults.cut:
            self._take(FaultKind.CUT, message_id)
            return None
        if faults.drop > 0 and self._drop_rng.random() < faults.drop:
            self._take(FaultKind.DROP, message_id)
            return None
        due = now
        if faults.latency is not None:
            due = now + faults.latency.draw(self._latency_rng)
        # Order is kept: a message is never due before the one ahead of it.
        if due < self._last_due:
            due = self._last_due
        self._last_due = due
        return due

    def _take(self, kind: FaultKind, message_id: str) -> None:
        self._counts[kind] += 1
        if self.keep_ids:
            self._taken[kind].append(message_id)

    def taken_ids(self, kind: FaultKind) -> tuple[str, ...]:
        """Ids of the messages ``kind`` took, in arrival order (drop and cut only)."""
        if kind not in self._taken:
            raise ValueError(f"{kind.value} takes no messages; only drop and cut do")
        return tuple(self._taken[kind])

    def statistics(self) -> FaultStatistics:
        return FaultStatistics(
            replica_id=self.replica_id,
            faults=self.faults,
            dropped=self._counts[FaultKind.DROP],
            cut=self._counts[FaultKind.CUT],
        )
