"""Bearer tokens: verification for the hub, issuance for tests and operators."""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from .core import TENANT_PATTERN, ConfigError, Principal, TokenError

ASYMMETRIC_ALGORITHMS = ("RS256", "ES256")
DURATION_PATTERN = re.compile(r"^(\d+)([smhd]?)$")
DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True, slots=True)
class Claims:
    """What the hub reads from a verified token."""

    subject: str
    tenant_id: str | None
    scopes: frozenset[str]
    roles: frozenset[str]
    expires_at: float
    token_id: str = ""

    def principal(self) -> Principal:
        if self.tenant_id is None:
            raise TokenError(
                "the token has no tenant_id claim; streams belong to one tenant",
                code="tenant_required",
                status=403,
            )
        return Principal(
            self.subject, self.tenant_id, self.scopes, self.roles, self.token_id
        )


class TokenVerifier:
    def __init__(self, *, secret: str | None, public_key_path: str | None = None):
        self._keys: list[tuple[Any, list[str]]] = []
        if secret:
            self._keys.append((secret, ["HS256"]))
        if public_key_path:
            try:
                pem = Path(public_key_path).read_bytes()
            except OSError as error:
                raise ConfigError(
                    f"RCM_REALTIME_JWT_PUBLIC_KEY={public_key_path}: cannot read "
                    f"({error.strerror})"
                ) from error
            self._keys.append((pem, list(ASYMMETRIC_ALGORITHMS)))
        if not self._keys:
            raise ConfigError(
                "no key to verify tokens: set RCM_REALTIME_JWT_SECRET (or "
                "RCM_REALTIME_JWT_PUBLIC_KEY), or run `serve --dev`"
            )

    def verify(self, token: str) -> Claims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise TokenError("the bearer token is not a JWT") from error
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm.lower() == "none":
            raise TokenError("unsigned tokens (alg none) are refused")
        for key, algorithms in self._keys:
            if algorithm not in algorithms:
                continue
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=algorithms,
                    options={"require": ["exp"], "verify_aud": False},
                )
            except jwt.ExpiredSignatureError as error:
                raise TokenError(
                    "the token has expired; fetch a new one", code="token_expired"
                ) from error
            except jwt.MissingRequiredClaimError as error:
                raise TokenError("the token has no exp claim") from error
            except jwt.InvalidSignatureError as error:
                raise TokenError("the token's signature does not verify") from error
            except jwt.PyJWTError as error:
                raise TokenError(f"the token is not usable ({error})") from error
            return _claims(claims, token_digest(token))
        raise TokenError(f"tokens signed with {algorithm} are not accepted here")


def token_digest(token: str) -> str:
    """A short, non-reversible name for one credential (logs and stream caps)."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def _claims(claims: dict[str, Any], token_id: str) -> Claims:
    tenant_id = claims.get("tenant_id")
    if tenant_id is not None and (
        not isinstance(tenant_id, str) or not TENANT_PATTERN.match(tenant_id)
    ):
        raise TokenError("the token's tenant_id is not a tenant slug")
    scopes = claims.get("scopes")
    if scopes is None and isinstance(claims.get("scope"), str):
        scopes = claims["scope"].split()
    roles = claims.get("roles", [])
    if scopes is None:
        scopes = []
    if not _string_list(scopes) or not _string_list(roles):
        raise TokenError("the token's scopes and roles must be lists of strings")
    subject = claims.get("sub")
    return Claims(
        subject=subject if isinstance(subject, str) else "",
        tenant_id=tenant_id,
        scopes=frozenset(scopes),
        roles=frozenset(roles),
        expires_at=float(claims["exp"]),
        token_id=token_id,
    )


def _string_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def parse_duration(text: str) -> int:
    """``90``, ``90s``, ``15m``, ``1h``, ``7d`` as seconds."""
    match = DURATION_PATTERN.match(text.strip())
    if not match or int(match.group(1)) <= 0:
        raise ConfigError(f"{text!r} is not a duration like 90s, 15m, 1h or 7d")
    return int(match.group(1)) * DURATION_UNITS[match.group(2)]


def issue_token(
    *,
    secret: str,
    tenant_id: str | None,
    scopes: Iterable[str] = (),
    roles: Iterable[str] = (),
    ttl_s: int = 3600,
    subject: str | None = None,
    now: float | None = None,
) -> str:
    """A signed HS256 token with the claims the hub reads."""
    if tenant_id is not None and not TENANT_PATTERN.match(tenant_id):
        raise ConfigError(f"tenant {tenant_id!r} is not a tenant slug")
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "sub": subject or f"user-{uuid.uuid4().hex[:8]}",
        "iat": issued,
        "exp": issued + ttl_s,
        "scopes": sorted(set(scopes)),
        "roles": sorted(set(roles)),
    }
    if tenant_id is not None:
        claims["tenant_id"] = tenant_id
    return jwt.encode(claims, secret, algorithm="HS256")
