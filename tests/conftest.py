from __future__ import annotations

import fcntl
import os
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from hypothesis import HealthCheck, Phase, settings
from yarl import URL

# ci: the same examples on every run (derandomize, no example database), and no
# "explain" phase, whose line tracing makes a failing stateful run take minutes on
# Python 3.11; a failure still prints its shrunk steps and a reproduce blob.
settings.register_profile(
    "ci",
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow],
)
# thorough: fresh random examples each run, longer state machine runs, failures
# saved to .hypothesis/ so that the next run replays them first.
settings.register_profile(
    "thorough",
    max_examples=2000,
    stateful_step_count=200,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


AMQP_URL = os.environ.get(
    "RCM_REALTIME_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"
)
BROKER_LOCK = Path(tempfile.gettempdir()) / "rcm-realtime-rabbitmq-tests.lock"


@pytest.fixture
def rabbitmq_url() -> Iterator[str]:
    """The test broker's URL, held under a machine-wide lock so that runs from
    several checkouts never share it (a test may restart it). When the broker
    does not answer the test fails under CI and is skipped elsewhere."""
    target = URL(AMQP_URL)
    try:
        socket.create_connection(
            (target.host or "127.0.0.1", target.port or 5672), timeout=2
        ).close()
    except OSError as error:
        message = f"RabbitMQ does not answer at {target.host}:{target.port} ({error})"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI needs it (.ci/run starts it)")
        pytest.skip(message)
    with BROKER_LOCK.open("a") as lock:
        deadline = time.monotonic() + 600
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"another test run held {BROKER_LOCK} for 600 s")
                time.sleep(0.2)
        try:
            yield AMQP_URL
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
