"""The official Dataflow client (``google.cloud.dataflow_v1beta3``, REST transport) against ``tidegate server``.

Every call goes through ``JobsV1Beta3Client`` / ``MessagesV1Beta3Client`` with
``transport="rest"`` to a real server process; each test works in a project of its own.
Jobs are created held (``requestedState: JOB_STATE_STOPPED``) where a test needs their
state to stay put, so a scheduler could never move them under the test.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.api_core import exceptions
from google.cloud import dataflow_v1beta3 as dataflow

from .clients import official_rest
from .conftest import LOCATION, Server

pytestmark = pytest.mark.slow

State = dataflow.JobState
Filter = dataflow.ListJobsRequest.Filter
Importance = dataflow.JobMessageImportance
OTHER_LOCATION = "europe-west1"
JOB_ID = re.compile(r"\d{4}-\d{2}-\d{2}_\d{2}_\d{2}_\d{2}-\d+")
SOME_ID = "2026-01-01_00_00_00-1234567890123456789"


@dataclass
class Clients:
    server: Server
    jobs: dataflow.JobsV1Beta3Client
    messages: dataflow.MessagesV1Beta3Client


def _clients(server: Server) -> Clients:
    official = official_rest(server.base)
    return Clients(server=server, jobs=official.jobs, messages=official.messages)


@pytest.fixture(scope="module")
def api(server: Server) -> Clients:
    """Official clients on the module's SQLite-backed server."""
    return _clients(server)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_api(request: pytest.FixtureRequest, start_server: Callable[[str], Server]) -> Clients:
    """Official clients on a SQLite-backed and on a PostgreSQL-backed server."""
    if request.param == "sqlite":
        return _clients(request.getfixturevalue("server"))
    return _clients(start_server(request.param))


# -- helpers -----------------------------------------------------------------------------


def create(
    api: Clients, project: str, name: str, *, held: bool = True, location: str | None = LOCATION, **job: Any
) -> dataflow.Job:
    """A batch job, held in STOPPED unless ``held=False``; ``location=None`` takes the legacy path."""
    body: dict[str, Any] = {"name": name, "type_": dataflow.JobType.JOB_TYPE_BATCH, **job}
    if held:
        body["requested_state"] = State.JOB_STATE_STOPPED
    request: dict[str, Any] = {"project_id": project, "job": body}
    if location is not None:
        request["location"] = location
    return api.jobs.create_job(request=request)


def get(api: Clients, project: str, job_id: str, location: str | None = LOCATION) -> dataflow.Job:
    request = {"project_id": project, "job_id": job_id}
    return api.jobs.get_job(request={**request, "location": location} if location else request)


def request_state(api: Clients, project: str, job_id: str, state: int, location: str | None = LOCATION) -> dataflow.Job:
    request: dict[str, Any] = {"project_id": project, "job_id": job_id, "job": {"requested_state": state}}
    if location:
        request["location"] = location
    return api.jobs.update_job(request=request)


def listed(api: Clients, project: str, list_filter: int = Filter.UNKNOWN, **extra: Any) -> list[str]:
    request = {"project_id": project, "location": LOCATION, "filter": list_filter, **extra}
    return [job.id for job in api.jobs.list_jobs(request=request)]


def messages(api: Clients, project: str, job_id: str, **extra: Any) -> list[dataflow.JobMessage]:
    request = {"project_id": project, "location": LOCATION, "job_id": job_id, **extra}
    return list(api.messages.list_job_messages(request=request))


def status_of(error: exceptions.GoogleAPICallError) -> str:
    """The canonical status in Google's error body (the REST client keeps only the HTTP code)."""
    assert error.response is not None
    status: str = error.response.json()["error"]["status"]
    return status


# -- the main flow, on SQLite and on PostgreSQL --------------------------------------------


