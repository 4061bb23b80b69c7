"""The contract's laws (ledger, gauges, isolation, farewells) over the hub core,
driven by the stateful machine in ``tests/stateful.py``."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hub import load_catalog
from hub.core import Catalog, CoreSettings, Envelope, HubCore, Principal

from .stateful import CoreAdapter, FakeClock, HubMachine, HubUnderTest

CATALOG = load_catalog()
MACHINE_RUNS = 400


class CoreHubMachine(HubMachine):
    """The bare core behind a fake clock, with the edge's writes played inline."""

    def make_hub(self, settings: CoreSettings, catalog: Catalog) -> HubUnderTest:
        return CoreAdapter(settings, catalog)


TestCoreHubKeepsTheLaws = CoreHubMachine.TestCase
# Many runs end before anything overflows or goes quiet, so the machine gets more of
# them than the profile's default; still about ten seconds on the ci profile.
TestCoreHubKeepsTheLaws.settings = settings(
    max_examples=max(MACHINE_RUNS, settings().max_examples)
)


@given(
    queued=st.integers(min_value=0, max_value=4),
    counts=st.lists(st.integers(min_value=0, max_value=6), max_size=4),
)
def test_mark_written_moves_at_most_what_is_queued(
    queued: int, counts: list[int]
) -> None:
    """Marking ``count`` frames written delivers the oldest ``min(count, queued)``
    frames, keeps the ledger, and never fails on a short or empty queue."""
    core = HubCore(catalog=CATALOG, clock=FakeClock(), replica_id="r1")
    subscriber = core.subscribe(Principal("user", "acme", frozenset({"claims.read"})))
    for n in range(queued):
        core.dispatch(
            Envelope(
                id=f"e{n}",
                type="claim.submitted",
                tenant_id="acme",
                occurred_at="2027-01-15T08:00:00.000Z",
                severity="info",
                payload={},
            )
        )
    delivered = 0
    for count in counts:
        moved = min(count, len(subscriber.queue))
        core.mark_written(subscriber, count)
        delivered += moved
        assert subscriber.delivered == delivered
        assert len(subscriber.queue) == queued - delivered
        assert core.counters("acme").ledger_gap() == 0
        if delivered:
            assert subscriber.last_event_id == f"e{delivered - 1}"
