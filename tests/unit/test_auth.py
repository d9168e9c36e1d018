"""The JWT checks and the role table, with JWTs signed as google-auth signs them."""

from __future__ import annotations

import itertools
import time
from typing import Any

import jwt
import pytest
from google.auth import crypt
from google.auth import jwt as google_jwt
from google.oauth2 import service_account

from tidegate.auth import OPEN, Caller, Permission
from tidegate.auth.tokens import BadJwt, hash_secret, jwt_header, new_api_token, new_key_pair, verify_jwt
from tidegate.errors import PermissionDenied
from tidegate.model import ANONYMOUS, Role

EMAIL = "runner@proj.iam.tidegate"
KEYS = new_key_pair()
OTHER_KEYS = new_key_pair()


def key_info(private_key: str = KEYS[0], email: str = EMAIL) -> dict[str, str]:
    return {
        "type": "service_account",
        "project_id": "proj",
        "private_key_id": "0" * 40,
        "private_key": private_key,
        "client_email": email,
        "token_uri": "http://127.0.0.1:8080/token",
    }


def google_assertion(**info: str) -> str:
    """The assertion google-auth posts to a key file's token_uri (as Beam's DataflowRunner does)."""
    credentials = service_account.Credentials.from_service_account_info(
        key_info(**info), scopes=["https://www.googleapis.com/auth/cloud-platform"]
    )
    token: bytes = credentials._make_authorization_grant_assertion()
    return token.decode()


def google_self_signed(audience: str = "https://dataflow.googleapis.com/") -> str:
    """The bearer JWT the official Dataflow client sends with a service account (always_use_jwt_access)."""
    credentials = service_account.Credentials.from_service_account_info(key_info()).with_always_use_jwt_access(True)
    credentials._create_self_signed_jwt(audience)
    credentials._jwt_credentials.refresh(None)
    token: bytes = credentials._jwt_credentials.token
    return token.decode()


def signed(claims: dict[str, Any], private_key: str = KEYS[0], algorithm: str = "RS256") -> str:
    return jwt.encode(claims, private_key, algorithm=algorithm, headers={"kid": "0" * 40})


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"iss": EMAIL, "aud": "https://oauth2.googleapis.com/token", "iat": now, "exp": now + 3600}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def test_google_auths_assertion_verifies() -> None:
    token = google_assertion()
    header = jwt_header(token)
    assert (header.kid, header.issuer) == ("0" * 40, EMAIL)
    assert verify_jwt(token, KEYS[1], EMAIL, token_endpoint=True)["scope"].endswith("cloud-platform")


def test_the_official_clients_self_signed_jwt_verifies() -> None:
    token = google_self_signed()
    assert verify_jwt(token, KEYS[1], EMAIL, token_endpoint=False)["aud"] == "https://dataflow.googleapis.com/"


def test_a_self_signed_jwt_is_no_assertion_and_the_other_way_round() -> None:
    with pytest.raises(BadJwt, match="audience"):
        verify_jwt(google_self_signed(), KEYS[1], EMAIL, token_endpoint=True)
    with pytest.raises(BadJwt, match="audience"):
        verify_jwt(google_assertion(), KEYS[1], EMAIL, token_endpoint=False)


def test_an_assertion_may_name_tidegates_own_token_endpoint() -> None:
    token = signed(claims(aud="http://tidegate.example:8080/token"))
    assert verify_jwt(token, KEYS[1], EMAIL, token_endpoint=True)["iss"] == EMAIL
    with pytest.raises(BadJwt, match="audience"):
        verify_jwt(signed(claims(aud="http://tidegate.example:8080/other")), KEYS[1], EMAIL, token_endpoint=True)


def test_a_scope_instead_of_an_audience_is_for_self_signed_jwts_only() -> None:
    token = signed(claims(aud=None, scope="https://www.googleapis.com/auth/cloud-platform"))
    assert verify_jwt(token, KEYS[1], EMAIL, token_endpoint=False)["scope"]
    with pytest.raises(BadJwt, match="audience"):
        verify_jwt(token, KEYS[1], EMAIL, token_endpoint=True)
    with pytest.raises(BadJwt, match="audience"):  # neither an audience nor a scope
        verify_jwt(signed(claims(aud=None)), KEYS[1], EMAIL, token_endpoint=False)


