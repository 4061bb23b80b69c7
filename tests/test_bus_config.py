"""Choosing and configuring the bus, and the hub's behaviour when the broker is
unreachable (no broker needed: nothing listens on the port used)."""

from __future__ import annotations

import logging

import aiohttp
import pytest

from hub import MemoryBus, load_catalog, open_bus, settings_from_env
from hub._rabbitmq import RabbitBus, RabbitOptions
from hub._serve import rabbit_options
from hub.core import ConfigError

from .hub_processes import free_port
from .support import PUBLISHER, running_replicas, url, wait_until


def test_memory_is_the_default_bus() -> None:
    """Without RCM_REALTIME_BUS the hub uses the in-process bus."""
    settings = settings_from_env({})
    assert settings.bus == "memory"
    assert isinstance(open_bus(settings.bus, settings=settings), MemoryBus)


def test_an_amqp_url_opens_the_rabbitmq_bus_without_connecting_yet() -> None:
    """An amqp:// URL gives a RabbitMQ bus configured from the settings; it
    connects when a replica subscribes, so opening it needs no broker."""
    settings = settings_from_env(
        {
            "RCM_REALTIME_BUS": "amqp://guest:guest@127.0.0.1:5672/",
            "RCM_REALTIME_BUS_EXCHANGE": "lab.events",
            "RCM_REALTIME_BUS_MAX_LENGTH": "500",
            "RCM_REALTIME_BUS_TTL_S": "60",
            "RCM_REALTIME_BUS_PREFETCH": "32",
        }
    )
    bus = open_bus(settings.bus, settings=settings, catalog=load_catalog())
    assert isinstance(bus, RabbitBus)
    assert bus.options.exchange == "lab.events"
    assert bus.options.prefetch == 32
    assert not bus.connected
    assert "guest" not in bus.where


def test_queue_arguments_bound_the_queue_like_a_subscription() -> None:
    """Each replica's queue gets a max length dropping its oldest messages, a
    message TTL in milliseconds, and an idle expiry only when one is set."""
    settings = settings_from_env(
        {"RCM_REALTIME_BUS_MAX_LENGTH": "500", "RCM_REALTIME_BUS_TTL_S": "1.5"}
    )
    arguments = rabbit_options(settings).queue_arguments()
    assert arguments == {
        "x-max-length": 500,
        "x-overflow": "drop-head",
        "x-message-ttl": 1500,
    }
    expiring = RabbitOptions(queue_expires_s=600).queue_arguments()
    assert expiring["x-expires"] == 600_000
    assert RabbitOptions(queue_prefix="lab.").queue_name("r1") == "lab.r1"


@pytest.mark.parametrize(
    ("bus", "fragment"),
    [
        ("redis://127.0.0.1", "neither 'memory' nor an amqp:// URL"),
        ("amqp://", "must look like amqp://"),
        ("Memory", "neither 'memory'"),
    ],
    ids=["other-scheme", "no-host", "wrong-case"],
)
def test_a_bus_that_is_not_memory_or_amqp_is_refused(bus: str, fragment: str) -> None:
    """An unusable bus setting raises ConfigError with an example of a good one."""
    with pytest.raises(ConfigError, match=fragment):
        open_bus(bus, catalog=load_catalog())


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("BUS_MAX_LENGTH", "lots", "not a whole number"),
        ("BUS_PREFETCH", "0", "must be above zero"),
        ("BUS_TTL_S", "-5", "must be above zero"),
        ("BUS_EXCHANGE", "amq.topic", "not starting with 'amq.'"),
        ("BUS_EXCHANGE", "has space", "letters, digits"),
        ("FAULT_INJECTION", "maybe", "1/true/yes/on"),
        ("FAULT_SEED", "x", "not a whole number"),
        ("BUS_PERSISTENT", "sometimes", "1/true/yes/on"),
    ],
    ids=[
        "max-length-word",
        "prefetch-zero",
        "ttl-negative",
        "reserved-exchange",
        "exchange-space",
        "fault-flag",
        "seed-word",
        "persistent-word",
    ],
)
def test_bad_bus_settings_name_their_variable(
    variable: str, value: str, fragment: str
) -> None:
    """A bad RCM_REALTIME_BUS_* or fault setting names the variable and why."""
    with pytest.raises(ConfigError, match=fragment) as raised:
        settings_from_env({f"RCM_REALTIME_{variable}": value})
    assert f"RCM_REALTIME_{variable}" in str(raised.value)


def test_fault_injection_is_off_unless_enabled() -> None:
    """Fault injection is an explicit opt-in."""
    assert settings_from_env({}).fault_injection is False
    enabled = settings_from_env({"RCM_REALTIME_FAULT_INJECTION": "yes"})
    assert enabled.fault_injection is True


def test_messages_are_persistent_unless_switched_off() -> None:
    """RabbitMQ messages survive a broker restart by default; 0 trades that away."""
    assert rabbit_options(settings_from_env({})).persistent is True
    transient = settings_from_env({"RCM_REALTIME_BUS_PERSISTENT": "0"})
    assert rabbit_options(transient).persistent is False


async def test_an_unreachable_broker_leaves_the_replica_unready_and_says_why_once(
    session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """With nothing listening at the broker's address the replica still starts,
    answers /readyz with 503 naming the cause, refuses ingest with 503
    bus_unavailable, and logs the outage once however often it retries."""
    port = free_port()
    bus = RabbitBus(
        f"amqp://guest:guest@127.0.0.1:{port}/",
        catalog=load_catalog(),
        options=RabbitOptions(reconnect_initial_s=0.02, reconnect_max_s=0.05),
    )
    caplog.set_level(logging.INFO, logger="hub")
    try:
        async with running_replicas(1, bus=bus) as [replica]:
            await wait_until(lambda: bus.attempts >= 4, what="several attempts")
            async with session.get(url(replica, "/readyz")) as response:
                assert response.status == 503
                message = (await response.json())["message"]
            assert "not live" in message
            assert "RabbitMQ" in message
            async with session.post(
                url(replica, "/v1/realtime/events"),
                json={"type": "claim.submitted", "tenantId": "acme", "payload": {}},
                headers={"Authorization": f"Bearer {PUBLISHER}"},
            ) as response:
                assert response.status == 503
                assert (await response.json())["error"] == "bus_unavailable"
    finally:
        await bus.close()
    outages = [r for r in caplog.records if "event=bus_disconnected" in r.getMessage()]
    assert len(outages) == 1
    assert outages[0].levelno == logging.WARNING
    assert "replica=r1" in outages[0].getMessage()
