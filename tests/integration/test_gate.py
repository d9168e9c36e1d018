"""The gate and the credentials on real databases (SQLite and PostgreSQL), and the REST app behind it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from google.oauth2 import service_account

from tests.conftest import Clock
from tidegate.api.rest.app import create_app
from tidegate.auth import OPEN, Gate, Permission, TokenError
from tidegate.auth.accounts import Accounts
from tidegate.auth.gate import JWT_GRANT_TYPE
from tidegate.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from tidegate.model import CredentialKind, Role
from tidegate.service.jobs import JobService
from tidegate.store import Store

TOKEN_URI = "http://127.0.0.1:8080/token"
SA = CredentialKind.SERVICE_ACCOUNT


def bearer(token: str) -> str:
    return f"Bearer {token}"


def assertion(key_file: dict[str, Any]) -> str:
    """What google-auth posts to the key file's token_uri."""
    credentials = service_account.Credentials.from_service_account_info(
        key_file, scopes=["https://www.googleapis.com/auth/cloud-platform"]
    )
    return str(credentials._make_authorization_grant_assertion().decode())


def self_signed(key_file: dict[str, Any]) -> str:
    """What the official Dataflow client sends as its bearer token."""
    credentials = service_account.Credentials.from_service_account_info(key_file).with_always_use_jwt_access(True)
    credentials._create_self_signed_jwt("https://dataflow.googleapis.com/")
    credentials._jwt_credentials.refresh(None)
    return str(credentials._jwt_credentials.token.decode())


@pytest.fixture
def gate(store: Store, clock: Clock) -> Gate:
    return Gate(store, clock=clock, cache_s=0, open_check_s=0)


@pytest.fixture
def accounts(store: Store, clock: Clock) -> Accounts:
    return Accounts(store, clock=clock)


def test_open_until_the_first_credential_and_closed_for_good_after(gate: Gate, accounts: Accounts) -> None:
    assert gate.caller(None) is OPEN and gate.caller("Bearer junk") is OPEN  # open: whatever is sent is ignored
    accounts.create_token("ci", "proj", Role.VIEWER)
    with pytest.raises(Unauthenticated) as missing:
        gate.caller(None)
    assert missing.value.reason == "CREDENTIALS_MISSING" and missing.value.http_status == 401
    with pytest.raises(Unauthenticated, match="not a tidegate API token"):
        gate.caller("Bearer junk")
    accounts.delete(CredentialKind.TOKEN, "proj", "ci")
    with pytest.raises(Unauthenticated):  # deleting every credential does not open the door again
        gate.caller(None)


def test_an_api_token_works_at_once_and_stops_when_disabled_or_deleted(gate: Gate, accounts: Accounts) -> None:
    credential, token = accounts.create_token("ci", "proj", Role.DEVELOPER, created_by="tester")
    caller = gate.check(bearer(token), Permission.JOBS_CREATE, "proj")
    assert (caller.name, caller.role, caller.project_id) == ("ci", Role.DEVELOPER, "proj")
    with pytest.raises(PermissionDenied):
        gate.check(bearer(token), Permission.CREDENTIALS_MANAGE, "proj")
    with pytest.raises(PermissionDenied):
        gate.check(bearer(token), Permission.JOBS_GET, "other")
    accounts.set_disabled(CredentialKind.TOKEN, "proj", "ci", True)
    with pytest.raises(Unauthenticated, match="disabled"):
        gate.caller(bearer(token))
    accounts.set_disabled(CredentialKind.TOKEN, "proj", "ci", False)
    assert gate.caller(bearer(token)).name == "ci"
    accounts.delete(CredentialKind.TOKEN, "proj", "ci")
    with pytest.raises(Unauthenticated, match="unknown API token"):
        gate.caller(bearer(token))
    assert credential.created_by == "tester"


