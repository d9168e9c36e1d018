"""The secrets: service accounts' key pairs, API and access tokens, and the JWTs Google's clients sign.

Google's client libraries sign a JWT with a service account's private key (RS256, the
key's id as ``kid``) in one of two ways (google-auth, ``google/oauth2/service_account.py``):

- an *assertion* posted to the key file's ``token_uri`` (``aud`` is Google's token
  endpoint, whatever the ``token_uri``), traded for an access token there; Beam's
  DataflowRunner and google-api-python-client do this;
- a *self-signed JWT* sent as the bearer token itself (AIP-4111): ``aud`` is the API's
  address (``https://dataflow.googleapis.com/``), or absent with a ``scope`` claim; the
  official ``google-cloud-dataflow-client`` does this (``always_use_jwt_access``).

Both are verified here: the signature against the account's public key, the issuer, the
audience, the expiry and a lifetime of at most an hour, as Google's endpoints do.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import urlparse

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = [
    "ACCESS_TOKEN_PREFIX",
    "API_TOKEN_PREFIX",
    "ASSERTION_AUDIENCES",
    "MAX_JWT_LIFETIME_S",
    "SELF_SIGNED_AUDIENCES",
    "TOKEN_PATH",
    "BadJwt",
    "JwtHeader",
    "hash_secret",
    "is_jwt",
    "jwt_header",
    "new_access_token",
    "new_api_token",
    "new_key_id",
    "new_key_pair",
    "verify_jwt",
]

TOKEN_PATH = "/token"
"""Where tidegate trades an assertion for an access token (a key file's ``token_uri`` names it)."""
ASSERTION_AUDIENCES = frozenset({"https://oauth2.googleapis.com/token", "https://accounts.google.com/o/oauth2/token"})
"""The audiences of an assertion besides a URL of tidegate's own token endpoint (google-auth always sends the first)."""
SELF_SIGNED_AUDIENCES = frozenset({"https://dataflow.googleapis.com/", "https://dataflow.googleapis.com"})
"""The audiences of a self-signed JWT: Dataflow's API, the one Google's clients name."""
MAX_JWT_LIFETIME_S = 3600
_LEEWAY_S = 60
API_TOKEN_PREFIX = "tgt_"
ACCESS_TOKEN_PREFIX = "tga_"


class BadJwt(Exception):
    """A JWT that does not verify; the message says why (it goes back to the client)."""


def new_key_pair() -> tuple[str, str]:
    """A new RSA key pair: the private key (PKCS#8 PEM, as Google's key files hold it) and the public key (PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def new_key_id() -> str:
    """A key id in the form of Google's (40 hex digits)."""
    return secrets.token_hex(20)


def new_api_token() -> str:
    return API_TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_access_token() -> str:
    return ACCESS_TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """What the store keeps of a token (tokens are random and long: no salt or stretching needed)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def is_jwt(token: str) -> bool:
    return token.count(".") == 2


class JwtHeader:
    """The unverified header and claims of a JWT: enough to find the key that must have signed it."""

    def __init__(self, kid: str, issuer: str) -> None:
        self.kid = kid
        self.issuer = issuer


def jwt_header(token: str) -> JwtHeader:
    """The key id and the issuer a JWT claims (not yet verified); BadJwt if it is no JWT."""
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as error:
        raise BadJwt(f"not a JWT: {error}") from None
    if header.get("alg") != "RS256":
        raise BadJwt(f"the JWT is signed with {header.get('alg')!r}: only RS256 is accepted")
    return JwtHeader(str(header.get("kid") or ""), str(claims.get("iss") or ""))


def _audience_ok(claims: Mapping[str, Any], audiences: Collection[str], *, token_endpoint: bool) -> bool:
    aud = claims.get("aud")
    if aud is None:  # AIP-4111: a self-signed JWT may name scopes instead of an audience
        return not token_endpoint and bool(claims.get("scope"))
    values = [aud] if isinstance(aud, str) else list(aud) if isinstance(aud, list) else []
    for value in values:
        if not isinstance(value, str):
            continue
        if value in audiences or (token_endpoint and urlparse(value).path == TOKEN_PATH):
            return True
    return False


def verify_jwt(token: str, public_key: str, issuer: str, *, token_endpoint: bool) -> dict[str, Any]:
    """The claims of a JWT signed by ``public_key``'s private half and issued by ``issuer``; else BadJwt.

    ``token_endpoint``: an assertion posted to the token endpoint (its audience is Google's
    token endpoint or a URL of tidegate's); otherwise a self-signed JWT for Dataflow's API.
    """
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key=public_key,
            algorithms=["RS256"],
            issuer=issuer,
            leeway=_LEEWAY_S,
            options={"require": ["exp", "iat", "iss"], "verify_aud": False},
        )
    except jwt.ExpiredSignatureError:
        raise BadJwt("the JWT has expired") from None
    except jwt.InvalidSignatureError:
        raise BadJwt("the JWT's signature does not match the service account's key") from None
    except jwt.InvalidIssuerError:
        raise BadJwt("the JWT's issuer (iss) is not the service account that holds the key") from None
    except jwt.PyJWTError as error:
        raise BadJwt(f"invalid JWT: {error}") from None
    audiences = ASSERTION_AUDIENCES if token_endpoint else SELF_SIGNED_AUDIENCES
    if not _audience_ok(claims, audiences, token_endpoint=token_endpoint):
        raise BadJwt(f"the JWT's audience {claims.get('aud')!r} is not {' or '.join(sorted(audiences))}")
    exp, iat = claims["exp"], claims["iat"]
    if not isinstance(exp, int | float) or not isinstance(iat, int | float) or exp - iat > MAX_JWT_LIFETIME_S:
        raise BadJwt(f"the JWT's lifetime (exp - iat) must be at most {MAX_JWT_LIFETIME_S} seconds")
    sub = claims.get("sub")
    if sub is not None and sub != issuer:
        raise BadJwt("the JWT names a subject (sub) other than the service account: delegation is not supported")
    return claims
