"""Token verification beyond HS256: public keys and OAuth scope strings."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hub import TokenVerifier
from hub.core import ConfigError, TokenError

from .support import SECRET


def _keypair(kind: str) -> tuple[object, bytes]:
    private = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if kind == "RS256"
        else ec.generate_private_key(ec.SECP256R1())
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_public_key_tokens_verify(tmp_path: Path, algorithm: str) -> None:
    """With a PEM public key configured, RS256 and ES256 tokens are accepted."""
    private, public = _keypair(algorithm)
    pem = tmp_path / "key.pem"
    pem.write_bytes(public)
    verifier = TokenVerifier(secret=SECRET, public_key_path=str(pem))
    signed = jwt.encode(
        {
            "sub": "u",
            "tenant_id": "acme",
            "scopes": ["claims.read"],
            "exp": int(time.time()) + 60,
        },
        private,  # type: ignore[arg-type]
        algorithm=algorithm,
    )
    claims = verifier.verify(signed)
    assert claims.tenant_id == "acme"
    assert claims.scopes == {"claims.read"}


def test_public_key_tokens_are_refused_without_the_key() -> None:
    """An RS256 token is refused by a hub that only knows an HS256 secret."""
    private, _ = _keypair("RS256")
    signed = jwt.encode(
        {"sub": "u", "exp": int(time.time()) + 60},
        private,  # type: ignore[arg-type]
        algorithm="RS256",
    )
    with pytest.raises(TokenError, match="RS256"):
        TokenVerifier(secret=SECRET).verify(signed)


def test_oauth_scope_string_is_accepted() -> None:
    """A space-separated `scope` claim counts as the scopes list."""
    signed = jwt.encode(
        {
            "sub": "u",
            "tenant_id": "acme",
            "scope": "claims.read denials.read",
            "exp": int(time.time()) + 60,
        },
        SECRET,
        algorithm="HS256",
    )
    assert TokenVerifier(secret=SECRET).verify(signed).scopes == {
        "claims.read",
        "denials.read",
    }


def test_missing_public_key_file_is_a_config_error(tmp_path: Path) -> None:
    """A public key path that cannot be read names the variable."""
    with pytest.raises(ConfigError, match="RCM_REALTIME_JWT_PUBLIC_KEY"):
        TokenVerifier(secret=None, public_key_path=str(tmp_path / "absent.pem"))