def test_main_flow(any_api: Clients, project: str) -> None:
    api = any_api
    before = datetime.now(UTC)
    job = create(api, project, "wordcount", held=False, client_request_id="req-1", labels={"team": "data"})
    assert JOB_ID.fullmatch(job.id), job.id
    assert (job.project_id, job.location, job.name) == (project, LOCATION, "wordcount")
    assert job.type_ == dataflow.JobType.JOB_TYPE_BATCH
    assert job.current_state == State.JOB_STATE_STOPPED
    assert job.requested_state == State.JOB_STATE_RUNNING
    assert before - timedelta(seconds=1) <= job.create_time <= datetime.now(UTC) + timedelta(seconds=1)
    assert job.current_state_time >= job.create_time
    assert dict(job.labels) == {"team": "data"} and job.client_request_id == "req-1"

    got = get(api, project, job.id)
    assert (got.id, got.name, got.create_time, dict(got.labels)) == (job.id, job.name, job.create_time, job.labels)

    # A retried create (same clientRequestId and name) answers the same job and makes no other.
    again = create(api, project, "wordcount", held=False, client_request_id="req-1", labels={"team": "data"})
    assert (again.id, again.create_time) == (job.id, job.create_time)
    assert listed(api, project) == [job.id]

    # Another create with the name of an active job answers that job, as Dataflow does (200, not
    # 409): it carries its own clientRequestId, which tells the caller it is not its create's.
    other = create(api, project, "wordcount", held=False, client_request_id="req-2", labels={"team": "other"})
    assert (other.id, other.create_time, other.client_request_id) == (job.id, job.create_time, "req-1")
    assert dict(other.labels) == {"team": "data"}
    assert listed(api, project) == [job.id]

    # Cancel a STOPPED job: CANCELLED at once; a retried cancel is a no-op that answers the job.
    cancelled = request_state(api, project, job.id, State.JOB_STATE_CANCELLED)
    assert cancelled.current_state == State.JOB_STATE_CANCELLED
    assert cancelled.requested_state == State.JOB_STATE_CANCELLED
    assert cancelled.current_state_time > job.current_state_time
    retried = request_state(api, project, job.id, State.JOB_STATE_CANCELLED)
    assert (retried.current_state, retried.current_state_time) == (
        State.JOB_STATE_CANCELLED,
        cancelled.current_state_time,
    )

    # DONE on a terminal job is refused, naming the state.
    with pytest.raises(exceptions.BadRequest) as refused:
        request_state(api, project, job.id, State.JOB_STATE_DONE)
    assert refused.value.reason == "JOB_TERMINAL"
    assert "JOB_STATE_CANCELLED" in refused.value.message
    assert status_of(refused.value) == "FAILED_PRECONDITION"
    assert get(api, project, job.id).current_state == State.JOB_STATE_CANCELLED

    # The name is free again once the job has ended.
    second = create(api, project, "wordcount", client_request_id="req-3")
    assert second.id != job.id
    assert listed(api, project, Filter.ALL) == [second.id, job.id]

    texts = [m.message_text for m in messages(api, project, job.id)]
    assert any("created" in t for t in texts), texts
    assert any("CANCELLED" in t for t in texts), texts


def test_views(api: Clients, project: str) -> None:
    job = create(api, project, "spec", environment={"temp_storage_prefix": "gs://bucket/tmp"})
    summary = get(api, project, job.id)
    full = api.jobs.get_job(
        request={"project_id": project, "location": LOCATION, "job_id": job.id, "view": dataflow.JobView.JOB_VIEW_ALL}
    )
    assert not summary.environment.temp_storage_prefix
    assert full.environment.temp_storage_prefix == "gs://bucket/tmp"
    assert (full.id, full.current_state, full.create_time) == (summary.id, summary.current_state, summary.create_time)
    listed_full = api.jobs.list_jobs(
        request={"project_id": project, "location": LOCATION, "view": dataflow.JobView.JOB_VIEW_ALL}
    )
    assert [j.environment.temp_storage_prefix for j in listed_full] == ["gs://bucket/tmp"]
    created_full = api.jobs.create_job(
        request={
            "project_id": project,
            "location": LOCATION,
            "view": dataflow.JobView.JOB_VIEW_ALL,
            "job": {
                "name": "spec-2",
                "requested_state": State.JOB_STATE_STOPPED,
                "environment": {"temp_storage_prefix": "gs://b"},
            },
        }
    )
    assert created_full.environment.temp_storage_prefix == "gs://b"


