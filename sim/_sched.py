"""Scheduling on SimPy's own hook: a ``Timeout`` whose callback does the work.

A callback costs one event, where a process costs a generator and an event per
step, so the models that act once per message use these and keep processes for the
few actors that really wait in loops (slow readers).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import simpy

Callback = Callable[[Any], None]


def call_later(env: simpy.Environment, delay: float, callback: Callback) -> None:
    """Run ``callback(event)`` after ``delay`` simulated seconds."""
    event = env.timeout(delay)
    event.callbacks.append(callback)


def call_at(env: simpy.Environment, at: float, callback: Callback) -> float:
    """Run ``callback(event)`` once ``env.now`` is at least ``at``; returns the time
    it will run.

    ``now + (at - now)`` can round to just below ``at``; the delay is nudged up so
    that a deadline compared with ``<=`` is always due when its callback runs.
    """
    now = env.now
    if at <= now:
        delay = 0.0
    else:
        delay = at - now
        while now + delay < at:
            delay = math.nextafter(delay, math.inf)
    event = env.timeout(delay)
    event.callbacks.append(callback)
    return now + delay


def do_later(
    env: simpy.Environment, delay: float, action: Callable[[], object]
) -> None:
    """Run ``action()`` after ``delay`` (for actions that do not need the event)."""

    def run(_: object) -> None:
        action()

    env.timeout(delay).callbacks.append(run)


def do_at(env: simpy.Environment, at: float, action: Callable[[], object]) -> None:
    """Run ``action()`` once ``env.now`` is at least ``at``."""

    def run(_: object) -> None:
        action()

    call_at(env, at, run)
