"""GetJob ahead of Starlette's stack (``api.rest.hot``) answers exactly as the router does, on SQLite and PostgreSQL.

Every request below goes once through the app as served and once through the Starlette
app behind it alone; status, headers that matter and body must be the same.
"""

from __future__ import annotations

import asyncio
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


def answers(app: Any, method: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.request(method, path, headers=headers)

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


def test_getjob_is_counted_under_its_route_template(service: JobService, held: str) -> None:
    app = create_app(service)
    template = "/v1b3/projects/{project_id}/locations/{location}/jobs/{job_id}"

    def counted(status: str) -> float:
        wanted = {"method": "GET", "route": template, "status": status}
        for metric in telemetry.REGISTRY.collect():
            for sample in metric.samples:
                if sample.name == "tidegate_http_requests_total" and sample.labels == wanted:
                    return float(sample.value)
        return 0.0

    ok, missing = counted("200"), counted("404")
    answers(app, "GET", f"/v1b3/projects/proj/locations/us-central1/jobs/{held}")
    answers(app, "GET", "/v1b3/projects/proj/locations/us-central1/jobs/nope")
    assert (counted("200"), counted("404")) == (ok + 1, missing + 1)


def test_only_getjob_skips_the_router(service: JobService, held: str) -> None:
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
    assert passed == []
    answers(app, "HEAD", located)
    answers(app, "GET", f"{located}/messages")
    answers(app, "GET", "/healthz")
    assert [method for method, _ in passed] == ["HEAD", "GET", "GET"]