def test_what_a_credential_resolved_to_is_remembered_for_cache_s_only(store: Store, accounts: Accounts) -> None:
    _, token = accounts.create_token("ci", "proj", Role.VIEWER)
    remembering = Gate(store, cache_s=3600)
    assert remembering.caller(bearer(token)).name == "ci"
    accounts.set_disabled(CredentialKind.TOKEN, "proj", "ci", True)
    assert remembering.caller(bearer(token)).name == "ci"  # within cache_s: as it was
    with pytest.raises(Unauthenticated):
        Gate(store, cache_s=0).caller(bearer(token))


def test_a_service_accounts_assertion_is_traded_for_an_access_token(
    gate: Gate, accounts: Accounts, clock: Clock
) -> None:
    credential, key_file = accounts.create_service_account("runner", "proj", Role.DEVELOPER, TOKEN_URI)
    assert key_file["client_email"] == credential.email == "runner@proj.iam.tidegate"
    assert key_file["private_key_id"] == credential.id and key_file["token_uri"] == TOKEN_URI
    assert "PRIVATE KEY" in key_file["private_key"]
    stored = gate.store.credential_with_secret(credential.id)
    assert stored is not None and "PUBLIC KEY" in stored[1] and "PRIVATE" not in stored[1]

    answer = gate.grant({"grant_type": JWT_GRANT_TYPE, "assertion": assertion(key_file)})
    assert set(answer) == {"access_token", "expires_in", "token_type"}
    assert answer["token_type"] == "Bearer" and answer["expires_in"] == 3600
    caller = gate.check(bearer(answer["access_token"]), Permission.JOBS_UPDATE, "proj")
    assert caller.name == "runner@proj.iam.tidegate"

    clock.advance(3601)  # an access token lives an hour
    with pytest.raises(Unauthenticated, match="expired"):
        gate.caller(bearer(answer["access_token"]))


def test_the_official_clients_self_signed_jwt_is_a_bearer_token(gate: Gate, accounts: Accounts) -> None:
    _, key_file = accounts.create_service_account("runner", "proj", Role.VIEWER, TOKEN_URI)
    token = self_signed(key_file)
    assert gate.check(bearer(token), Permission.JOBS_LIST, "proj").name == "runner@proj.iam.tidegate"
    accounts.set_disabled(SA, "proj", "runner@proj.iam.tidegate", True)  # by email, as well as by name
    with pytest.raises(Unauthenticated, match="disabled"):
        gate.caller(bearer(token))
    accounts.delete(SA, "proj", "runner")
    with pytest.raises(Unauthenticated, match="no service account holds the key"):
        gate.caller(bearer(token))


def test_the_token_endpoint_refuses_as_googles_does(gate: Gate, accounts: Accounts) -> None:
    _, key_file = accounts.create_service_account("runner", "proj", Role.VIEWER, TOKEN_URI)
    _, stranger = Accounts(gate.store).create_service_account("stranger", "proj", Role.VIEWER, TOKEN_URI)
    forged = {**key_file, "private_key": stranger["private_key"]}  # runner's key id, another key
    cases = [
        ({"grant_type": "password", "assertion": assertion(key_file)}, "unsupported_grant_type"),
        ({"grant_type": JWT_GRANT_TYPE}, "invalid_request"),
        ({"grant_type": JWT_GRANT_TYPE, "assertion": "junk"}, "invalid_grant"),
        ({"grant_type": JWT_GRANT_TYPE, "assertion": assertion(forged)}, "invalid_grant"),
        ({"grant_type": JWT_GRANT_TYPE, "assertion": self_signed(key_file)}, "invalid_grant"),
    ]
    for form, error in cases:
        with pytest.raises(TokenError) as refused:
            gate.grant(form)
        assert refused.value.error == error, form
    accounts.set_disabled(SA, "proj", "runner", True)
    with pytest.raises(TokenError, match="disabled"):
        gate.grant({"grant_type": JWT_GRANT_TYPE, "assertion": assertion(key_file)})


