"""A change decides first on the job's row as this process last saw it committed (``store.seen``).

On real SQLite and PostgreSQL: the hot writes' statements counted, and every way that row
can be out of date (another server's change, a request it no longer allows, a batch
rolled back) decided again on the row itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tidegate.errors import FailedPrecondition, NotFound
from tidegate.lifecycle import JobState, JobType
from tidegate.model import NewJob
from tidegate.service.jobs import JobService
from tidegate.store import Store

S = JobState


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The first word of every statement the store runs from now on (BEGIN and COMMIT aside)."""
    seen: list[str] = []
    execute = Store._execute

    def counted(self: Store, sql: str, params: Any = ()) -> Any:
        seen.append(sql.split()[0])
        return execute(self, sql, params)

    monkeypatch.setattr(Store, "_execute", counted)
    return seen


@pytest.fixture
def other(service: JobService) -> Iterator[JobService]:
    """A second server's service on the same database."""
    store = Store(service.store.url)
    yield JobService(store)
    store.close()


def _records(service: JobService) -> int:
    # On SQLite a change's history and message rows are statements of their own; on PostgreSQL
    # they ride in the write's data-modifying WITH.
    return 2 if service.store.dialect == "sqlite" else 0


def test_a_create_is_one_statement_and_a_cancel_one(
    service: JobService, new_job: Callable[..., NewJob], statements: list[str]
) -> None:
    job = service.create_job(new_job(name="a", requested_state=S.JOB_STATE_STOPPED))
    assert len(statements) == 1 + _records(service)
    statements.clear()
    cancelled = service.update_job("proj", None, job.id, requested_state=S.JOB_STATE_CANCELLED)
    assert statements[0] in ("UPDATE", "WITH") and len(statements) == 1 + _records(service)
    assert cancelled == service.store.get_job(job.id)
    assert cancelled.current_state is S.JOB_STATE_CANCELLED and cancelled.version == 2
    history = service.history("proj", None, job.id)
    assert [(c.source, c.target) for c in history] == [
        (None, S.JOB_STATE_STOPPED),
        (S.JOB_STATE_STOPPED, S.JOB_STATE_CANCELLED),
    ]


def test_a_change_another_server_made_first_is_decided_again_on_the_row(
    service: JobService, other: JobService, new_job: Callable[..., NewJob], statements: list[str]
) -> None:
    job = service.create_job(new_job(requested_state=S.JOB_STATE_STOPPED))
    other.update_job("proj", None, job.id, labels={"by": "other"}, update_mask=["labels"])
    statements.clear()
    cancelled = service.update_job("proj", None, job.id, requested_state=S.JOB_STATE_CANCELLED)
    # The write on the out-of-date row matched nothing; the row read under its lock decided.
    assert statements[:2] == ["UPDATE" if _records(service) else "WITH", "SELECT"]
    assert cancelled.labels == {"by": "other"} and cancelled.current_state is S.JOB_STATE_CANCELLED
    assert cancelled.version == 3
    assert [c.target for c in service.history("proj", None, job.id)] == [S.JOB_STATE_STOPPED, S.JOB_STATE_CANCELLED]


def test_a_request_the_row_no_longer_allows_is_refused_as_the_row_says(
    service: JobService, other: JobService, new_job: Callable[..., NewJob]
) -> None:
    job = service.create_job(new_job(type=JobType.JOB_TYPE_STREAMING))
    for target in (S.JOB_STATE_PENDING, S.JOB_STATE_RUNNING):
        assert service.advance(job.id, target, "test") is not None
    other.update_job("proj", None, job.id, requested_state=S.JOB_STATE_CANCELLED)  # it now carries a cancel
    # This server last saw it RUNNING and carrying RUNNING, where a drain is allowed: the row refuses it.
    with pytest.raises(FailedPrecondition) as caught:
        service.update_job("proj", None, job.id, requested_state=S.JOB_STATE_DRAINED)
    assert caught.value.reason == "REQUEST_NOT_ALLOWED"
    assert caught.value.metadata["carriedRequest"] == "JOB_STATE_CANCELLED"
    assert service.store.get_job(job.id).requested_state is S.JOB_STATE_CANCELLED
    # And an edge the scheduler decided while the job carried RUNNING is not taken.
    assert service.advance(job.id, S.JOB_STATE_DONE, "test", carrying=S.JOB_STATE_RUNNING) is None
    assert service.store.get_job(job.id).current_state is S.JOB_STATE_CANCELLING  # the cancel's step