# -- list: filters, orders, paging, names, locations --------------------------------------


def test_list_filters_and_orders(any_api: Clients, project: str) -> None:
    api = any_api
    jobs = [create(api, project, f"job-{n}").id for n in range(5)]
    # Terminated in the order 1, 3, 0 (not the order of creation).
    for index in (1, 3, 0):
        request_state(api, project, jobs[index], State.JOB_STATE_CANCELLED)
    active = [jobs[4], jobs[2]]  # newest first by creation
    terminated = [jobs[0], jobs[3], jobs[1]]  # newest first by termination
    assert listed(api, project, Filter.ACTIVE) == active
    assert listed(api, project, Filter.TERMINATED) == terminated
    assert listed(api, project, Filter.ALL) == active + terminated
    assert listed(api, project) == list(reversed(jobs))  # unset: every job, newest first
    # The same orders page by page, a page boundary inside each part and between them.
    for list_filter, expected in (
        (Filter.ALL, active + terminated),
        (Filter.ACTIVE, active),
        (Filter.TERMINATED, terminated),
        (Filter.UNKNOWN, list(reversed(jobs))),
    ):
        for size in (1, 2, 3):
            assert listed(api, project, list_filter, page_size=size) == expected, (list_filter, size)


def test_paging_across_many_jobs(api: Clients, project: str) -> None:
    jobs = [create(api, project, f"many-{n}").id for n in range(23)]
    ended = jobs[::3]
    for job_id in ended:
        request_state(api, project, job_id, State.JOB_STATE_CANCELLED)
    expected = {
        Filter.UNKNOWN: set(jobs),
        Filter.ALL: set(jobs),
        Filter.ACTIVE: set(jobs) - set(ended),
        Filter.TERMINATED: set(ended),
    }
    for list_filter, wanted in expected.items():
        request = {"project_id": project, "location": LOCATION, "filter": list_filter, "page_size": 4}
        pages = list(api.jobs.list_jobs(request=request).pages)
        seen = [job.id for page in pages for job in page.jobs]
        assert len(seen) == len(set(seen)), f"duplicates with filter {list_filter}"
        assert set(seen) == wanted, f"missing or extra jobs with filter {list_filter}"
        assert all(len(page.jobs) == 4 for page in pages[:-1]) and 0 < len(pages[-1].jobs) <= 4
        assert all(page.next_page_token for page in pages[:-1]) and not pages[-1].next_page_token
        assert seen == listed(api, project, list_filter)  # the same order as one big page


def test_name_filter(api: Clients, project: str) -> None:
    old = create(api, project, "alpha").id
    request_state(api, project, old, State.JOB_STATE_CANCELLED)
    new = create(api, project, "alpha").id
    create(api, project, "beta")
    create(api, project, "alpha-2")
    assert listed(api, project, Filter.ALL, name="alpha") == [new, old]
    assert listed(api, project, Filter.ACTIVE, name="alpha") == [new]
    assert listed(api, project, Filter.TERMINATED, name="alpha") == [old]
    assert listed(api, project, Filter.ALL, name="gamma") == []


def test_aggregated_list_across_locations(api: Clients, project: str) -> None:
    here = create(api, project, "here")
    there = create(api, project, "there", location=OTHER_LOCATION)
    assert listed(api, project) == [here.id]
    elsewhere = api.jobs.list_jobs(request={"project_id": project, "location": OTHER_LOCATION})
    assert [(job.id, job.location) for job in elsewhere] == [(there.id, OTHER_LOCATION)]
    everywhere = api.jobs.aggregated_list_jobs(request={"project_id": project, "filter": Filter.ALL})
    assert [(job.id, job.location) for job in everywhere] == [(there.id, OTHER_LOCATION), (here.id, LOCATION)]
    pages = list(api.jobs.aggregated_list_jobs(request={"project_id": project, "page_size": 1}).pages)
    assert [job.id for page in pages for job in page.jobs] == [there.id, here.id]