def test_bad_credential_input_is_refused_and_changes_nothing(accounts: Accounts) -> None:
    accounts.create_token("ci", "proj", Role.VIEWER)
    for name in ("", "Upper", "1st", "ends-", "anonymous", "a" * 64, "has space"):
        with pytest.raises(InvalidArgument):
            accounts.create_token(name, "proj", Role.VIEWER)
    with pytest.raises(InvalidArgument):
        accounts.create_token("ok", "bad project!", Role.VIEWER)
    with pytest.raises(InvalidArgument):
        accounts.create_service_account("ok", "proj", Role.VIEWER, "ftp://nowhere/token")
    with pytest.raises(AlreadyExists):
        accounts.create_token("ci", "proj", Role.ADMIN)
    with pytest.raises(NotFound):
        accounts.delete(CredentialKind.TOKEN, "proj", "nobody")
    assert [(c.name, c.role) for c in accounts.list(CredentialKind.TOKEN)] == [("ci", Role.VIEWER)]
    assert accounts.list(SA) == []


@pytest.mark.postgres
def test_a_disabled_credential_is_refused_by_every_gate_on_the_database(
    make_store: Callable[..., Store], clock: Clock
) -> None:
    """Two servers sharing PostgreSQL: a token disabled through one is refused by the other."""
    first = make_store("postgresql")
    second = Store(first.url)
    try:
        _, token = Accounts(first).create_token("ci", "proj", Role.VIEWER)
        other = Gate(second, cache_s=0, open_check_s=0)
        assert other.caller(bearer(token)).name == "ci"
        Accounts(first).set_disabled(CredentialKind.TOKEN, "proj", "ci", True)
        with pytest.raises(Unauthenticated, match="disabled"):
            other.caller(bearer(token))
    finally:
        second.close()


# -- the REST app behind the gate ----------------------------------------------------------------

JOBS = "/v1b3/projects/proj/locations/us-central1/jobs"


class Rest:
    """The REST app, called in-process (one event loop per call)."""

    def __init__(self, service: JobService) -> None:
        self.app = create_app(service, Gate(service.store, cache_s=0, open_check_s=0))

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                return await client.request(method, path, **kwargs)

        return asyncio.run(call())

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", path, **kwargs)


@pytest.fixture
def rest(service: JobService) -> Rest:
    return Rest(service)


def test_rest_open_answers_and_records_anonymous(rest: Rest) -> None:
    created = rest.post(JOBS, json={"name": "held", "requestedState": "JOB_STATE_STOPPED"})
    assert created.status_code == 200, created.text
    job_id = created.json()["id"]
    history = rest.get(f"/tidegate/v1/projects/proj/jobs/{job_id}/history").json()["stateHistory"]
    assert [h["caller"] for h in history] == ["anonymous"]


