"""GetJob, CreateJob and UpdateJob ahead of Starlette's stack (``api.rest.hot``) answer exactly as the router does.

On SQLite and PostgreSQL, every request below goes once through the app as served and
once through the Starlette app behind it alone; status, headers that matter and body must
be the same (a write goes to a job of its own on each side: the answers must then be the
same but for the job's id, name and times).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tidegate import telemetry
from tidegate.api.rest.app import create_app
from tidegate.api.rest.hot import HotRoutes
from tidegate.auth import Gate
from tidegate.auth.accounts import Accounts
from tidegate.lifecycle import JobState
from tidegate.model import NewJob, Role
from tidegate.service.jobs import JobService


def answers(
    app: Any, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None
) -> tuple[int, str, bytes]:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.request(method, path, headers=headers, content=body)

    response = asyncio.run(call())
    return response.status_code, response.headers.get("content-type", ""), response.content


def paths(job_id: str) -> list[str]:
    located, legacy = "/v1b3/projects/proj/locations/us-central1/jobs", "/v1b3/projects/proj/jobs"
    return [
        f"{located}/{job_id}",
        f"{located}/{job_id}?view=JOB_VIEW_ALL",
        f"{located}/{job_id}?%24alt=json%3Benum-encoding%3Dint",
        f"{located}/{job_id}?view=JOB_VIEW_NOPE",
        f"{legacy}/{job_id}",
        f"{legacy}/{job_id}?location=us-central1",
        f"{legacy}/{job_id}?location=europe-west1",
        f"/v1b3/projects/proj/locations/europe-west1/jobs/{job_id}",
        f"/v1b3/projects/other/locations/us-central1/jobs/{job_id}",
        f"{located}/no-such-job",
        f"{located}/{job_id}:snapshot",
        f"{located}/{job_id}/",
        f"{located}/",
        f"{located}//",
        f"/v1b3/projects//jobs/{job_id}",
        "/v1b3/projects/proj/jobs:aggregated",
        f"/v1b2/projects/proj/jobs/{job_id}",
        f"/v1b3/projects/proj/snapshots/{job_id}",
        f"/v1b3/projects/proj/locations/us-central1/snapshots/{job_id}",
        f"{located}/{job_id}/messages",
        f"{located}/a%2Fb",
    ]


@pytest.fixture
def held(service: JobService, new_job: Callable[..., NewJob]) -> str:
    return service.create_job(new_job(requested_state=JobState.JOB_STATE_STOPPED, labels={"team": "a"})).id


def test_getjob_answers_as_the_router_does(service: JobService, held: str) -> None:
    app = create_app(service)
    assert isinstance(app, HotRoutes)
    for path in paths(held):
        for method in ("GET", "HEAD"):
            assert answers(app, method, path) == answers(app.app, method, path), (method, path)
    status, kind, body = answers(app, "GET", paths(held)[0])
    assert status == 200 and kind == "application/json" and held.encode() in body


def test_getjob_behind_the_gate_answers_as_the_router_does(service: JobService, held: str) -> None:
    app = create_app(service, Gate(service.store, cache_s=0, open_check_s=0))
    assert isinstance(app, HotRoutes)
    accounts = Accounts(service.store)
    _, viewer = accounts.create_token("watcher", "proj", Role.VIEWER)
    _, elsewhere = accounts.create_token("other", "other", Role.ADMIN)
    for headers in ({}, {"Authorization": f"Bearer {viewer}"}, {"Authorization": f"Bearer {elsewhere}"}):
        for path in paths(held):
            assert answers(app, "GET", path, headers) == answers(app.app, "GET", path, headers), (headers, path)
    assert answers(app, "GET", paths(held)[0])[0] == 401
    assert answers(app, "GET", paths(held)[0], {"Authorization": f"Bearer {viewer}"})[0] == 200


def test_a_changed_job_is_answered_as_it_is_now(service: JobService, held: str) -> None:
    app = create_app(service)
    path = f"/v1b3/projects/proj/locations/us-central1/jobs/{held}"
    before = answers(app, "GET", path)
    service.update_job("proj", None, held, labels={"team": "b"}, update_mask=["labels"])
    after = answers(app, "GET", path)
    assert b'"team":"a"' in before[2] and b'"team":"b"' in after[2]


def _counted(template: str, status: str) -> float:
    """How many GETs of ``template`` answered ``status`` the server has counted."""
    wanted = {"method": "GET", "route": template, "status": status}
    for metric in telemetry.REGISTRY.collect():
        for sample in metric.samples:
            if sample.name == "tidegate_http_requests_total" and sample.labels == wanted:
                return float(sample.value)
    return 0.0


def test_getjob_is_counted_under_its_route_template(service: JobService, held: str) -> None:
    app = create_app(service)
    template = "/v1b3/projects/{project_id}/locations/{location}/jobs/{job_id}"

    def counted(status: str) -> float:
        return _counted(template, status)

    ok, missing = counted("200"), counted("404")
    answers(app, "GET", f"/v1b3/projects/proj/locations/us-central1/jobs/{held}")
    answers(app, "GET", "/v1b3/projects/proj/locations/us-central1/jobs/nope")
    assert (counted("200"), counted("404")) == (ok + 1, missing + 1)


def test_only_the_hot_calls_skip_the_router(service: JobService, held: str) -> None:
    app = create_app(service)
    assert isinstance(app, HotRoutes)
    inner, passed = app.app, []

    async def router(scope: Any, receive: Any, send: Any) -> None:
        passed.append((scope["method"], scope["path"]))
        await inner(scope, receive, send)

    app.app = router
    located = f"/v1b3/projects/proj/locations/us-central1/jobs/{held}"
    assert answers(app, "GET", located)[0] == 200
    assert answers(app, "GET", f"/v1b3/projects/proj/jobs/{held}")[0] == 200
    labels = json.dumps({"labels": {"team": "c"}}).encode()
    assert answers(app, "PUT", f"{located}?updateMask=labels", body=labels)[0] == 200
    create = json.dumps({"name": "skips", "type": "JOB_TYPE_BATCH", "requestedState": "JOB_STATE_STOPPED"})
    assert answers(app, "POST", "/v1b3/projects/proj/jobs", body=create.encode())[0] == 200
    assert passed == []
    answers(app, "HEAD", located)
    answers(app, "GET", f"{located}/messages")
    answers(app, "GET", "/healthz")
    answers(app, "GET", "/v1b3/projects/proj/jobs")  # ListJobs: the router's
    answers(app, "POST", f"{located}:snapshot")
    answers(app, "DELETE", located)
    assert [method for method, _ in passed] == ["HEAD", "GET", "GET", "GET", "POST", "DELETE"]


_TIMES = re.compile(rb'"\d{4}-\d{2}-\d{2}T[0-9:.]+Z"')


def _alike(answer: tuple[int, str, bytes], *names: str) -> tuple[int, str, bytes]:
    """An answer with the given ids and names, and every time, written out of it."""
    status, kind, body = answer
    for name in names:
        body = body.replace(name.encode(), b"<name>")
    return status, kind, _TIMES.sub(b'"<time>"', body)


def test_createjob_answers_as_the_router_does(service: JobService, new_job: Callable[..., NewJob]) -> None:
    app = create_app(service)
    assert isinstance(app, HotRoutes)
    located, legacy = "/v1b3/projects/proj/locations/us-central1/jobs", "/v1b3/projects/proj/jobs"
    taken = service.create_job(new_job(name="taken", requested_state=JobState.JOB_STATE_STOPPED)).id
    cases: list[tuple[str, dict[str, Any] | bytes]] = [
        (located, {"type": "JOB_TYPE_BATCH", "requestedState": "JOB_STATE_STOPPED", "labels": {"a": "b"}}),
        (f"{located}?view=JOB_VIEW_ALL", {"type": "JOB_TYPE_BATCH", "requestedState": "JOB_STATE_STOPPED"}),
        (f"{located}?%24alt=json%3Benum-encoding%3Dint", {"type": 1, "requestedState": 1}),
        (legacy, {"type": "JOB_TYPE_BATCH", "requestedState": "JOB_STATE_STOPPED"}),
        (f"{located}?view=JOB_VIEW_NOPE", {"type": "JOB_TYPE_BATCH"}),
        (located, {"type": "JOB_TYPE_NOPE"}),
        (located, {"type": "JOB_TYPE_BATCH", "unknownField": 1}),
        (located, b"{not json"),
        (located, {"type": "JOB_TYPE_BATCH", "labels": {"Bad": "x"}}),
        ("/v1b3/projects/bad project/jobs", {"type": "JOB_TYPE_BATCH"}),
    ]
    for n, (path, request) in enumerate(cases):
        names = (f"hot-{n}", f"router-{n}")
        sides = []
        for side, name in zip((app, app.app), names, strict=True):
            body = request if isinstance(request, bytes) else json.dumps({"name": name, **request}).encode()
            sides.append(answers(side, "POST", path, body=body))
        ids = [json.loads(body)["id"] for status, _, body in sides if status == 200]
        assert _alike(sides[0], *names, *ids) == _alike(sides[1], *names, *ids), (path, request)
    # A taken name answers the job that has it, on both sides.
    body = json.dumps({"name": "taken", "type": "JOB_TYPE_BATCH"}).encode()
    assert answers(app, "POST", located, body=body) == answers(app.app, "POST", located, body=body)
    assert taken.encode() in answers(app, "POST", located, body=body)[2]


def test_updatejob_answers_as_the_router_does(service: JobService, new_job: Callable[..., NewJob]) -> None:
    app = create_app(service)
    assert isinstance(app, HotRoutes)
    cases: list[tuple[str, dict[str, Any] | bytes]] = [
        ("", {"requestedState": "JOB_STATE_CANCELLED"}),
        ("?updateMask=labels", {"labels": {"team": "b"}}),
        ("?updateMask=labels", {"labels": {"Team": "b"}}),
        ("?updateMask=nope", {"labels": {"team": "b"}}),
        ("", {"requestedState": "JOB_STATE_NOPE"}),
        ("", {"requestedState": "JOB_STATE_DONE"}),
        ("", b"[1, 2"),
    ]
    for query, request in cases:
        sides, ids = [], []
        for side in (app, app.app):
            job = service.create_job(new_job(requested_state=JobState.JOB_STATE_STOPPED))
            job_id = job.id
            ids += [job.id, job.name]
            body = request if isinstance(request, bytes) else json.dumps(request).encode()
            for path in (
                f"/v1b3/projects/proj/locations/us-central1/jobs/{job_id}",
                f"/v1b3/projects/proj/jobs/{job_id}",
            ):
                sides.append(answers(side, "PUT", path + query, body=body))
        assert len({_alike(answer, *ids) for answer in sides}) == 1, (query, request, sides)
    for path in ("/v1b3/projects/proj/jobs/no-such-job", "/v1b3/projects/other/jobs/" + job_id):
        body = json.dumps({"requestedState": "JOB_STATE_CANCELLED"}).encode()
        assert answers(app, "PUT", path, body=body) == answers(app.app, "PUT", path, body=body)
        assert answers(app, "PUT", path, body=body)[0] == 404


def test_writes_behind_the_gate_need_their_own_permissions(service: JobService, new_job: Callable[..., NewJob]) -> None:
    app = create_app(service, Gate(service.store, cache_s=0, open_check_s=0))
    accounts = Accounts(service.store)
    _, viewer = accounts.create_token("watcher", "proj", Role.VIEWER)
    _, developer = accounts.create_token("builder", "proj", Role.DEVELOPER)
    job_id = service.create_job(new_job(requested_state=JobState.JOB_STATE_STOPPED)).id
    put = "PUT", f"/v1b3/projects/proj/jobs/{job_id}", json.dumps({"labels": {"x": "y"}}).encode()
    post = "POST", "/v1b3/projects/proj/jobs", json.dumps({"name": "gated", "type": "JOB_TYPE_BATCH"}).encode()
    for headers in ({}, {"Authorization": f"Bearer {viewer}"}):
        for method, path, body in (put, post):
            hot = answers(app, method, path, headers, body)
            assert hot == answers(app.app, method, path, headers, body) and hot[0] in (401, 403), (headers, path, hot)
    writer = {"Authorization": f"Bearer {developer}"}
    assert answers(app, "PUT", put[1] + "?updateMask=labels", writer, put[2])[0] == 200
    assert answers(app, "POST", post[1], writer, post[2])[0] == 200


def test_a_hot_call_whose_answer_cannot_be_sent_is_still_counted(service: JobService, held: str) -> None:
    """A client gone before the answer: the call is counted with its status, as the router's middleware counts it."""
    app = create_app(service)
    template = "/v1b3/projects/{project_id}/jobs/{job_id}"
    scope = {
        "type": "http",
        "method": "GET",
        "path": f"/v1b3/projects/proj/jobs/{held}",
        "raw_path": f"/v1b3/projects/proj/jobs/{held}".encode(),
        "query_string": b"",
        "headers": [],
        "root_path": "",
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def gone(message: Any) -> None:
        raise OSError("the client went away")

    before = _counted(template, "200")
    with pytest.raises(OSError):
        asyncio.run(app(scope, receive, gone))
    assert _counted(template, "200") == before + 1