def test_legacy_paths_mean_the_default_location(api: Clients, project: str) -> None:
    job = create(api, project, "legacy", location=None)
    assert job.location == LOCATION
    assert get(api, project, job.id, location=None).id == job.id
    assert get(api, project, job.id, location=LOCATION).id == job.id
    legacy_list = api.jobs.list_jobs(request={"project_id": project})
    assert [j.id for j in legacy_list] == [job.id]
    elsewhere = create(api, project, "elsewhere", location=OTHER_LOCATION)
    with pytest.raises(exceptions.NotFound):
        get(api, project, elsewhere.id, location=None)
    legacy_messages = list(api.messages.list_job_messages(request={"project_id": project, "job_id": job.id}))
    assert legacy_messages
    cancelled = request_state(api, project, job.id, State.JOB_STATE_CANCELLED, location=None)
    assert cancelled.current_state == State.JOB_STATE_CANCELLED
    assert get(api, project, job.id).current_state == State.JOB_STATE_CANCELLED


# -- update ------------------------------------------------------------------------------


def test_labels_update(api: Clients, project: str) -> None:
    job = create(api, project, "labelled", labels={"a": "1", "gone": "x"})

    def update_labels(labels: dict[str, str]) -> dataflow.Job:
        return api.jobs.update_job(
            request={
                "project_id": project,
                "location": LOCATION,
                "job_id": job.id,
                "job": {"labels": labels},
                "update_mask": {"paths": ["labels"]},
            }
        )

    updated = update_labels({"a": "2", "b": "y"})
    assert dict(updated.labels) == {"a": "2", "b": "y"}
    assert (updated.current_state, updated.requested_state) == (State.JOB_STATE_STOPPED, State.JOB_STATE_STOPPED)
    assert dict(get(api, project, job.id).labels) == {"a": "2", "b": "y"}
    with pytest.raises(exceptions.BadRequest) as refused:
        update_labels({"Bad Key": "v"})
    assert refused.value.reason == "INVALID_LABELS"
    assert dict(get(api, project, job.id).labels) == {"a": "2", "b": "y"}


def test_done_on_a_stopped_job_then_cancel_is_refused(api: Clients, project: str) -> None:
    job = create(api, project, "finish")
    done = request_state(api, project, job.id, State.JOB_STATE_DONE)
    assert done.current_state == State.JOB_STATE_DONE
    assert request_state(api, project, job.id, State.JOB_STATE_DONE).current_state == State.JOB_STATE_DONE
    with pytest.raises(exceptions.BadRequest) as refused:
        request_state(api, project, job.id, State.JOB_STATE_CANCELLED)
    assert refused.value.reason == "JOB_TERMINAL"
    assert "JOB_STATE_DONE" in refused.value.message


def test_drain_of_a_batch_job_is_refused(api: Clients, project: str) -> None:
    job = create(api, project, "batch")
    for state in (State.JOB_STATE_DRAINED, State.JOB_STATE_DRAINING):
        with pytest.raises(exceptions.BadRequest) as refused:
            request_state(api, project, job.id, state)
        assert status_of(refused.value) == "FAILED_PRECONDITION"
        assert refused.value.reason == "REQUEST_NOT_ALLOWED"
        assert "batch" in refused.value.message
    after = get(api, project, job.id)
    assert (after.current_state, after.requested_state) == (State.JOB_STATE_STOPPED, State.JOB_STATE_STOPPED)


