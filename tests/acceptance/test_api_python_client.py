"""``google-api-python-client`` (what Airflow's Dataflow hook uses) against a running server.

``discovery.build("dataflow", "v1b3")`` with the library's bundled discovery document and
an overridden endpoint: nothing is fetched from outside.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from googleapiclient.errors import HttpError

from .clients import discovery_client
from .conftest import Server

pytestmark = pytest.mark.slow

LOCATION = "us-central1"


@pytest.fixture(scope="module")
def dataflow(start_server: Callable[..., Server]) -> Iterator[Any]:
    service = discovery_client(start_server("sqlite").base)
    yield service
    service.close()  # its HTTP connections, before the server goes


def test_create_get_list_cancel(dataflow: Any, project: str) -> None:
    jobs = dataflow.projects().locations().jobs()
    job = jobs.create(
        projectId=project, location=LOCATION, body={"name": "airflow", "type": "JOB_TYPE_BATCH"}
    ).execute()
    assert job["currentState"] == "JOB_STATE_STOPPED"
    assert jobs.get(projectId=project, location=LOCATION, jobId=job["id"]).execute()["name"] == "airflow"
    active = jobs.list(projectId=project, location=LOCATION, filter="ACTIVE").execute()["jobs"]
    assert [j["id"] for j in active] == [job["id"]]
    body = {"requestedState": "JOB_STATE_CANCELLED"}
    cancelled = jobs.update(projectId=project, location=LOCATION, jobId=job["id"], body=body).execute()
    assert cancelled["currentState"] == "JOB_STATE_CANCELLED"
    assert jobs.list(projectId=project, location=LOCATION, filter="ACTIVE").execute().get("jobs", []) == []
    aggregated = dataflow.projects().jobs().aggregated(projectId=project).execute()["jobs"]
    assert [j["id"] for j in aggregated] == [job["id"]]
    texts = [
        m["messageText"]
        for m in jobs.messages().list(projectId=project, location=LOCATION, jobId=job["id"]).execute()["jobMessages"]
    ]
    assert any("CANCELLED" in t for t in texts)
    assert "metricTime" in jobs.getMetrics(projectId=project, location=LOCATION, jobId=job["id"]).execute()


def test_paging_with_the_librarys_list_next(dataflow: Any, project: str) -> None:
    jobs = dataflow.projects().locations().jobs()
    created = {
        jobs.create(projectId=project, location=LOCATION, body={"name": f"p{n}"}).execute()["id"] for n in range(5)
    }
    seen: list[str] = []
    request = jobs.list(projectId=project, location=LOCATION, pageSize=2)
    while request is not None:
        response = request.execute()
        seen.extend(j["id"] for j in response.get("jobs", []))
        request = jobs.list_next(request, response)
    assert sorted(seen) == sorted(created)


@pytest.mark.parametrize(
    ("call", "status", "reason"),
    [
        ("unknown job", 404, "JOB_NOT_FOUND"),
        ("drain a batch job", 400, "REQUEST_NOT_ALLOWED"),
        ("a service-only state", 400, "INVALID_REQUESTED_STATE"),
    ],
)
def test_errors_carry_status_and_reason(dataflow: Any, project: str, call: str, status: int, reason: str) -> None:
    jobs = dataflow.projects().locations().jobs()
    job = jobs.create(projectId=project, location=LOCATION, body={"name": "e", "type": "JOB_TYPE_BATCH"}).execute()
    request = {
        "unknown job": lambda: jobs.get(projectId=project, location=LOCATION, jobId="nope"),
        "drain a batch job": lambda: jobs.update(
            projectId=project, location=LOCATION, jobId=job["id"], body={"requestedState": "JOB_STATE_DRAINED"}
        ),
        "a service-only state": lambda: jobs.update(
            projectId=project, location=LOCATION, jobId=job["id"], body={"requestedState": "JOB_STATE_FAILED"}
        ),
    }[call]()
    with pytest.raises(HttpError) as caught:
        request.execute()
    assert caught.value.status_code == status
    assert caught.value.error_details[0]["reason"] == reason
    assert (
        jobs.get(projectId=project, location=LOCATION, jobId=job["id"]).execute()["currentState"] == "JOB_STATE_STOPPED"
    )


def test_a_create_with_an_active_jobs_name_answers_that_job(dataflow: Any, project: str) -> None:
    jobs = dataflow.projects().locations().jobs()
    first = jobs.create(projectId=project, location=LOCATION, body={"name": "e", "clientRequestId": "req-1"}).execute()
    other = jobs.create(projectId=project, location=LOCATION, body={"name": "e", "clientRequestId": "req-2"}).execute()
    assert (other["id"], other["clientRequestId"]) == (first["id"], "req-1")  # 200 with the active job, as Dataflow
    assert [j["id"] for j in jobs.list(projectId=project, location=LOCATION).execute()["jobs"]] == [first["id"]]
