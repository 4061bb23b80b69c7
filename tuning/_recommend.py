"""Recommendations: the smallest window that keeps premature completions under a
target, overall, for every partner at once, and for each partner.

The premature share can only fall as the window grows (a gap at least as long as a
wider window is at least as long as a narrower one, and every window replays the
same arrivals), so the first window of the sweep that meets the target is the
smallest one that does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ._arrivals import Partner
from ._sweep import Z_95, WindowResult, WindowStats


@dataclass(frozen=True, slots=True)
class Recommendation:
    """``window_ms`` is None when no window of the sweep meets the target; ``stats``
    then describe the widest window tried."""

    scope: str
    target_share: float
    window_ms: int | None
    stats: WindowStats

    @property
    def confirmed(self) -> bool:
        """Whether the sample shows the target holds with 95 % confidence."""
        return (
            self.window_ms is not None
            and self.stats.premature_share_upper <= self.target_share
        )

    @property
    def interchanges_to_confirm(self) -> int | None:
        """Interchanges without a premature completion that would confirm the
        target at 95 % (the Wilson bound with none observed); None for target 0."""
        if self.target_share <= 0:
            return None
        z2 = Z_95 * Z_95
        return int(z2 * (1 - self.target_share) / self.target_share) + 1


@dataclass(frozen=True, slots=True)
class Recommendations:
    overall: Recommendation
    every_partner: Recommendation
    partners: tuple[Recommendation, ...]


def recommend(
    results: Sequence[WindowResult], partners: Sequence[Partner], target_share: float
) -> Recommendations:
    if not results:
        raise ValueError("a recommendation needs at least one window")

    def first(
        scope: str,
        passes: Callable[[WindowResult], bool],
        stats: Callable[[WindowResult], WindowStats],
    ) -> Recommendation:
        for result in results:
            if passes(result):
                return Recommendation(
                    scope, target_share, result.window_ms, stats(result)
                )
        return Recommendation(scope, target_share, None, stats(results[-1]))

    def meets(stats: WindowStats) -> bool:
        return stats.premature_share <= target_share

    def of_partner(index: int) -> Callable[[WindowResult], WindowStats]:
        return lambda result: result.partners[index]

    def overall(result: WindowResult) -> WindowStats:
        return result.overall

    def passes(
        select: Callable[[WindowResult], WindowStats],
    ) -> Callable[[WindowResult], bool]:
        return lambda result: meets(select(result))

    per_partner = [
        first(partner.label, passes(of_partner(index)), of_partner(index))
        for index, partner in enumerate(partners)
    ]
    return Recommendations(
        overall=first("overall", passes(overall), overall),
        every_partner=first(
            "every partner",
            lambda r: all(meets(stats) for stats in r.partners),
            overall,
        ),
        partners=tuple(per_partner),
    )
