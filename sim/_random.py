"""Seeded randomness: one ``random.Random`` per model, and distributions of durations.

Every model draws from its own stream, derived from the world seed and the model's
name, so adding a draw in one model never shifts the numbers another model sees, and a
world replays byte for byte. ``random.Random`` seeds a string through SHA-512, which
does not depend on ``PYTHONHASHSEED``.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Literal

DistributionKind = Literal["fixed", "exp", "uniform", "lognormal", "pareto"]

_ARITY: dict[str, int] = {
    "fixed": 1,
    "exp": 1,
    "uniform": 2,
    "lognormal": 2,
    "pareto": 2,
}
_SYNTAX = re.compile(r"^\s*([a-z]+)\s*\(\s*([^()]*?)\s*\)\s*$")
DISTRIBUTION_HELP = (
    "a number of seconds or one of 'fixed(s)', 'exp(mean)', 'uniform(low, high)', "
    "'lognormal(median, sigma)', 'pareto(scale, alpha)'"
)


def stream(seed: int, name: str) -> random.Random:
    """The random stream of the model called ``name`` in the world seeded ``seed``."""
    return random.Random(f"rcm-realtime-sim/{seed}/{name}")


@dataclass(frozen=True, slots=True)
class Distribution:
    """A non-negative random quantity, written ``exp(0.5)`` or ``uniform(5, 30)``."""

    kind: DistributionKind
    a: float
    b: float = 0.0

    def sample(self, rng: random.Random) -> float:
        kind = self.kind
        if kind == "fixed":
            return self.a
        if kind == "exp":
            return rng.expovariate(1.0 / self.a) if self.a > 0 else 0.0
        if kind == "uniform":
            return rng.uniform(self.a, self.b)
        if kind == "lognormal":
            return rng.lognormvariate(math.log(self.a), self.b)
        return self.a * rng.paretovariate(self.b)

    def sampler(self, rng: random.Random) -> Callable[[], float] | None:
        """A function drawing from this distribution with ``rng``; None when the
        value is fixed (nothing to draw)."""
        kind = self.kind
        if kind == "fixed":
            return None
        if kind == "exp":
            return partial(rng.expovariate, 1.0 / self.a) if self.a > 0 else None
        return partial(self.sample, rng)

    @property
    def mean(self) -> float:
        """The expected value (infinite for a Pareto tail with alpha at most 1)."""
        kind = self.kind
        if kind in ("fixed", "exp"):
            return self.a
        if kind == "uniform":
            return (self.a + self.b) / 2
        if kind == "lognormal":
            return self.a * math.exp(self.b * self.b / 2)
        return math.inf if self.b <= 1 else self.a * self.b / (self.b - 1)

    def __str__(self) -> str:
        if self.kind in ("fixed", "exp"):
            return f"{self.kind}({self.a:g})"
        return f"{self.kind}({self.a:g}, {self.b:g})"


def fixed(seconds: float) -> Distribution:
    return Distribution("fixed", seconds)


def exponential(mean: float) -> Distribution:
    return Distribution("exp", mean)


def uniform(low: float, high: float) -> Distribution:
    return Distribution("uniform", low, high)


def parse_distribution(value: object) -> Distribution:
    """Read a distribution from a config value; ``ValueError`` says what is wrong."""
    if isinstance(value, Distribution):
        return value
    if isinstance(value, bool):
        raise ValueError(f"expected {DISTRIBUTION_HELP}")
    if isinstance(value, int | float):
        return _checked("fixed", [float(value)])
    if not isinstance(value, str):
        raise ValueError(f"expected {DISTRIBUTION_HELP}")
    match = _SYNTAX.match(value)
    if match is None:
        try:
            return _checked("fixed", [float(value)])
        except ValueError:
            raise ValueError(f"'{value}' is not {DISTRIBUTION_HELP}") from None
    kind, arguments = match.group(1), match.group(2)
    if kind not in _ARITY:
        raise ValueError(f"unknown distribution '{kind}'; expected {DISTRIBUTION_HELP}")
    try:
        numbers = [float(part) for part in arguments.split(",")] if arguments else []
    except ValueError:
        raise ValueError(f"'{value}': the arguments must be numbers") from None
    if len(numbers) != _ARITY[kind]:
        raise ValueError(
            f"'{value}': {kind} takes {_ARITY[kind]} argument(s), not {len(numbers)}"
        )
    return _checked(kind, numbers)


def _checked(kind: str, numbers: list[float]) -> Distribution:
    if not all(math.isfinite(n) for n in numbers):
        raise ValueError("the arguments must be finite numbers")
    a = numbers[0]
    b = numbers[1] if len(numbers) > 1 else 0.0
    if kind in ("fixed", "exp") and a < 0:
        raise ValueError(f"{kind}: the value must be zero or more")
    if kind == "uniform" and not 0 <= a <= b:
        raise ValueError("uniform(low, high) needs 0 <= low <= high")
    if kind == "lognormal" and not (a > 0 and b >= 0):
        raise ValueError("lognormal(median, sigma) needs median > 0 and sigma >= 0")
    if kind == "pareto" and not (a > 0 and b > 0):
        raise ValueError("pareto(scale, alpha) needs scale > 0 and alpha > 0")
    return Distribution(kind, a, b)  # type: ignore[arg-type]
