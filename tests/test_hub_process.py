"""The hub as a process: the command line, configuration errors, SIGTERM drain."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import jwt
import pytest

from .support import SECRET, token

RCM = [sys.executable, "-m", "hub.cli"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_cli(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RCM_REALTIME")}
    full_env.update(env or {})
    return subprocess.run(
        [*RCM, *args], capture_output=True, text=True, timeout=60, env=full_env
    )


def test_serve_refuses_to_start_without_a_key() -> None:
    """Without a signing key and without --dev, serve explains and exits 2."""
    result = run_cli("serve", "--port", str(free_port()))
    assert result.returncode == 2
    assert "RCM_REALTIME_JWT_SECRET" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "[[events]]\ntype = 'claim.x'\n", "requiredPermission", id="missing"
        ),
        pytest.param(
            "[[events]]\ntype='a.b'\nrequiredPermission='a.read'\n"
            "defaultUiSeverity='loud'\nlabel='A'\n",
            "defaultUiSeverity",
            id="bad-severity",
        ),
        pytest.param("events = [", "not valid TOML", id="not-toml"),
    ],
)
def test_bad_catalog_names_file_row_and_field(
    tmp_path: Path, text: str, expected: str
) -> None:
    """A bad catalog stops serve with a line naming the file, the row and the field."""
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(text)
    result = run_cli(
        "serve",
        "--port",
        str(free_port()),
        "--catalog",
        str(catalog),
        env={"RCM_REALTIME_JWT_SECRET": SECRET},
    )
    assert result.returncode == 2
    assert str(catalog) in result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_environment_value_is_named() -> None:
    """A setting that is not a number is refused, naming the variable."""
    result = run_cli(
        "serve",
        env={"RCM_REALTIME_JWT_SECRET": SECRET, "RCM_REALTIME_QUEUE_SIZE": "lots"},
    )
    assert result.returncode == 2
    assert "RCM_REALTIME_QUEUE_SIZE" in result.stderr


def test_token_command_seeds_scopes_from_roles() -> None:
    """`token --roles` adds the scopes the catalog's role table seeds."""
    result = run_cli(
        "token",
        "--tenant",
        "acme",
        "--roles",
        "PAYMENT_POSTER",
        "--scopes",
        "claims.read",
        "--ttl",
        "15m",
        "--sub",
        "ops",
        env={"RCM_REALTIME_JWT_SECRET": SECRET},
    )
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["tenant_id"] == "acme"
    assert claims["sub"] == "ops"
    assert claims["roles"] == ["PAYMENT_POSTER"]
    assert set(claims["scopes"]) == {"claims.read", "remittance.read", "batches.read"}
    assert claims["exp"] - claims["iat"] == 900


def test_token_command_without_key_explains() -> None:
    """Without a key the token command says which variable to set."""
    result = run_cli("token", "--tenant", "acme")
    assert result.returncode == 2
    assert "RCM_REALTIME_JWT_SECRET" in result.stderr


async def _read_until_shutdown(port: int, bearer: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET /v1/realtime/stream HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {bearer}\r\n\r\n".encode()
    )
    received = b""
    while chunk := await reader.read(65536):
        received += chunk
    writer.close()
    return received


async def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if process.poll() is not None:
            raise AssertionError("the hub exited before listening")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise AssertionError("the hub never listened")


async def test_sigterm_drains_thousands_of_streams_and_exits_zero(
    tmp_path: Path,
) -> None:
    """On SIGTERM all 1,500 streams get server_shutdown and the hub exits 0."""
    port = free_port()
    log_path = tmp_path / "hub.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RCM_REALTIME")}
    env["RCM_REALTIME_JWT_SECRET"] = SECRET
    # One token opens every stream here, so its per-token cap must allow them.
    env["RCM_REALTIME_MAX_STREAMS_PER_TOKEN"] = "2000"
    process = subprocess.Popen(
        [*RCM, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        # A file, not a pipe: thousands of log lines would fill a pipe nobody reads.
        stderr=log_path.open("w"),
    )
    try:
        await _wait_for_port(port, process)
        bearer = token()
        readers = [
            asyncio.create_task(_read_until_shutdown(port, bearer)) for _ in range(1500)
        ]
        # The streams are open once the gauge says so; scraping it avoids racing
        # the readers.
        async with aiohttp.ClientSession() as session:
            metrics = token(tenant=None, scopes=["metrics.read"])
            for _ in range(600):
                async with session.get(
                    f"http://127.0.0.1:{port}/metrics",
                    headers={"Authorization": f"Bearer {metrics}"},
                ) as response:
                    text = await response.text()
                if 'rcm_realtime_subscribers{tenant_id="acme"} 1500.0' in text:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("1,500 streams never opened")
        process.send_signal(signal.SIGTERM)
        bodies = await asyncio.wait_for(asyncio.gather(*readers), timeout=30)
        exit_code = await asyncio.to_thread(process.wait, 30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert exit_code == 0
    farewell = b'event: server_shutdown\ndata: {"reason":"shutdown"}\n\n'
    assert all(body.count(farewell) == 1 for body in bodies)
    stderr = log_path.read_text()
    assert "Traceback" not in stderr
    assert "event=replica_closed" in stderr