def test_states_of_the_service_cannot_be_requested(api: Clients, project: str) -> None:
    job = create(api, project, "held")
    service_states = [
        State.JOB_STATE_FAILED,
        State.JOB_STATE_PENDING,
        State.JOB_STATE_QUEUED,
        State.JOB_STATE_UPDATED,
        State.JOB_STATE_CANCELLING,
        State.JOB_STATE_RESOURCE_CLEANING_UP,
        State.JOB_STATE_PAUSING,
        State.JOB_STATE_PAUSED,
    ]
    for state in service_states:
        with pytest.raises(exceptions.BadRequest) as refused:
            request_state(api, project, job.id, state)
        assert status_of(refused.value) == "INVALID_ARGUMENT", state
        assert refused.value.reason == "INVALID_REQUESTED_STATE", state
        assert State(state).name in refused.value.message
    after = get(api, project, job.id)
    assert (after.current_state, after.requested_state, after.current_state_time) == (
        State.JOB_STATE_STOPPED,
        State.JOB_STATE_STOPPED,
        job.current_state_time,
    )


def test_held_job_stays_stopped_until_started(api: Clients, project: str) -> None:
    job = create(api, project, "on-hold")
    assert (job.current_state, job.requested_state) == (State.JOB_STATE_STOPPED, State.JOB_STATE_STOPPED)
    assert get(api, project, job.id).current_state == State.JOB_STATE_STOPPED
    started = request_state(api, project, job.id, State.JOB_STATE_RUNNING)
    assert started.requested_state == State.JOB_STATE_RUNNING
    # Without an engine it waits; a scheduler would move it on along STOPPED -> QUEUED/PENDING.
    assert started.current_state in (State.JOB_STATE_STOPPED, State.JOB_STATE_QUEUED, State.JOB_STATE_PENDING)
    assert request_state(api, project, job.id, State.JOB_STATE_RUNNING).requested_state == State.JOB_STATE_RUNNING
    assert request_state(api, project, job.id, State.JOB_STATE_CANCELLED).requested_state == (State.JOB_STATE_CANCELLED)


def test_unknown_job_is_not_found(api: Clients, project: str) -> None:
    with pytest.raises(exceptions.NotFound) as missing:
        get(api, project, SOME_ID)
    assert missing.value.reason == "JOB_NOT_FOUND"
    assert SOME_ID in missing.value.message
    with pytest.raises(exceptions.NotFound):
        request_state(api, project, SOME_ID, State.JOB_STATE_CANCELLED)
    with pytest.raises(exceptions.NotFound):
        messages(api, project, SOME_ID)
    job = create(api, project, "mine")
    with pytest.raises(exceptions.NotFound):
        get(api, project + "-other", job.id)  # another project's job is not there
    with pytest.raises(exceptions.NotFound):
        get(api, project, job.id, location=OTHER_LOCATION)


# -- messages ----------------------------------------------------------------------------


def test_messages_with_importance_and_paging(api: Clients, project: str) -> None:
    job = create(api, project, "talkative")
    request_state(api, project, job.id, State.JOB_STATE_RUNNING)
    request_state(api, project, job.id, State.JOB_STATE_CANCELLED)
    every = messages(api, project, job.id)
    assert len(every) >= 3
    assert all(m.id and m.time and m.message_text and m.message_importance for m in every)
    assert [m.time for m in every] == sorted(m.time for m in every)  # oldest first
    texts = [m.message_text for m in every]
    assert any("created" in t for t in texts) and any("JOB_STATE_CANCELLED" in t for t in texts), texts

    basic = messages(api, project, job.id, minimum_importance=Importance.JOB_MESSAGE_BASIC)
    assert {m.message_importance for m in basic} <= {
        Importance.JOB_MESSAGE_BASIC,
        Importance.JOB_MESSAGE_WARNING,
        Importance.JOB_MESSAGE_ERROR,
    }
    assert any("JOB_STATE_CANCELLED" in m.message_text for m in basic)
    assert messages(api, project, job.id, minimum_importance=Importance.JOB_MESSAGE_ERROR) == []

    pages = list(
        api.messages.list_job_messages(
            request={"project_id": project, "location": LOCATION, "job_id": job.id, "page_size": 1}
        ).pages
    )
    assert len(pages) == len(every)
    assert [m.id for page in pages for m in page.job_messages] == [m.id for m in every]