@pytest.mark.parametrize(
    ("token", "why"),
    [
        (google_assertion(private_key=OTHER_KEYS[0]), "signature"),
        (google_assertion(email="someone@proj.iam.tidegate"), "issuer"),
        (signed(claims(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)), "expired"),
        (signed(claims(exp=int(time.time()) + 7200)), "lifetime"),
        (signed(claims(exp=None)), "exp"),
        (signed(claims(iat=None)), "iat"),
        (signed(claims(sub="boss@example.com")), "subject"),
        (signed(claims(aud="https://storage.googleapis.com/")), "audience"),
    ],
    ids=["other-key", "other-issuer", "expired", "too-long", "no-exp", "no-iat", "delegation", "other-api"],
)
def test_a_jwt_that_does_not_verify_says_why(token: str, why: str) -> None:
    with pytest.raises(BadJwt, match=why):
        verify_jwt(token, KEYS[1], EMAIL, token_endpoint=True)


def test_only_rs256_is_accepted() -> None:
    hs256 = signed(claims(), "a shared secret of at least 32 bytes", "HS256")
    for token in (hs256, jwt.encode(claims(), None, algorithm="none")):
        with pytest.raises(BadJwt, match="RS256"):
            jwt_header(token)
        with pytest.raises(BadJwt):  # nor does the signature check take one (the public key as an HMAC secret)
            verify_jwt(token, KEYS[1], EMAIL, token_endpoint=True)


def test_garbage_is_no_jwt() -> None:
    for token in ("a.b.c", "", "eyJhbGciOiJSUzI1NiJ9.e30"):
        with pytest.raises(BadJwt):
            jwt_header(token)


def test_google_auth_signs_with_the_key_file_tidegate_writes() -> None:
    """The private key as a key file holds it loads in google-auth's signer; the public half verifies."""
    signer = crypt.RSASigner.from_service_account_info(key_info())
    token = google_jwt.encode(signer, claims()).decode()
    assert verify_jwt(token, KEYS[1], EMAIL, token_endpoint=True)["iss"] == EMAIL


def test_api_tokens_are_random_and_kept_as_hashes() -> None:
    first, second = new_api_token(), new_api_token()
    assert first != second and first.startswith("tgt_") and len(first) > 40
    assert hash_secret(first) == hash_secret(first) != hash_secret(second)
    assert first not in hash_secret(first)


@pytest.mark.parametrize(("role", "permission"), list(itertools.product(Role, Permission)))
def test_each_role_holds_its_permissions_and_those_of_the_roles_below(role: Role, permission: Permission) -> None:
    caller = Caller("someone", role, "proj")
    viewer = permission.value.startswith(("dataflow.jobs.get", "dataflow.jobs.list")) or permission.value in {
        "dataflow.messages.list",
        "dataflow.metrics.get",
        "dataflow.snapshots.get",
        "dataflow.snapshots.list",
        "dataflow.templates.get",
    }
    admin_only = permission is Permission.CREDENTIALS_MANAGE
    expected = role is Role.ADMIN or (role is Role.DEVELOPER and not admin_only) or (role is Role.VIEWER and viewer)
    assert caller.may(permission, "proj") is expected
    assert not caller.may(permission, "other")  # a role holds in its own project only
    assert OPEN.may(permission, "any-project")


def test_a_refusal_names_the_permission_and_nothing_of_the_project() -> None:
    with pytest.raises(PermissionDenied) as refused:
        Caller("ci", Role.ADMIN, "mine").require(Permission.JOBS_GET, "theirs")
    assert refused.value.http_status == 403 and refused.value.status == "PERMISSION_DENIED"
    assert refused.value.message == "Permission 'dataflow.jobs.get' denied on project theirs (or it may not exist)"
    assert OPEN.name == ANONYMOUS
