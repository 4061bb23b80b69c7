"""Settings: environment variables, overridden by ``serve`` flags."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .core import Catalog, CatalogError, ConfigError, CoreSettings, parse_catalog

ENV_PREFIX = "RCM_REALTIME_"


@dataclass(frozen=True, slots=True)
class Settings:
    jwt_secret: str | None = None
    jwt_public_key_path: str | None = None
    metrics_bearer: str | None = None
    batch_quiet_window_ms: int = 5000
    queue_size: int = 256
    evict_after_s: float = 30.0
    heartbeat_s: float = 15.0
    bus: str = "memory"
    catalog_path: str | None = None
    replica_id: str | None = None
    retry_ms: int = 3000
    shutdown_grace_s: float = 3.0
    shutdown_retry_spread_ms: int = 5000
    replay_max_events: int = 1000
    replay_max_age_s: float = 300.0
    max_streams_per_tenant: int = 10_000
    max_streams_per_token: int = 20
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    # Bytes a stream's socket may buffer in the kernel and in the transport before
    # writes wait; None leaves the system's defaults. Small values make a client
    # that stops reading show as backpressure sooner (and cap memory per stream).
    stream_send_buffer_bytes: int | None = None
    bus_exchange: str = "rcm.realtime.events"
    bus_queue_prefix: str = "rcm.realtime.replica."
    bus_max_length: int = 100_000
    bus_ttl_s: float = 300.0
    bus_prefetch: int = 256
    bus_persistent: bool = True
    bus_queue_expires_s: float | None = None
    bus_reconnect_max_s: float = 15.0
    fault_injection: bool = False
    fault_seed: int = 0

    def core_settings(self) -> CoreSettings:
        return CoreSettings(
            queue_size=self.queue_size,
            evict_after_s=self.evict_after_s,
            quiet_window_s=self.batch_quiet_window_ms / 1000,
            retry_ms=self.retry_ms,
            shutdown_retry_spread_ms=self.shutdown_retry_spread_ms,
            replay_max_events=self.replay_max_events,
            replay_max_age_s=self.replay_max_age_s,
            max_streams_per_tenant=self.max_streams_per_tenant,
            max_streams_per_token=self.max_streams_per_token,
        )

    def replica_name(self, host: str, port: int) -> str:
        return self.replica_id or f"{socket.gethostname()}-{port}"

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def settings_from_env(environ: Mapping[str, str] | None = None) -> Settings:
    """Read every ``RCM_REALTIME_*`` variable; a bad value names its variable."""
    env = os.environ if environ is None else environ

    def text(name: str) -> str | None:
        value = env.get(ENV_PREFIX + name)
        return value if value else None

    def number(
        name: str, default: float | None, *, integer: bool, allow_zero: bool = False
    ) -> Any:
        raw = text(name)
        if raw is None:
            return default
        try:
            value = int(raw) if integer else float(raw)
        except ValueError:
            kind = "a whole number" if integer else "a number"
            raise ConfigError(f"{ENV_PREFIX}{name}={raw!r} is not {kind}") from None
        if value < 0 or (value == 0 and not allow_zero):
            floor = "zero or more" if allow_zero else "above zero"
            raise ConfigError(f"{ENV_PREFIX}{name}={raw!r} must be {floor}")
        return value

    return Settings(
        jwt_secret=text("JWT_SECRET"),
        jwt_public_key_path=text("JWT_PUBLIC_KEY"),
        metrics_bearer=text("METRICS_BEARER"),
        batch_quiet_window_ms=number("BATCH_QUIET_WINDOW_MS", 5000, integer=True),
        queue_size=number("QUEUE_SIZE", 256, integer=True),
        evict_after_s=number("EVICT_AFTER_S", 30.0, integer=False),
        heartbeat_s=number("HEARTBEAT_S", 15.0, integer=False),
        bus=text("BUS") or "memory",
        catalog_path=text("CATALOG"),
        replica_id=text("REPLICA_ID"),
        retry_ms=number("RETRY_MS", 3000, integer=True),
        shutdown_retry_spread_ms=number(
            "SHUTDOWN_RETRY_SPREAD_MS", 5000, integer=True, allow_zero=True
        ),
        replay_max_events=number(
            "REPLAY_MAX_EVENTS", 1000, integer=True, allow_zero=True
        ),
        replay_max_age_s=number("REPLAY_MAX_AGE_S", 300.0, integer=False),
        max_streams_per_tenant=number("MAX_STREAMS_PER_TENANT", 10_000, integer=True),
        max_streams_per_token=number("MAX_STREAMS_PER_TOKEN", 20, integer=True),
        header_timeout_s=number("HEADER_TIMEOUT_S", 10.0, integer=False),
        body_timeout_s=number("BODY_TIMEOUT_S", 30.0, integer=False),
        stream_send_buffer_bytes=number("STREAM_SEND_BUFFER", 0, integer=True) or None,
        bus_exchange=amqp_name(
            "BUS_EXCHANGE", text("BUS_EXCHANGE") or "rcm.realtime.events"
        ),
        bus_queue_prefix=amqp_name(
            "BUS_QUEUE_PREFIX",
            env.get(ENV_PREFIX + "BUS_QUEUE_PREFIX", "rcm.realtime.replica."),
            empty_ok=True,
        ),
        bus_max_length=number("BUS_MAX_LENGTH", 100_000, integer=True),
        bus_ttl_s=number("BUS_TTL_S", 300.0, integer=False),
        bus_prefetch=number("BUS_PREFETCH", 256, integer=True),
        bus_persistent=flag(env, "BUS_PERSISTENT", default=True),
        bus_queue_expires_s=number("BUS_QUEUE_EXPIRES_S", None, integer=False),
        bus_reconnect_max_s=number("BUS_RECONNECT_MAX_S", 15.0, integer=False),
        fault_injection=flag(env, "FAULT_INJECTION"),
        fault_seed=whole(env, "FAULT_SEED"),
    )


AMQP_NAME_PATTERN = re.compile(r"^[A-Za-z0-9._:-]*\Z")


def amqp_name(variable: str, value: str, *, empty_ok: bool = False) -> str:
    """An exchange name or queue-name prefix the broker accepts."""
    if (
        not AMQP_NAME_PATTERN.match(value)
        or len(value) > 120
        or (not value and not empty_ok)
        or value.startswith("amq.")
    ):
        raise ConfigError(
            f"{ENV_PREFIX}{variable}={value!r} must be letters, digits, '.', '_', "
            "':' or '-' (at most 120), not starting with 'amq.'"
        )
    return value


def flag(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = env.get(ENV_PREFIX + name, "").strip().lower()
    if not raw:
        return default
    if raw in ("0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(
        f"{ENV_PREFIX}{name}={raw!r} is not 1/true/yes/on or 0/false/no/off"
    )


def whole(env: Mapping[str, str], name: str) -> int:
    raw = env.get(ENV_PREFIX + name, "").strip()
    if not raw:
        return 0
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{ENV_PREFIX}{name}={raw!r} is not a whole number") from None


REPLICA_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}\Z")


def check_replica_id(replica_id: str) -> str:
    if not REPLICA_ID_PATTERN.match(replica_id):
        raise ConfigError(
            f"replica id {replica_id!r} must be letters, digits, '.', '_' or '-' "
            "(at most 100), since it names the bus subscription"
        )
    return replica_id


SHIPPED_CATALOG = Path(__file__).with_name("catalog.toml")


def shipped_catalog_text() -> str:
    return SHIPPED_CATALOG.read_text("utf-8")


def load_catalog(path: str | None = None) -> Catalog:
    """The catalog at ``path``, or the shipped one; errors name the file."""
    if path is None:
        return parse_catalog(shipped_catalog_text(), source="hub/catalog.toml")
    try:
        text = Path(path).read_text("utf-8")
    except OSError as error:
        raise CatalogError(
            f"cannot read the catalog ({error.strerror})", source=path
        ) from error
    except UnicodeDecodeError as error:
        raise CatalogError("the catalog is not UTF-8 text", source=path) from error
    return parse_catalog(text, source=path)
