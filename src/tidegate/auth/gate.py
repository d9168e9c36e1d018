"""The gate every call passes: who is calling (authentication) and may it do this here (authorization).

A tidegate whose store has never held a credential runs open: every call is the
anonymous caller's, with every permission, and whatever credential it carries is
ignored (Google's clients may carry one meant for Google). From the first credential on,
every call needs one; deleting them all does not open the door again.

A bearer token is one of: an API token (``tgt_…``), an access token the token endpoint
gave a service account (``tga_…``), or a JWT the service account signed itself (what
the official Dataflow client sends). What a credential resolves to is remembered for at
most ``cache_s`` seconds, so a credential disabled or deleted (in this process or by
another server on the same database) stops working within that time; a new one works at
once, since only credentials that resolved are remembered.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from tidegate.auth.roles import OPEN, Caller, Permission
from tidegate.auth.tokens import (
    ACCESS_TOKEN_PREFIX,
    API_TOKEN_PREFIX,
    BadJwt,
    hash_secret,
    is_jwt,
    jwt_header,
    new_access_token,
    verify_jwt,
)
from tidegate.errors import Unauthenticated
from tidegate.model import Credential, CredentialKind
from tidegate.store import Store

__all__ = ["ACCESS_TOKEN_LIFETIME", "JWT_GRANT_TYPE", "Gate", "TokenError"]

JWT_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ACCESS_TOKEN_LIFETIME = timedelta(hours=1)
_MAX_CACHED = 10_000
_EMAIL_DOMAIN = ".iam.tidegate"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class TokenError(Exception):
    """A token request refused, answered as Google's OAuth endpoint does (HTTP 400, ``error``)."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


def _missing() -> Unauthenticated:
    return Unauthenticated(
        "Request is missing required authentication credential. Expected an OAuth 2 access token, a JWT signed"
        " by a service account's key, or a tidegate API token (Authorization: Bearer …).",
        reason="CREDENTIALS_MISSING",
    )


def _invalid(why: str) -> Unauthenticated:
    return Unauthenticated(f"Request had invalid authentication credentials: {why}", reason="CREDENTIALS_INVALID")


class Gate:
    """Authenticates calls against the store's credentials and checks their permissions."""

    def __init__(
        self, store: Store, *, clock: Callable[[], datetime] = _utcnow, cache_s: float = 2.0, open_check_s: float = 1.0
    ) -> None:
        self.store = store
        self.clock = clock
        self.cache_s = cache_s
        self.open_check_s = open_check_s
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, Caller]] = {}
        self._required = False
        self._required_checked = -1e18

    # -- the checks --------------------------------------------------------------------

    @property
    def required(self) -> bool:
        """Whether calls need a credential (checked at most every ``open_check_s`` while they do not)."""
        if self._required:
            return True
        now = time.monotonic()
        if now - self._required_checked >= self.open_check_s:
            self._required = self.store.auth_required()
            self._required_checked = now
        return self._required

    def check(self, authorization: str | None, permission: Permission, project_id: str) -> Caller:
        """The caller, if it may do this in the project: else UNAUTHENTICATED or PERMISSION_DENIED."""
        return self.caller(authorization).require(permission, project_id)

    def caller(self, authorization: str | None) -> Caller:
        """Who calls, from the ``Authorization`` header or metadata; UNAUTHENTICATED if it proves nothing."""
        if not self.required:
            return OPEN
        if not authorization:
            raise _missing()
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _invalid("expected 'Authorization: Bearer TOKEN'")
        now = time.monotonic()
        cached = self._cache.get(token)
        if cached is not None and cached[0] > now:
            return cached[1]
        caller, until = self._resolve(token)
        with self._lock:
            if len(self._cache) >= _MAX_CACHED:
                self._cache.clear()
            self._cache[token] = (min(now + self.cache_s, until), caller)
        return caller

    def _resolve(self, token: str) -> tuple[Caller, float]:
        """The caller a bearer token names, and until when (monotonic) that may be remembered."""
        forever = float("inf")
        if token.startswith(API_TOKEN_PREFIX):
            credential = self.store.credential_by_secret(CredentialKind.TOKEN, hash_secret(token))
            if credential is None:
                raise _invalid("unknown API token (deleted, or never made)")
            return self._enabled(credential), forever
        if token.startswith(ACCESS_TOKEN_PREFIX):
            credential = self.store.credential_by_access_token(hash_secret(token), self.clock())
            if credential is None:
                raise _invalid("unknown or expired access token (get a new one at the token endpoint)")
            return self._enabled(credential), forever
        if is_jwt(token):
            try:
                credential, claims = self._service_account(token, token_endpoint=False)
            except BadJwt as error:
                raise _invalid(str(error)) from None
            return self._enabled(credential), time.monotonic() + max(0.0, float(claims["exp"]) - time.time())
        raise _invalid("not a tidegate API token, access token or service account JWT")

    @staticmethod
    def _enabled(credential: Credential) -> Caller:
        if credential.disabled:
            what = "service account" if credential.kind is CredentialKind.SERVICE_ACCOUNT else "API token"
            raise _invalid(f"the {what} {credential.caller} is disabled")
        return Caller(credential.caller, credential.role, credential.project_id)

    def _service_account(self, token: str, *, token_endpoint: bool) -> tuple[Credential, dict[str, Any]]:
        """The service account that signed the JWT (found by its ``kid``, else its issuer) and the claims."""
        header = jwt_header(token)
        found = self.store.credential_with_secret(header.kid) if header.kid else self._by_email(header.issuer)
        if found is None or found[0].kind is not CredentialKind.SERVICE_ACCOUNT:
            raise BadJwt(f"no service account holds the key {header.kid or '(none named)'} (deleted, or never made)")
        credential, public_key = found
        claims = verify_jwt(token, public_key, credential.email, token_endpoint=token_endpoint)
        return credential, claims

    def _by_email(self, email: str) -> tuple[Credential, str] | None:
        name, _, domain = email.partition("@")
        if not domain.endswith(_EMAIL_DOMAIN):
            return None
        project = domain.removesuffix(_EMAIL_DOMAIN)
        for credential in self.store.list_credentials(CredentialKind.SERVICE_ACCOUNT, project):
            if credential.name == name:
                return self.store.credential_with_secret(credential.id)
        return None

    # -- the token endpoint ------------------------------------------------------------

    def grant(self, form: Mapping[str, str]) -> dict[str, Any]:
        """Trade a service account's signed assertion for an access token, as Google's OAuth endpoint does."""
        grant_type = form.get("grant_type", "")
        if grant_type != JWT_GRANT_TYPE:
            raise TokenError("unsupported_grant_type", f"grant_type must be {JWT_GRANT_TYPE}, not {grant_type!r}")
        assertion = form.get("assertion", "")
        if not assertion:
            raise TokenError("invalid_request", "the assertion (a JWT signed by the service account's key) is missing")
        try:
            credential, _ = self._service_account(assertion, token_endpoint=True)
        except BadJwt as error:
            raise TokenError("invalid_grant", str(error)) from None
        if credential.disabled:
            raise TokenError("invalid_grant", f"the service account {credential.email} is disabled")
        token, now = new_access_token(), self.clock()
        self.store.add_access_token(hash_secret(token), credential.id, now + ACCESS_TOKEN_LIFETIME, now)
        return {
            "access_token": token,
            "expires_in": int(ACCESS_TOKEN_LIFETIME.total_seconds()),
            "token_type": "Bearer",
        }
