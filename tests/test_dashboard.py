"""The live dashboard page: served by the hub, driven end to end in Chromium."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from hub import MemoryBus, Replica, TokenVerifier, load_catalog

from .browser import Page, chromium
from .support import hub_settings, publish, running_replicas, token, url

SUBSCRIBER = token(subject="dashboard-user")


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    with chromium(tmp_path / "profile") as tab:
        yield tab


# -- served files -----------------------------------------------------------------


async def test_catalog_labels_are_public_and_carry_no_permissions(
    session: aiohttp.ClientSession,
) -> None:
    """The page's label table needs no token and holds only labels and severities."""
    async with (
        running_replicas() as [replica],
        session.get(url(replica, "/dashboard/catalog.json")) as response,
    ):
        assert response.status == 200
        body = await response.json()
    rows = body["types"]
    assert rows["claim.rejected"] == {
        "label": "Claim rejected by payer",
        "severity": "error",
    }
    assert rows["claim.status_checked"]["severity"] == "silent"
    assert all(set(row) == {"label", "severity"} for row in rows.values())


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/dashboard", "text/html"),
        ("/dashboard/dashboard.js", "text/javascript"),
        ("/dashboard/dashboard.css", "text/css"),
    ],
    ids=["page", "script", "styles"],
)
async def test_page_files_are_served_with_a_strict_policy(
    session: aiohttp.ClientSession, path: str, content_type: str
) -> None:
    """Each file comes with its type, a same-origin-only policy and no referrer."""
    async with (
        running_replicas() as [replica],
        session.get(url(replica, path)) as response,
    ):
        assert response.status == 200
        assert response.content_type == content_type
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert len(await response.read()) > 500


async def test_unknown_dashboard_file_is_a_json_404(
    session: aiohttp.ClientSession,
) -> None:
    """A path under /dashboard that is no file answers 404 with a JSON body."""
    async with (
        running_replicas() as [replica],
        session.get(url(replica, "/dashboard/../catalog.toml")) as response,
    ):
        assert response.status == 404
        assert (await response.json())["error"] == "not_found"


# -- in the browser ---------------------------------------------------------------

TOASTS = "return [...document.querySelectorAll('#toasts .toast')]"
TRAY = "return [...document.querySelectorAll('#tray .event')]"


def toasts_of(event_type: str) -> str:
    return f"{TOASTS}.filter(t => t.dataset.type === {event_type!r}).length"


def tray_of(event_type: str) -> str:
    return f"{TRAY}.filter(t => t.dataset.type === {event_type!r}).length"


@pytest.mark.browser
async def test_published_event_shows_as_a_toast_and_in_the_tray(
    session: aiohttp.ClientSession, page: Page, tmp_path: Path
) -> None:
    """Signed in by ?access_token=, the page toasts an error event with the catalog's
    label, puts a silent one in the tray only, and drops the token from the URL."""
    async with running_replicas() as [replica]:
        await page.open(url(replica, f"/dashboard?access_token={SUBSCRIBER}"))
        await page.wait_for_state("connected")
        assert "access_token" not in await page.js("return location.href")

        await publish(
            session,
            replica,
            [
                {
                    "type": "claim.rejected",
                    "tenantId": "acme",
                    "payload": {"claimId": "C-1042", "payer": "Aetna"},
                },
                {"type": "claim.status_checked", "tenantId": "acme", "payload": {}},
            ],
        )
        await page.wait_for(tray_of("claim.status_checked"), what="the silent event")
        await page.wait_for(toasts_of("claim.rejected"), what="the error toast")

        toast_text = await page.js(f"{TOASTS}[0].innerText")
        assert "Claim rejected by payer" in toast_text
        assert "claimId C-1042" in toast_text
        assert await page.js(f"{TOASTS}[0].dataset.severity") == "error"
        assert await page.js(toasts_of("claim.status_checked")) == 0
        assert "Claim status checked" in await page.js(f"{TRAY}[0].innerText")
        who = await page.js("return document.getElementById('who').textContent")
        assert who == "tenant acme · replica r1"
        await page.wait_for(
            "return document.getAnimations().length === 0", what="toasts settled"
        )
        await page.screenshot(tmp_path / "dashboard.png")
    assert (tmp_path / "dashboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.browser
async def test_pasted_token_signs_in(
    session: aiohttp.ClientSession, page: Page
) -> None:
    """A token pasted into the form connects, and events arrive with their labels."""
    async with running_replicas() as [replica]:
        await page.open(url(replica, "/dashboard"))
        assert await page.connection() == "signed-out"
        await page.js(
            "document.getElementById('token').value = arguments[0];"
            "document.querySelector('#sign-in-form button').click();",
            SUBSCRIBER,
        )
        await page.wait_for_state("connected")
        await publish(
            session,
            replica,
            {
                "type": "denial.created",
                "tenantId": "acme",
                "payload": {"code": "CO-45"},
            },
        )
        await page.wait_for(toasts_of("denial.created"), what="the warning toast")
        assert "Denial received" in await page.js(f"{TOASTS}[0].innerText")


@pytest.mark.browser
async def test_refused_token_says_why_and_stops(page: Page) -> None:
    """A token the hub refuses is named with the hub's reason, not retried forever."""
    forged = SUBSCRIBER[:-4] + ("AAAA" if not SUBSCRIBER.endswith("AAAA") else "BBBB")
    async with running_replicas() as [replica]:
        await page.open(url(replica, f"/dashboard?access_token={forged}"))
        await page.wait_for_state("refused")
        message = await page.js(
            "return document.getElementById('sign-in-error').textContent"
        )
    assert "signature does not verify" in message


@asynccontextmanager
async def replica_on(
    port: int, replica_id: str, bus: MemoryBus
) -> AsyncIterator[Replica]:
    settings = hub_settings(retry_ms=300)
    replica = Replica(
        replica_id=replica_id,
        settings=settings,
        catalog=load_catalog(),
        bus=bus,
        verifier=TokenVerifier(secret=settings.jwt_secret),
    )
    await replica.start("127.0.0.1", port)
    try:
        yield replica
    finally:
        await replica.close()


@pytest.mark.browser
async def test_hub_restart_is_survived(
    session: aiohttp.ClientSession, page: Page
) -> None:
    """The hub stops and a new one starts on the same port: the page shows the
    shutdown, reconnects by itself, and toasts an event from the new hub."""
    bus = MemoryBus()
    async with replica_on(0, "first", bus) as first:
        port = first.port
        assert port is not None
        await page.open(url(first, f"/dashboard?access_token={SUBSCRIBER}"))
        await page.wait_for_state("connected")
    # The first hub has closed: its farewell was seen and the page keeps trying.
    await page.wait_for_state("reconnecting")
    states = await page.js(
        "return [...document.querySelectorAll('#history-list li')]"
        ".map(li => li.dataset.state).reverse()"
    )
    assert states[:3] == ["connecting", "connected", "server-shutdown"]

    async with replica_on(port, "second", bus) as second:
        await page.wait_for_state("connected")
        who = await page.js("return document.getElementById('who').textContent")
        assert "replica second" in who
        await publish(
            session,
            second,
            {"type": "claim.accepted", "tenantId": "acme", "payload": {"n": 2}},
        )
        await page.wait_for(toasts_of("claim.accepted"), what="a toast after restart")
