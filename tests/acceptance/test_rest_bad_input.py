"""Bad input over raw HTTP: each gets Google's error body with a clear reason, and changes nothing.

Every case runs against a real ``tidegate server``. Before and after each bad request the
test reads the database itself: the number of jobs, the target job's row (state,
version, labels, spec, times), its state history and its messages must be identical.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from .conftest import LOCATION, Server

pytestmark = pytest.mark.slow

MAX_BODY = 20 * 1024 * 1024
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3}|\.\d{6}|\.\d{9})?Z")
INTS = {"$alt": "json;enum-encoding=int"}
SOME_ID = "2026-01-01_00_00_00-1234567890123456789"


@dataclass
class Target:
    """A held job with labels in a project of its own, and paths around it."""

    server: Server
    http: httpx.Client
    project: str
    job_id: str

    @property
    def jobs(self) -> str:
        return f"/v1b3/projects/{self.project}/locations/{LOCATION}/jobs"

    @property
    def job(self) -> str:
        return f"{self.jobs}/{self.job_id}"


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base, timeout=60) as client:
        yield client


@pytest.fixture
def target(server: Server, http: httpx.Client, project: str) -> Target:
    made = http.post(
        f"/v1b3/projects/{project}/locations/{LOCATION}/jobs",
        json={"name": "target", "requestedState": "JOB_STATE_STOPPED", "labels": {"keep": "me"}},
    )
    assert made.status_code == 200, made.text
    return Target(server, http, project, made.json()["id"])


def assert_google_error(response: httpx.Response, code: int, status: str, reason: str, *words: str) -> None:
    """Google's JSON error body: code, message, status and a ``google.rpc.ErrorInfo`` detail."""
    assert response.status_code == code, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"code", "message", "status", "details"}, error
    assert (error["code"], error["status"]) == (code, status), error
    assert error["message"] and "\n" not in error["message"], error["message"]
    assert "Traceback" not in error["message"]
    infos = [d for d in error["details"] if d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"]
    assert len(infos) == 1, error
    assert infos[0]["reason"] == reason, error
    assert infos[0]["domain"] == "dataflow.googleapis.com"
    for word in words:
        assert word in error["message"], (word, error["message"])


def expect_refused(
    target: Target,
    method: str,
    path: str,
    code: int,
    status: str,
    reason: str,
    *words: str,
    **request: Any,
) -> httpx.Response:
    """Send a bad request; check the error and that the database is exactly as it was."""
    before = target.server.snapshot(target.job_id)
    response = target.http.request(method, path, **request)
    assert_google_error(response, code, status, reason, *words)
    assert target.server.snapshot(target.job_id) == before
    return response


def token(*parts: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode().rstrip("=")


# -- create: bodies that are not a job ---------------------------------------------------

BAD_CREATE_BODIES = {
    "malformed JSON": (b'{"name": "x",', "INVALID_JSON", ["not valid JSON"]),
    "not JSON at all": (b"name=x", "INVALID_JSON", ["not valid JSON"]),
    "invalid UTF-8": (b'{"name": "\xff"}', "INVALID_JSON", ["not valid JSON"]),
    "an array": (b'[{"name": "x"}]', "INVALID_JSON", ["expected a JSON object"]),
    "an empty array": (b"[]", "INVALID_JSON", ["expected a JSON object"]),
    "a string": (b'"name"', "INVALID_JSON", ["expected a JSON object"]),
    "null": (b"null", "INVALID_JSON", ["expected a JSON object"]),
    "a duplicate key": (b'{"name": "x", "name": "y"}', "INVALID_JSON", ["duplicate key"]),
    "NaN": (b'{"name": "x", "environment": {"sdkPipelineOptions": {"a": NaN}}}', "INVALID_JSON", ["NaN"]),
    "an overflowing number": (
        b'{"name": "x", "environment": {"sdkPipelineOptions": {"a": 1e999}}}',
        "INVALID_JSON",
        ["out of range"],
    ),
    "a name of the wrong type": (b'{"name": 5}', "INVALID_JSON", ["name"]),
    "labels of the wrong type": (b'{"name": "x", "labels": ["a"]}', "INVALID_JSON", ["labels"]),
    "a label value of the wrong type": (b'{"name": "x", "labels": {"a": 1}}', "INVALID_JSON", ["labels"]),
    "a time of the wrong type": (b'{"name": "x", "createTime": 1700000000}', "INVALID_JSON", ["createTime"]),
    "a malformed time": (b'{"name": "x", "createTime": "yesterday"}', "INVALID_JSON", ["createTime"]),
    "a nested integer of the wrong type": (
        b'{"name": "x", "environment": {"workerPools": [{"numWorkers": "many"}]}}',
        "INVALID_JSON",
        ["numWorkers"],
    ),
    "a boolean for an enum": (b'{"name": "x", "type": true}', "INVALID_JSON", ["JobType"]),
    "a nested boolean for an enum": (
        b'{"name": "x", "stageStates": [{"executionStageState": false}]}',
        "INVALID_JSON",
        ["executionStageState"],
    ),
    "an unknown field": (b'{"name": "x", "colour": "blue"}', "INVALID_JSON", ["colour"]),
    "an unknown nested field": (b'{"name": "x", "environment": {"colour": "blue"}}', "INVALID_JSON", ["colour"]),
    "an unknown enum name": (b'{"name": "x", "type": "JOB_TYPE_NOPE"}', "INVALID_JSON", ["JOB_TYPE_NOPE"]),
    "an unknown enum number": (b'{"name": "x", "type": 99}', "INVALID_ENUM_VALUE", ["99"]),
    "an unknown requested state": (b'{"name": "x", "requestedState": 99}', "INVALID_ENUM_VALUE", ["99"]),
    "a requested state no create may ask": (
        b'{"name": "x", "requestedState": "JOB_STATE_CANCELLED"}',
        "INVALID_REQUESTED_STATE",
        ["JOB_STATE_CANCELLED"],
    ),
    "an invalid name": (b'{"name": "Not_A_Name"}', "INVALID_JOB_NAME", ["Not_A_Name"]),
    "no name": (b"{}", "INVALID_JOB_NAME", []),
    "an empty body": (b"", "INVALID_JOB_NAME", []),
    "an invalid label": (b'{"name": "x", "labels": {"Key": "v"}}', "INVALID_LABELS", ["Key"]),
    "another project in the body": (b'{"name": "x", "projectId": "other"}', "PROJECT_MISMATCH", ["other"]),
    "another location in the body": (b'{"name": "x", "location": "mars-1"}', "LOCATION_MISMATCH", ["mars-1"]),
    "a float for an enum": (b'{"name": "x", "requestedState": 5.7}', "INVALID_JSON", ["5.7"]),
    "a typo in the tidegate options": (
        b'{"name": "x", "environment": {"sdkPipelineOptions": {"options": {"tidegate":'
        b' {"engine": "flink", "progam": "job.py"}}}}}',
        "INVALID_TIDEGATE_OPTIONS",
        ["progam"],
    ),
    "an unknown engine": (
        b'{"name": "x", "environment": {"sdkPipelineOptions": {"options": {"tidegate": {"engine": "flnk"}}}}}',
        "INVALID_TIDEGATE_OPTIONS",
        ["flnk"],
    ),
    "a Flink job without a program": (
        b'{"name": "x", "environment": {"sdkPipelineOptions": {"options": {"tidegate": {"engine": "flink"}}}}}',
        "INVALID_PROGRAM",
        ["tidegate.program"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_CREATE_BODIES))
def test_bad_create_body(target: Target, case: str) -> None:
    body, reason, words = BAD_CREATE_BODIES[case]
    expect_refused(
        target,
        "POST",
        target.jobs,
        400,
        "INVALID_ARGUMENT",
        reason,
        *words,
        content=body,
        headers={"content-type": "application/json"},
    )


def test_create_with_an_active_jobs_name_answers_that_job_and_changes_nothing(target: Target) -> None:
    before = target.server.snapshot(target.job_id)
    body = {"name": "target", "labels": {"other": "x"}, "clientRequestId": "mine"}
    response = target.http.post(target.jobs, json=body)
    assert response.status_code == 200, response.text  # as Dataflow: the active job, not a 409
    job = response.json()
    assert job["id"] == target.job_id and job["labels"] == {"keep": "me"}
    assert "clientRequestId" not in job  # the job's own (none), not the request's
    assert target.server.snapshot(target.job_id) == before


def test_a_bad_create_with_an_active_jobs_name_is_still_refused(target: Target) -> None:
    body = {"name": "target", "labels": {"Bad": "x"}}
    expect_refused(target, "POST", target.jobs, 400, "INVALID_ARGUMENT", "INVALID_LABELS", "Bad", json=body)


@pytest.mark.parametrize("params", [{"view": "bogus"}, {"view": "9"}])
def test_a_bad_parameter_of_a_valid_create_makes_no_job(target: Target, params: dict[str, str]) -> None:
    expect_refused(
        target,
        "POST",
        target.jobs,
        400,
        "INVALID_ARGUMENT",
        "INVALID_ENUM_VALUE",
        "view",
        params=params,
        json={"name": "ok"},
    )


# -- query parameters ----------------------------------------------------------------------

BAD_QUERIES = {
    "list filter=99": ("jobs", {"filter": "99"}, "INVALID_ENUM_VALUE", ["filter"]),
    "list filter=bogus": ("jobs", {"filter": "bogus"}, "INVALID_ENUM_VALUE", ["filter"]),
    "list view=bogus": ("jobs", {"view": "bogus"}, "INVALID_ENUM_VALUE", ["view"]),
    "list view=7": ("jobs", {"view": "7"}, "INVALID_ENUM_VALUE", ["view"]),
    "list pageSize=ten": ("jobs", {"pageSize": "ten"}, "INVALID_PARAMETER", ["pageSize", "integer"]),
    "list pageSize=1.5": ("jobs", {"pageSize": "1.5"}, "INVALID_PARAMETER", ["pageSize"]),
    "list pageSize=-1": ("jobs", {"pageSize": "-1"}, "INVALID_PAGE_SIZE", ["pageSize"]),
    "list pageToken=garbage": ("jobs", {"pageToken": "not a token!"}, "INVALID_PAGE_TOKEN", ["page token"]),
    "list pageToken=base64 of junk": ("jobs", {"pageToken": "aGVsbG8"}, "INVALID_PAGE_TOKEN", ["page token"]),
    "list pageToken of messages": ("jobs", {"pageToken": token("m", 1)}, "INVALID_PAGE_TOKEN", ["page token"]),
    "get view=bogus": ("job", {"view": "bogus"}, "INVALID_ENUM_VALUE", ["view"]),
    "messages minimumImportance=bogus": (
        "messages",
        {"minimumImportance": "bogus"},
        "INVALID_ENUM_VALUE",
        ["minimumImportance"],
    ),
    "messages minimumImportance=42": ("messages", {"minimumImportance": "42"}, "INVALID_ENUM_VALUE", ["42"]),
    "messages startTime=yesterday": ("messages", {"startTime": "yesterday"}, "INVALID_PARAMETER", ["startTime"]),
    "messages pageSize=x": ("messages", {"pageSize": "x"}, "INVALID_PARAMETER", ["pageSize"]),
    "messages pageToken=garbage": ("messages", {"pageToken": "garbage"}, "INVALID_PAGE_TOKEN", ["page token"]),
    "messages pageToken of jobs": ("messages", {"pageToken": token("a", 1)}, "INVALID_PAGE_TOKEN", ["page token"]),
}


@pytest.mark.parametrize("case", list(BAD_QUERIES))
def test_bad_query_parameter(target: Target, case: str) -> None:
    where, params, reason, words = BAD_QUERIES[case]
    path = {"jobs": target.jobs, "job": target.job, "messages": f"{target.job}/messages"}[where]
    expect_refused(target, "GET", path, 400, "INVALID_ARGUMENT", reason, *words, params=params)


@pytest.mark.parametrize(
    "forged",
    [token("t", 1), token("a", 10**30), token("u", 5), token("a", -1), token("a", True)],
    ids=["wrong-arity", "int64-overflow", "another-listings-kind", "negative", "not-an-int"],
)
def test_forged_page_token(target: Target, forged: str) -> None:
    for list_filter in ("ALL", "TERMINATED", "ACTIVE"):
        expect_refused(
            target,
            "GET",
            target.jobs,
            400,
            "INVALID_ARGUMENT",
            "INVALID_PAGE_TOKEN",
            params={"pageToken": forged, "filter": list_filter},
        )


# -- update: requests that must not be carried out -------------------------------------------

BAD_UPDATES = {
    "neither requestedState nor updateMask": ({}, {}, 400, "INVALID_ARGUMENT", "MISSING_REQUESTED_STATE", []),
    "labels without updateMask": (
        {"labels": {"new": "label"}},
        {},
        400,
        "INVALID_ARGUMENT",
        "MISSING_REQUESTED_STATE",
        ["updateMask"],
    ),
    "an explicit JOB_STATE_UNKNOWN": (
        {"requestedState": "JOB_STATE_UNKNOWN"},
        {},
        400,
        "INVALID_ARGUMENT",
        "MISSING_REQUESTED_STATE",
        [],
    ),
    "a requested state of the service": (
        {"requestedState": "JOB_STATE_FAILED"},
        {},
        400,
        "INVALID_ARGUMENT",
        "INVALID_REQUESTED_STATE",
        ["JOB_STATE_FAILED"],
    ),
    "PAUSED": ({"requestedState": 14}, {}, 400, "INVALID_ARGUMENT", "INVALID_REQUESTED_STATE", ["JOB_STATE_PAUSED"]),
    "an unknown state number": ({"requestedState": 99}, {}, 400, "INVALID_ARGUMENT", "INVALID_ENUM_VALUE", ["99"]),
    "an unknown state name": (
        {"requestedState": "JOB_STATE_BOGUS"},
        {},
        400,
        "INVALID_ARGUMENT",
        "INVALID_JSON",
        ["JOB_STATE_BOGUS"],
    ),
    "a boolean state": ({"requestedState": True}, {}, 400, "INVALID_ARGUMENT", "INVALID_JSON", ["JobState"]),
    "an unknown field": (
        {"requestedState": "JOB_STATE_CANCELLED", "colour": "red"},
        {},
        400,
        "INVALID_ARGUMENT",
        "INVALID_JSON",
        ["colour"],
    ),
    "a drain of a batch job": (
        {"requestedState": "JOB_STATE_DRAINED"},
        {},
        400,
        "FAILED_PRECONDITION",
        "REQUEST_NOT_ALLOWED",
        ["batch"],
    ),
    "an updateMask on a field that cannot change": (
        {"name": "renamed"},
        {"updateMask": "name"},
        400,
        "INVALID_ARGUMENT",
        "INVALID_UPDATE_MASK",
        ["name"],
    ),
    "a new name in the body": (
        {"requestedState": "JOB_STATE_CANCELLED", "name": "renamed"},
        {},
        400,
        "INVALID_ARGUMENT",
        "IMMUTABLE_FIELD",
        ["name", "renamed"],
    ),
    "another job's id in the body": (
        {"requestedState": "JOB_STATE_CANCELLED", "id": SOME_ID},
        {},
        400,
        "INVALID_ARGUMENT",
        "IMMUTABLE_FIELD",
        ["id", SOME_ID],
    ),
    "another location in the body": (
        {"requestedState": "JOB_STATE_CANCELLED", "location": "mars-1"},
        {},
        400,
        "INVALID_ARGUMENT",
        "IMMUTABLE_FIELD",
        ["location"],
    ),
    "invalid labels": (
        {"labels": {"Bad": "x"}},
        {"updateMask": "labels"},
        400,
        "INVALID_ARGUMENT",
        "INVALID_LABELS",
        [],
    ),
    "too many labels": (
        {"labels": {f"k{n}": "v" for n in range(65)}},
        {"updateMask": "labels"},
        400,
        "INVALID_ARGUMENT",
        "INVALID_LABELS",
        ["64"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_UPDATES))
def test_bad_update(target: Target, case: str) -> None:
    body, params, code, status, reason, words = BAD_UPDATES[case]
    expect_refused(target, "PUT", target.job, code, status, reason, *words, json=body, params=params)


def test_an_update_may_send_back_the_job_it_read(target: Target) -> None:
    """The fields that name the job may come back as they are; the rest of the body is ignored."""
    job = target.http.get(target.job, params={"view": "JOB_VIEW_ALL"}).json()
    body = {**job, "requestedState": "JOB_STATE_CANCELLED", "type": "JOB_TYPE_STREAMING", "clientRequestId": "other"}
    updated = target.http.put(target.job, json=body)
    assert updated.status_code == 200, updated.text
    assert updated.json()["currentState"] == "JOB_STATE_CANCELLED"
    assert updated.json()["type"] == job["type"]
    assert updated.json().get("clientRequestId") == job.get("clientRequestId")


@pytest.mark.parametrize("body", [b'{"requestedState": ', b"[]", b"null"])
def test_malformed_update_body(target: Target, body: bytes) -> None:
    expect_refused(target, "PUT", target.job, 400, "INVALID_ARGUMENT", "INVALID_JSON", content=body)


def test_requests_on_a_terminal_job(target: Target) -> None:
    cancelled = target.http.put(target.job, json={"requestedState": "JOB_STATE_CANCELLED"})
    assert cancelled.json()["currentState"] == "JOB_STATE_CANCELLED"
    for state in ("JOB_STATE_DONE", "JOB_STATE_RUNNING", "JOB_STATE_STOPPED"):
        expect_refused(
            target,
            "PUT",
            target.job,
            400,
            "FAILED_PRECONDITION",
            "JOB_TERMINAL",
            "JOB_STATE_CANCELLED",
            json={"requestedState": state},
        )
    # The retried cancel is the one request that still answers, and it changes nothing either.
    before = target.server.snapshot(target.job_id)
    again = target.http.put(target.job, json={"requestedState": "JOB_STATE_CANCELLED"})
    assert again.status_code == 200 and again.json()["currentState"] == "JOB_STATE_CANCELLED"
    assert target.server.snapshot(target.job_id) == before


# -- unknown jobs and paths --------------------------------------------------------------------


def test_unknown_job(target: Target) -> None:
    unknown = f"{target.jobs}/{SOME_ID}"
    for method, path, request in (
        ("GET", unknown, {}),
        ("PUT", unknown, {"json": {"requestedState": "JOB_STATE_CANCELLED"}}),
        ("GET", f"{unknown}/messages", {}),
        ("GET", f"/v1b3/projects/{target.project}/jobs/{SOME_ID}", {}),
        ("GET", f"/v1b3/projects/{target.project}/locations/europe-west1/jobs/{target.job_id}", {}),
        ("GET", f"/v1b3/projects/{target.project}-other/locations/{LOCATION}/jobs/{target.job_id}", {}),
        ("POST", f"{unknown}:snapshot", {}),
    ):
        expect_refused(target, method, path, 404, "NOT_FOUND", "JOB_NOT_FOUND", **request)


def test_unknown_path_and_method(target: Target) -> None:
    expect_refused(target, "GET", "/v1b3/projects/x/nothing-here", 404, "NOT_FOUND", "URL_NOT_FOUND", "nothing-here")
    response = expect_refused(target, "DELETE", target.job, 405, "UNIMPLEMENTED", "METHOD_NOT_ALLOWED", "DELETE")
    assert set(response.headers["allow"].replace(" ", "").split(",")) >= {"GET", "PUT"}


def test_snapshot_of_a_batch_job_is_refused(target: Target) -> None:
    expect_refused(target, "POST", f"{target.job}:snapshot", 400, "FAILED_PRECONDITION", "SNAPSHOT_NOT_STREAMING")


# -- bodies over Dataflow's 20 MB limit --------------------------------------------------------


def _huge_job() -> bytes:
    padding = "x" * (MAX_BODY + 1024)
    return json.dumps({"name": "huge", "environment": {"sdkPipelineOptions": {"padding": padding}}}).encode()


def _chunks(data: bytes, size: int = 1024 * 1024) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize("how", ["content-length", "chunked"])
@pytest.mark.parametrize("where", ["create", "update"])
def test_body_over_20_mb(target: Target, how: str, where: str) -> None:
    body = _huge_job()
    content: bytes | Iterator[bytes] = body if how == "content-length" else _chunks(body)
    path = target.jobs if where == "create" else target.job
    method = "POST" if where == "create" else "PUT"
    before = target.server.snapshot(target.job_id)
    with httpx.Client(base_url=target.server.base, timeout=60) as fresh:  # the server may close the connection
        response = fresh.request(method, path, content=content, headers={"content-type": "application/json"})
    assert_google_error(response, 400, "INVALID_ARGUMENT", "REQUEST_TOO_LARGE", str(MAX_BODY))
    assert target.server.snapshot(target.job_id) == before
    # The server is still well and answers on.
    assert target.http.get(target.job).status_code == 200


def test_a_body_just_under_the_limit_is_read(target: Target) -> None:
    padding = "x" * (MAX_BODY - 4096)
    body = json.dumps({"name": "target", "labels": {"big": "x"}, "pipelineDescription": {"x": padding}}).encode()
    assert len(body) < MAX_BODY
    # Read whole (and then refused for a reason of its own): the limit is not hit below 20 MB.
    expect_refused(
        target, "POST", target.jobs, 400, "INVALID_ARGUMENT", "INVALID_JSON", "pipelineDescription", content=body
    )


# -- enum encoding and times ---------------------------------------------------------------------


def test_enum_encoding_follows_the_request(target: Target) -> None:
    http = target.http
    target.http.put(target.job, json={"requestedState": "JOB_STATE_CANCELLED"})
    named = http.get(target.job).json()
    numbered = http.get(target.job, params=INTS).json()
    assert (named["currentState"], named["requestedState"], named["type"]) == (
        "JOB_STATE_CANCELLED",
        "JOB_STATE_CANCELLED",
        "JOB_TYPE_BATCH",
    )
    assert (numbered["currentState"], numbered["requestedState"], numbered["type"]) == (5, 5, 1)
    for job in (named, numbered):
        for field in ("createTime", "currentStateTime", "startTime"):
            assert RFC3339.fullmatch(job[field]), (field, job[field])
    assert named["labels"] == {"keep": "me"}

    for params, states in (({}, {"JOB_STATE_CANCELLED"}), (INTS, {5})):
        listed = http.get(target.jobs, params={**params, "view": "JOB_VIEW_ALL"}).json()["jobs"]
        assert {j["currentState"] for j in listed} == states
        messages = http.get(f"{target.job}/messages", params=params).json()["jobMessages"]
        importances = {m["messageImportance"] for m in messages}
        assert importances == ({"JOB_MESSAGE_BASIC"} if not params else {5}), importances
        assert all(RFC3339.fullmatch(m["time"]) for m in messages)

    made = http.post(target.jobs, params=INTS, json={"name": "numbers", "type": 2, "requestedState": 1}).json()
    assert (made["type"], made["currentState"], made["requestedState"]) == (2, 1, 1)
    updated = http.put(f"{target.jobs}/{made['id']}", params=INTS, json={"requestedState": 5}).json()
    assert updated["currentState"] == 5
    named_made = http.get(f"{target.jobs}/{made['id']}").json()
    assert named_made["type"] == "JOB_TYPE_STREAMING"
    # A request may name enums either way, whatever it asks back.
    assert http.get(target.jobs, params={"filter": "ACTIVE"}).json().get("jobs", []) == []
    assert http.get(target.jobs, params={"filter": "3", **INTS}).json().get("jobs", []) == []
    assert len(http.get(target.jobs, params={"filter": "TERMINATED"}).json()["jobs"]) == 2