def test_rest_401_403_and_the_caller_in_history_and_messages(rest: Rest, service: JobService) -> None:
    accounts = Accounts(service.store)
    _, viewer = accounts.create_token("watcher", "proj", Role.VIEWER)
    _, developer = accounts.create_token("ci", "proj", Role.DEVELOPER)
    as_viewer, as_developer = {"Authorization": bearer(viewer)}, {"Authorization": bearer(developer)}
    body = {"name": "held", "requestedState": "JOB_STATE_STOPPED"}

    missing = rest.post(JOBS, json=body)
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
    assert missing.json()["error"]["status"] == "UNAUTHENTICATED"
    assert rest.post(JOBS, json=body, headers={"Authorization": "Bearer tgt_forged"}).status_code == 401
    refused = rest.post(JOBS, json=body, headers=as_viewer)
    assert refused.status_code == 403 and refused.json()["error"]["status"] == "PERMISSION_DENIED"
    assert service.store.count_jobs() == 0  # refused: nothing made

    job_id = rest.post(JOBS, json=body, headers=as_developer).json()["id"]
    assert rest.get(f"{JOBS}/{job_id}", headers=as_viewer).status_code == 200
    assert (
        rest.put(f"{JOBS}/{job_id}", json={"requestedState": "JOB_STATE_CANCELLED"}, headers=as_viewer).status_code
        == 403
    )
    assert service.get_job("proj", None, job_id).current_state.name == "JOB_STATE_STOPPED"
    cancelled = rest.put(f"{JOBS}/{job_id}", json={"requestedState": "JOB_STATE_CANCELLED"}, headers=as_developer)
    assert cancelled.status_code == 200, cancelled.text
    history = rest.get(f"/tidegate/v1/projects/proj/jobs/{job_id}/history", headers=as_viewer).json()
    assert [(h["toState"], h["caller"]) for h in history["stateHistory"]] == [
        ("JOB_STATE_STOPPED", "ci"),
        ("JOB_STATE_CANCELLED", "ci"),
    ]
    texts = [m["messageText"] for m in rest.get(f"{JOBS}/{job_id}/messages", headers=as_viewer).json()["jobMessages"]]
    assert any("created by ci" in t for t in texts) and any("requested by ci" in t for t in texts), texts

    # Another project's job: the same 403 whether the job is there or not.
    other = "/v1b3/projects/theirs/locations/us-central1/jobs"
    assert (
        rest.get(f"{other}/{job_id}", headers=as_developer).json()
        == rest.get(f"{other}/no-such-job", headers=as_developer).json()
    )
    assert rest.get(f"{other}/{job_id}", headers=as_developer).status_code == 403
    assert rest.get("/healthz").status_code == 200  # no credential needed to ask whether it is up


def test_rest_token_endpoint_and_credential_admin(rest: Rest, service: JobService) -> None:
    accounts = Accounts(service.store)
    _, admin = accounts.create_token("boss", "proj", Role.ADMIN)
    _, developer = accounts.create_token("ci", "proj", Role.DEVELOPER)
    as_admin = {"Authorization": bearer(admin)}
    made = rest.post(
        "/tidegate/v1/projects/proj/serviceAccounts", json={"name": "runner", "role": "viewer"}, headers=as_admin
    )
    assert made.status_code == 200, made.text
    key_file = made.json()["keyFile"]
    assert key_file["token_uri"] == "http://testserver/token" and made.json()["serviceAccount"]["createdBy"] == "boss"
    denied = rest.post(
        "/tidegate/v1/projects/proj/tokens", json={"name": "x"}, headers={"Authorization": bearer(developer)}
    )
    assert denied.status_code == 403

    form = {"grant_type": JWT_GRANT_TYPE, "assertion": assertion(key_file)}
    answer = rest.post("/token", data=form)
    assert answer.status_code == 200 and answer.json()["token_type"] == "Bearer"
    assert answer.headers["cache-control"] == "no-store"
    access = {"Authorization": bearer(answer.json()["access_token"])}
    assert rest.get(JOBS, headers=access).status_code == 200
    bad = rest.post("/token", data={**form, "assertion": "junk"})
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_grant" and bad.json()["error_description"]

    listed = rest.get("/tidegate/v1/projects/proj/serviceAccounts", headers=as_admin).json()["serviceAccounts"]
    assert [(a["email"], a["role"], a["disabled"]) for a in listed] == [("runner@proj.iam.tidegate", "viewer", False)]
    assert rest.post("/tidegate/v1/projects/proj/serviceAccounts/runner:disable", headers=as_admin).json()["disabled"]
    assert rest.get(JOBS, headers=access).status_code == 401
    assert rest.delete("/tidegate/v1/projects/proj/serviceAccounts/runner", headers=as_admin).status_code == 200
    assert rest.delete("/tidegate/v1/projects/proj/serviceAccounts/runner", headers=as_admin).status_code == 404
    bad_role = rest.post("/tidegate/v1/projects/proj/tokens", json={"name": "x", "role": "owner"}, headers=as_admin)
    assert bad_role.status_code == 400
    secret = rest.post("/tidegate/v1/projects/proj/tokens", json={"name": "x"}, headers=as_admin).json()["secret"]
    assert rest.get(JOBS, headers={"Authorization": bearer(secret)}).status_code == 200
