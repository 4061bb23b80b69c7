"""The hub's OpenAPI description, served by the hub and held to it by schemathesis."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp

from hub import issue_token

from .support import SECRET, hub_settings, running_replicas, url

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))


async def test_openapi_document_is_served(session: aiohttp.ClientSession) -> None:
    """GET /openapi.json answers the description of every contract endpoint."""
    async with running_replicas() as [replica]:
        async with session.get(url(replica, "/openapi.json")) as response:
            assert response.status == 200
            document = await response.json()
    assert set(document["paths"]) >= {
        "/v1/realtime/stream",
        "/v1/realtime/events",
        "/v1/realtime/batches/failures",
        "/metrics",
        "/v1/realtime/admin/subscribers",
        "/v1/realtime/admin/tenants/{tenant_id}/disconnect",
        "/healthz",
        "/readyz",
    }


async def test_schemathesis_finds_no_server_error_and_only_json_errors(
    tmp_path: Path,
) -> None:
    """Generated requests, valid and hostile, never get a 5xx or a non-JSON error,
    and every answer matches the description."""
    bearer = issue_token(
        secret=SECRET,
        tenant_id=None,
        scopes=["realtime.publish", "metrics.read"],
        roles=["PLATFORM_ADMIN"],
    )
    # Fault injection on, so that the fault endpoint is exercised, not only refused.
    settings = hub_settings(fault_injection=True)
    async with running_replicas(settings=settings) as [replica]:
        process = await asyncio.create_subprocess_exec(
            SCHEMATHESIS,
            "run",
            url(replica, "/openapi.json"),
            "--header",
            f"Authorization: Bearer {bearer}",
            "--checks",
            "all",
            # The stream never ends by itself; its own tests cover it.
            "--exclude-path",
            "/v1/realtime/stream",
            "--max-examples",
            "30",
            "--seed",
            "1",
            "--phases",
            "examples,coverage,fuzzing",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=tmp_path,
        )
        output, _ = await asyncio.wait_for(process.communicate(), timeout=240)
    report = output.decode(errors="replace")
    assert process.returncode == 0, report[-6000:]
    assert "No issues found" in report