def test_a_change_that_rolled_back_is_not_remembered(
    service: JobService, other: JobService, new_job: Callable[..., NewJob]
) -> None:
    job = service.create_job(new_job(type=JobType.JOB_TYPE_STREAMING))
    for target in (S.JOB_STATE_PENDING, S.JOB_STATE_RUNNING):
        assert service.advance(job.id, target, "test") is not None
    running = service.store.get_job(job.id)
    with pytest.raises(RuntimeError), service.store._transaction():
        assert service.update_job("proj", None, job.id, requested_state=S.JOB_STATE_CANCELLED).current_state is (
            S.JOB_STATE_CANCELLING
        )
        raise RuntimeError("the transaction fails after the change")
    assert service.store.get_job(job.id) == running
    # The other server's change takes the version the rolled-back one had. Had that row (CANCELLING)
    # been kept, the scheduler's CANCELLING -> CANCELLED below would pass its compare-and-set and end
    # a job that runs, with a history that says it was cancelling.
    other.update_job("proj", None, job.id, labels={"by": "other"}, update_mask=["labels"])
    assert service.advance(job.id, S.JOB_STATE_CANCELLED, "test", expect=frozenset({S.JOB_STATE_CANCELLING})) is None
    stored = service.store.get_job(job.id)
    assert stored.current_state is S.JOB_STATE_RUNNING and stored.labels == {"by": "other"}


def test_a_batch_that_ran_again_call_by_call_keeps_each_write_once(
    service: JobService, new_job: Callable[..., NewJob]
) -> None:
    job = service.create_job(new_job(requested_state=S.JOB_STATE_STOPPED))
    outcomes = service.store.run_batch(
        [
            lambda: service.update_job("proj", None, job.id, labels={"kept": "yes"}, update_mask=["labels"]),
            lambda: service.update_job("proj", None, "no-such-job", requested_state=S.JOB_STATE_CANCELLED),
        ]
    )
    assert [ok for ok, _ in outcomes] == [True, False]
    stored = service.store.get_job(job.id)
    assert stored.labels == {"kept": "yes"} and stored.version == 2
    cancelled = service.update_job("proj", None, job.id, requested_state=S.JOB_STATE_CANCELLED)
    assert cancelled.version == 3 and cancelled.labels == {"kept": "yes"}


def test_a_read_of_a_job_seen_asks_only_its_version_and_sees_another_servers_change(
    service: JobService, other: JobService, new_job: Callable[..., NewJob], monkeypatch: pytest.MonkeyPatch
) -> None:
    job = service.create_job(new_job(requested_state=S.JOB_STATE_STOPPED))
    asked: list[str] = []
    execute = Store._execute

    def recorded(self: Store, sql: str, params: Any = ()) -> Any:
        asked.append(sql)
        return execute(self, sql, params)

    monkeypatch.setattr(Store, "_execute", recorded)
    assert service.get_job("proj", None, job.id) == job
    assert asked == ["SELECT version FROM jobs WHERE id = %s"]
    other.update_job("proj", None, job.id, labels={"by": "other"}, update_mask=["labels"])
    asked.clear()
    assert service.get_job("proj", None, job.id).labels == {"by": "other"}
    assert len(asked) == 2  # the version differs: the row itself
    with pytest.raises(NotFound):
        service.get_job("elsewhere", None, job.id)
