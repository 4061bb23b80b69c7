"""``rcm-realtime diagnose`` on real replicas: each runbook situation, its verdict."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import pytest

from hub import Replica, diagnose_live, load_catalog, new_event_id, now_iso
from hub._diagnose import (
    Basis,
    Diagnosis,
    TenantCounts,
    Verdict,
    diagnose,
    parse_scrape,
    render_text,
)
from hub._diagnose_cli import DiagnoseOptions, normalize_url, read_replicas
from hub.cli import main
from hub.core import Catalog, CatalogRow, ConfigError, ScrapeError, envelopes_from_body

from .support import (
    ADMIN,
    ALL_READ_SCOPES,
    METRICS_BEARER,
    hub_settings,
    open_stream,
    running_replicas,
    sample,
    scrape,
    stall_consumption,
    stalled_client,
    token,
    url,
    wait_until,
)

INTERVAL_S = 0.4
NEW_ROW = CatalogRow(
    "eligibility.checked", "eligibility.read", "info", "Eligibility checked"
)


async def run_diagnose(
    replicas: Sequence[Replica],
    *,
    tenant: str = "acme",
    admin: bool = False,
    catalog: Catalog | None = None,
    extra_urls: Sequence[str] = (),
    metrics_token: str = METRICS_BEARER,
    admin_token: str = ADMIN,
) -> Diagnosis:
    options = DiagnoseOptions(
        tenant=tenant,
        urls=tuple(url(r, "") for r in replicas) + tuple(extra_urls),
        metrics_token=metrics_token,
        admin_token=admin_token if admin else None,
        interval_s=INTERVAL_S,
    )
    result = await diagnose_live(options, catalog or load_catalog())
    # Rendering must work for every situation; its text is checked where it matters.
    render_text(result)
    json.dumps(result.as_json())
    return result


@contextlib.asynccontextmanager
async def trickle(
    replica: Replica,
    types: Sequence[str],
    *,
    tenant: str = "acme",
    every: float = 0.01,
    payload: dict[str, Any] | None = None,
) -> AsyncIterator[None]:
    """Publish the given types in turn while the block runs (at most 2,000 events)."""

    async def publish() -> None:
        for event_type in itertools.islice(itertools.cycle(types), 2000):
            envelopes = envelopes_from_body(
                {"type": event_type, "tenantId": tenant, "payload": payload or {}},
                catalog=replica.core.catalog,
                new_id=new_event_id,
                now_iso=now_iso,
            )
            await replica.publisher.publish(envelopes)
            await asyncio.sleep(every)

    task = asyncio.create_task(publish())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


ADMIN_IDS = ["metrics-only", "with-admin-token"]


async def test_tenant_without_streams_is_never_connected(
    session: aiohttp.ClientSession,
) -> None:
    """Events arrive for a tenant nobody streams: the client never connected."""
    async with (
        running_replicas(3) as replicas,
        open_stream(session, replicas[0], token(tenant="other")),
        trickle(replicas[0], ["claim.submitted"]),
    ):
        result = await run_diagnose(replicas)
    assert result.verdict is Verdict.NEVER_CONNECTED
    assert result.exit_status == 1
    assert result.basis is Basis.WINDOW
    assert len(result.findings[0].evidence) == 3


async def test_tenant_never_seen_says_so(session: aiohttp.ClientSession) -> None:
    """A tenant no replica has ever heard of is reported as never connected."""
    async with running_replicas(2) as replicas:
        result = await run_diagnose(replicas, tenant="ghost")
    assert result.verdict is Verdict.NEVER_CONNECTED
    assert "ever seen tenant ghost" in result.summary
    assert "1 subscribers" not in render_text(result)
    assert result.basis is Basis.SINCE_START


@pytest.mark.parametrize("admin", [False, True], ids=ADMIN_IDS)
async def test_tokens_lacking_a_family_scope_are_a_stale_role(
    session: aiohttp.ClientSession, admin: bool
) -> None:
    """Subscribers without denials.read drop denials: a stale role, with the roles
    that seed the missing scope."""
    scopes = [s for s in ALL_READ_SCOPES if s != "denials.read"]
    stale = token(scopes=scopes, roles=["PAYMENT_POSTER"], subject="alice")
    async with (
        running_replicas(2) as replicas,
        open_stream(session, replicas[0], stale),
        open_stream(session, replicas[1], stale),
        trickle(replicas[0], ["denial.created", "claim.submitted"]),
    ):
        result = await run_diagnose(replicas, admin=admin)
    assert result.verdict is Verdict.STALE_ROLE
    finding = result.findings[0]
    if admin:
        assert "lack denials.read" in finding.summary
        assert "BILLING_SPECIALIST, DENIALS_ANALYST, REVENUE_CYCLE_MANAGER" in (
            finding.summary
        )
        assert any(
            "2 of 2 subscribers lack denials.read" in e for e in finding.evidence
        )
        assert result.subscribers is not None and len(result.subscribers) == 2
    else:
        assert "denial.created (denials.read)" in finding.summary
        assert "--admin-token" in finding.next_step
        assert result.subscribers is None


async def test_token_holding_a_seeding_role_is_named_as_predating_it(
    session: aiohttp.ClientSession,
) -> None:
    """A token whose role now seeds the missing scope is told to sign in again."""
    scopes = [s for s in ALL_READ_SCOPES if s != "denials.read"]
    old = token(scopes=scopes, roles=["DENIALS_ANALYST"], subject="bob")
    async with (
        running_replicas(1) as replicas,
        open_stream(session, replicas[0], old),
        trickle(replicas[0], ["denial.created"]),
    ):
        result = await run_diagnose(replicas, admin=True)
    assert result.verdict is Verdict.STALE_ROLE
    assert any(
        "holds DENIALS_ANALYST, so the token predates the role table" in line
        for line in result.findings[0].evidence
    )


@pytest.mark.parametrize("admin", [False, True], ids=ADMIN_IDS)
async def test_new_type_whose_scope_no_role_seeds_is_unseeded(
    session: aiohttp.ClientSession, admin: bool
) -> None:
    """A deploy adds a row whose permission no role seeds: every subscriber drops it."""
    catalog = load_catalog().with_row(NEW_ROW)
    full = token(roles=["REVENUE_CYCLE_MANAGER"])
    async with (
        running_replicas(2, catalog=catalog) as replicas,
        open_stream(session, replicas[0], full),
        open_stream(session, replicas[1], full),
        trickle(replicas[1], ["eligibility.checked", "claim.submitted"]),
    ):
        result = await run_diagnose(replicas, admin=admin, catalog=catalog)
    assert result.verdict is Verdict.UNSEEDED_TYPE
    finding = result.findings[0]
    assert "eligibility.checked" in finding.summary
    assert "eligibility.read" in finding.summary
    assert "[roles]" in finding.next_step
    assert ("inferred" in finding.summary) is not admin


BIG = {"blob": "x" * 64_000}


@contextlib.asynccontextmanager
async def discarding_stream(
    session: aiohttp.ClientSession, replica: Replica, bearer: str
) -> AsyncIterator[None]:
    """A client that reads as fast as frames come and keeps none of them (the
    tests' SSE parser is too slow for megabytes of large frames)."""
    response = await session.get(
        url(replica, "/v1/realtime/stream"),
        headers={"Authorization": f"Bearer {bearer}"},
    )
    assert response.status == 200

    async def drain() -> None:
        async for _ in response.content.iter_any():
            pass

    task = asyncio.create_task(drain())
    try:
        yield
    finally:
        task.cancel()
        response.close()


async def back_up(publisher: Replica, stalled: Replica) -> None:
    """Publish large events until the stalled client's queue overflows."""
    [subscriber] = stalled.core.subscribers("acme")
    for _ in range(500):
        envelopes = envelopes_from_body(
            {"type": "claim.submitted", "tenantId": "acme", "payload": BIG},
            catalog=publisher.core.catalog,
            new_id=new_event_id,
            now_iso=now_iso,
        )
        await publisher.publisher.publish(envelopes)
        await asyncio.sleep(0.002)
        if subscriber.backpressure_since is not None:
            return
    raise AssertionError("the stalled client never backed up")


async def test_client_that_stops_reading_is_backpressure(
    session: aiohttp.ClientSession,
) -> None:
    """A client that stops reading, with a tiny queue, shows backpressure drops on
    its replica only, and the admin listing names it."""
    settings = hub_settings(queue_size=4, evict_after_s=5.0)
    async with (
        running_replicas(2, settings=settings) as replicas,
        stalled_client(replicas[1], token(subject="flappy")),
    ):
        await back_up(replicas[0], replicas[1])
        # The client still does not read: the stream stays backed up.
        async with trickle(replicas[0], ["claim.submitted"], payload=BIG):
            result = await run_diagnose(replicas, admin=True)
    assert result.verdict is Verdict.BACKPRESSURE
    assert result.basis is Basis.WINDOW
    evidence = result.findings[0].evidence
    assert any(line.startswith("r2 ") for line in evidence)
    assert not any(line.startswith("r1 ") for line in evidence)
    assert any("(user flappy): backpressured for" in line for line in evidence)


async def test_evicted_flapping_client_is_backpressure(
    session: aiohttp.ClientSession,
) -> None:
    """A stalled client evicted before the scrapes still yields the backpressure
    verdict, with the eviction in the evidence."""
    settings = hub_settings(queue_size=4, evict_after_s=0.3)
    async with (
        running_replicas(2, settings=settings) as replicas,
        discarding_stream(session, replicas[0], token()),
        stalled_client(replicas[1], token(subject="flappy")),
    ):
        await back_up(replicas[0], replicas[1])
        async with trickle(replicas[0], ["claim.submitted"], every=0.05):
            await wait_until(
                lambda: replicas[1].core.counters("acme").disconnects["evicted"] == 1,
                what="the eviction",
            )
        result = await run_diagnose(replicas)
    assert result.verdict is Verdict.BACKPRESSURE
    assert result.basis is Basis.SINCE_START
    assert "1 streams evicted" in result.summary


async def test_replica_whose_subscription_stalls_is_named(
    session: aiohttp.ClientSession,
) -> None:
    """One replica stops taking events from its subscription: it is named as
    stalled, with its backlog, and its peers are not."""
    async with (
        running_replicas(3) as replicas,
        open_stream(session, replicas[0], token()),
        open_stream(session, replicas[1], token()),
        open_stream(session, replicas[2], token()),
    ):
        stall_consumption(replicas[1])
        async with trickle(replicas[0], ["claim.submitted"]):
            result = await run_diagnose(replicas)
    assert result.verdict is Verdict.STALLED_REPLICA
    stalled = [f for f in result.findings if f.verdict is Verdict.STALLED_REPLICA]
    assert len(stalled) == 1
    assert "replica r2 " in stalled[0].summary
    assert "bus backlog" in stalled[0].summary


async def test_stalled_replica_is_found_by_backlog_in_a_quiet_window(
    session: aiohttp.ClientSession,
) -> None:
    """With no traffic during the scrapes, a backlog that does not drain still
    names the stalled replica."""
    async with (
        running_replicas(2) as replicas,
        open_stream(session, replicas[0], token()) as stream,
    ):
        stall_consumption(replicas[1])
        async with trickle(replicas[0], ["claim.submitted"]):
            await stream.wait_for_events(6)
        result = await run_diagnose(replicas)
    assert result.basis is Basis.SINCE_START
    assert result.verdict is Verdict.STALLED_REPLICA
    assert "replica r2 " in result.summary


async def test_type_without_catalog_row_is_unknown_type(
    session: aiohttp.ClientSession,
) -> None:
    """Events of a type the catalog lacks are dropped as unknown_type: a missing row."""
    async with (
        running_replicas(2) as replicas,
        open_stream(session, replicas[0], token()),
        trickle(replicas[0], ["eligibility.checked", "claim.submitted"]),
    ):
        result = await run_diagnose(replicas)
    assert result.verdict is Verdict.UNKNOWN_TYPE
    assert "catalog row" in result.summary


@pytest.mark.parametrize("admin", [False, True], ids=ADMIN_IDS)
async def test_flowing_tenant_is_healthy(
    session: aiohttp.ClientSession, admin: bool
) -> None:
    """Subscribers on every replica get everything: healthy, exit status 0."""
    async with (
        running_replicas(3) as replicas,
        open_stream(session, replicas[0], token()),
        open_stream(session, replicas[1], token()),
        open_stream(session, replicas[2], token()),
        trickle(replicas[2], ["claim.submitted", "denial.created"]),
    ):
        result = await run_diagnose(replicas, admin=admin)
    assert result.verdict is Verdict.HEALTHY
    assert result.exit_status == 0
    assert result.basis is Basis.WINDOW
    assert [r.subscribers for r in result.replicas] == [1, 1, 1]
    if admin:
        assert result.subscribers is not None
        assert {s.replica_id for s in result.subscribers} == {"r1", "r2", "r3"}
        assert "(admin listing)" in render_text(result)


async def test_quiet_window_judges_on_counts_since_start(
    session: aiohttp.ClientSession,
) -> None:
    """Drops that happened before the scrapes still lead to a verdict, labelled as
    counted since the replicas started."""
    scopes = [s for s in ALL_READ_SCOPES if s != "denials.read"]
    async with (
        running_replicas(1) as [replica],
        open_stream(session, replica, token(scopes=scopes)),
    ):
        async with trickle(replica, ["denial.created"]):
            await wait_until(
                lambda: replica.core.counters("acme").dropped_permission >= 3,
                what="three permission drops",
            )
        result = await run_diagnose([replica], admin=True)
    assert result.basis is Basis.SINCE_START
    assert result.verdict is Verdict.STALE_ROLE
    assert any("since each replica started" in note for note in result.notes)


async def test_unreachable_replica_gets_a_line_and_the_rest_is_read(
    session: aiohttp.ClientSession,
) -> None:
    """A replica that refuses connections is one line; the others are diagnosed."""
    dead = closed_port_url()
    async with (
        running_replicas(2) as replicas,
        open_stream(session, replicas[0], token()),
        trickle(replicas[0], ["claim.submitted"]),
    ):
        result = await run_diagnose(replicas, extra_urls=[dead])
    assert result.verdict is Verdict.UNREACHABLE
    assert result.exit_status == 1
    assert f"{dead}: unreachable (connection refused)" in result.findings[0].evidence
    assert Verdict.HEALTHY in [f.verdict for f in result.findings]


async def test_replica_that_never_answers_times_out_with_a_line() -> None:
    """A replica that accepts the connection and says nothing is reported as not
    answering within the timeout, and the run ends."""

    release = asyncio.Event()

    async def silent(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await release.wait()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        options = DiagnoseOptions(
            tenant="acme",
            urls=(f"http://127.0.0.1:{port}",),
            metrics_token=METRICS_BEARER,
            interval_s=INTERVAL_S,
            timeout_s=0.3,
        )
        readings = await read_replicas(options)
    finally:
        release.set()
        server.close()
        await server.wait_closed()
    result = diagnose("acme", readings, load_catalog())
    assert result.verdict is Verdict.UNDIAGNOSABLE
    assert result.findings[0].evidence == (
        f"http://127.0.0.1:{port}: unreachable (no answer within 0.3 s)",
    )


async def test_all_replicas_unreachable_cannot_be_diagnosed() -> None:
    """When no replica answers, the verdict is undiagnosable with exit status 2."""
    result = await run_diagnose([], extra_urls=[closed_port_url(), closed_port_url()])
    assert result.verdict is Verdict.UNDIAGNOSABLE
    assert result.exit_status == 2
    assert all("connection refused" in line for line in result.findings[0].evidence)


async def test_refused_metrics_token_is_said_plainly() -> None:
    """A wrong metrics token gets a line naming the refusal, and exit status 2."""
    async with running_replicas(2) as replicas:
        result = await run_diagnose(replicas, metrics_token="wrong")
    assert result.verdict is Verdict.UNDIAGNOSABLE
    assert result.exit_status == 2
    assert all(
        "refused the metrics token (401" in line for line in result.findings[0].evidence
    )
    assert "metrics bearer" in result.next_step


async def test_refused_admin_token_is_a_note_not_a_failure(
    session: aiohttp.ClientSession,
) -> None:
    """An admin token without PLATFORM_ADMIN is refused with a note; the rest runs."""
    async with (
        running_replicas(1) as replicas,
        open_stream(session, replicas[0], token()),
        trickle(replicas[0], ["claim.submitted"]),
    ):
        result = await run_diagnose(
            replicas, admin=True, admin_token=token(tenant=None)
        )
    assert result.verdict is Verdict.HEALTHY
    assert result.subscribers is None
    assert any("refused the admin token (403" in note for note in result.notes)


# -- the command line --------------------------------------------------------------


async def test_command_prints_json_and_exits_with_the_verdict(
    session: aiohttp.ClientSession, capsys: pytest.CaptureFixture[str]
) -> None:
    """``diagnose --json`` prints one JSON document and exits 1 on a problem."""
    async with running_replicas(2) as replicas:
        argv = ["diagnose", "--tenant", "acme", "--interval", "0.2", "--json"]
        argv += ["--token", METRICS_BEARER]
        for replica in replicas:
            argv += ["--url", f"127.0.0.1:{replica.port}"]
        status = await asyncio.to_thread(main, argv)
    document: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert status == 1
    assert document["verdict"] == "never_connected"
    assert document["exitStatus"] == 1
    assert [r["replicaId"] for r in document["replicas"]] == ["r1", "r2"]


async def test_command_reads_the_token_from_the_environment(
    session: aiohttp.ClientSession,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """METRICS_BEARER stands in for --token; the text report starts with the verdict."""
    monkeypatch.setenv("METRICS_BEARER", METRICS_BEARER)
    async with (
        running_replicas(1) as [replica],
        open_stream(session, replica, token()),
    ):
        argv = ["diagnose", "--tenant", "acme", "--interval", "0.2"]
        argv += ["--url", url(replica, "")]
        status = await asyncio.to_thread(main, argv)
    captured = capsys.readouterr()
    assert status == 0
    assert captured.out.startswith("tenant acme: healthy\n")
    assert "Traceback" not in captured.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tenant", "ACME", "--url", "x", "--token", "t"], "not a tenant slug"),
        (["--tenant", "acme", "--url", "ftp://h:1", "--token", "t"], "http://"),
        (["--tenant", "acme", "--url", "127.0.0.1:1"], "no metrics token"),
    ],
    ids=["bad-tenant", "bad-url", "no-token"],
)
def test_bad_usage_exits_2_with_a_sentence(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bad flags give one line on stderr and exit status 2, no traceback."""
    for name in ("METRICS_BEARER", "RCM_REALTIME_METRICS_BEARER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("RCM_REALTIME_ADMIN_TOKEN", raising=False)
    assert main(["diagnose", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


# -- pieces ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://hub:8080/", "http://hub:8080"),
        ("https://hub.example/metrics", "https://hub.example"),
        ("http://hub:8080/prefix/metrics?x=1", "http://hub:8080/prefix"),
    ],
    ids=["bare", "slash", "metrics-path", "prefix-and-query"],
)
def test_replica_urls_are_normalized(given: str, expected: str) -> None:
    """Operators paste URLs in many shapes; each becomes the replica's base."""
    assert normalize_url(given) == expected


def test_bad_url_is_a_config_error() -> None:
    """A URL that is not http(s) is refused with a sentence."""
    with pytest.raises(ConfigError, match="http://host:port"):
        normalize_url("ftp://hub:21")


@pytest.mark.parametrize(
    "text",
    ["not { prometheus", "# TYPE x counter\nx_total 1\n"],
    ids=["garbage", "no-hub-metrics"],
)
def test_foreign_scrape_text_is_a_scrape_error(text: str) -> None:
    """Text that is not the hub's exposition raises ScrapeError, not a crash."""
    with pytest.raises(ScrapeError):
        parse_scrape(text, taken_at=0.0)


async def test_live_scrape_parses_into_the_tenant_counts(
    session: aiohttp.ClientSession,
) -> None:
    """The parser reads the hub's own exposition: the same counts the tests see."""
    async with running_replicas(1) as [replica]:
        async with (
            open_stream(session, replica, token()),
            trickle(replica, ["claim.submitted"]),
        ):
            await wait_until(
                lambda: replica.core.counters("acme").delivered >= 3, what="3 frames"
            )
        samples = await scrape(session, replica)
        async with session.get(
            url(replica, "/metrics"),
            headers={"Authorization": f"Bearer {METRICS_BEARER}"},
        ) as response:
            parsed = parse_scrape(await response.text(), taken_at=0.0)
    counts = parsed.tenant("acme")
    assert counts.dispatched["claim.submitted"] == sample(
        samples,
        "rcm_realtime_events_dispatched_total",
        tenant_id="acme",
        event_type="claim.submitted",
    )
    assert counts.delivered == sample(
        samples, "rcm_realtime_delivered_total", tenant_id="acme"
    )


def test_counter_reset_between_scrapes_counts_the_new_value() -> None:
    """A replica restarted between scrapes shows its new count as the increase."""
    before = TenantCounts(dispatched={"claim.submitted": 50}, fanout=50, delivered=50)
    after = TenantCounts(dispatched={"claim.submitted": 7}, fanout=9, delivered=60)
    increase = after.since(before)
    assert increase.dispatched == {"claim.submitted": 7}
    assert increase.fanout == 9
    assert increase.delivered == 10
