"""Configuration of a load run as the Locust processes see it: targets, tenants,
the catalog's roles and permissions, and tokens signed here from the shared key.

Nothing of the hub is imported: the catalog is read as TOML and tokens are signed
with PyJWT, exactly as any outside client would.
"""

from __future__ import annotations

import itertools
import random
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt

# Types the hub produces itself (synthesized, or recorded through their own
# endpoint); a publisher never posts them as events.
HUB_MADE_TYPES = frozenset({"batch.completed", "batch.failed"})
SHIPPED_CATALOG = Path(__file__).resolve().parent.parent / "hub" / "catalog.toml"
TOKEN_TTL_S = 12 * 3600


class LoadSetupError(Exception):
    """The load run's configuration cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class Target:
    """One hub replica, as a base URL."""

    base: str
    host: str
    port: int

    @property
    def stream_path(self) -> str:
        return "/v1/realtime/stream"


def parse_targets(text: str) -> list[Target]:
    targets: list[Target] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        parts = urlsplit(item)
        if parts.scheme != "http" or not parts.hostname:
            raise LoadSetupError(
                f"{item!r} is not an http://host:port URL (https is not supported "
                "by the load client)"
            )
        try:
            port = parts.port or 80
        except ValueError as error:
            raise LoadSetupError(f"{item!r} has a bad port") from error
        targets.append(Target(f"http://{parts.netloc}", parts.hostname, port))
    if not targets:
        raise LoadSetupError("no hub URL given (--rcm-urls or RCM_LOAD_URLS)")
    return targets


@dataclass(frozen=True, slots=True)
class LoadCatalog:
    """What the load generator needs from the catalog file."""

    permission_of: dict[str, str]
    publishable: tuple[str, ...]
    subscriber_roles: dict[str, tuple[str, ...]]


def read_catalog(path: str | None) -> LoadCatalog:
    source = Path(path) if path else SHIPPED_CATALOG
    try:
        document = tomllib.loads(source.read_text("utf-8"))
    except OSError as error:
        raise LoadSetupError(f"{source}: cannot read ({error.strerror})") from error
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise LoadSetupError(f"{source}: not a TOML catalog ({error})") from error
    rows = document.get("events", [])
    permission_of = {
        str(row["type"]): str(row["requiredPermission"])
        for row in rows
        if isinstance(row, dict) and "type" in row and "requiredPermission" in row
    }
    permissions = set(permission_of.values())
    roles: dict[str, tuple[str, ...]] = {}
    for name, table in document.get("roles", {}).items():
        scopes = tuple(sorted(str(s) for s in table.get("scopes", [])))
        # Only roles that can read at least one event type make stream users.
        if permissions.intersection(scopes):
            roles[str(name)] = scopes
    publishable = tuple(sorted(set(permission_of) - HUB_MADE_TYPES))
    if not publishable or not roles:
        raise LoadSetupError(
            f"{source}: the catalog needs event rows and a role with a read scope"
        )
    return LoadCatalog(permission_of, publishable, roles)


@dataclass(frozen=True, slots=True)
class Identity:
    subject: str
    tenant_id: str
    role: str
    scopes: tuple[str, ...]


class Identities:
    """Stream users: a Faker name, a tenant in turn and a catalog role at random."""

    def __init__(
        self, catalog: LoadCatalog, tenants: list[str], seed: int | None = None
    ) -> None:
        from faker import Faker  # slow to import; only where identities are made

        self._faker = Faker()
        if seed is not None:
            self._faker.seed_instance(seed)
        self._random = random.Random(seed)
        self._roles = sorted(catalog.subscriber_roles.items())
        self._tenants = itertools.cycle(tenants)
        self._numbers = itertools.count(1)

    def next(self) -> Identity:
        role, scopes = self._random.choice(self._roles)
        subject = f"{self._faker.user_name()}-{next(self._numbers)}"
        return Identity(subject, next(self._tenants), role, scopes)


def sign(
    secret: str,
    *,
    subject: str,
    tenant_id: str | None,
    scopes: tuple[str, ...] | list[str],
    roles: tuple[str, ...] | list[str] = (),
    now: float | None = None,
) -> str:
    """An HS256 token with the claims the hub reads."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "sub": subject,
        "iat": issued,
        "exp": issued + TOKEN_TTL_S,
        "scopes": sorted(scopes),
        "roles": sorted(roles),
    }
    if tenant_id is not None:
        claims["tenant_id"] = tenant_id
    return jwt.encode(claims, secret, algorithm="HS256")


def parse_tenants(text: str) -> list[str]:
    tenants = [t.strip() for t in text.split(",") if t.strip()]
    if not tenants:
        raise LoadSetupError("no tenant given (--rcm-tenants or RCM_LOAD_TENANTS)")
    return tenants
