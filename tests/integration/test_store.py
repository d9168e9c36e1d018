"""The store on real SQLite and PostgreSQL: atomic changes, idempotent creates, keyset pages."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Clock
from tidegate.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from tidegate.lifecycle import Actor, JobState, JobType, PlanKind, is_legal, plan_request
from tidegate.model import Job, ListFilter, LogLine, MessageImportance, NewJob
from tidegate.service.jobs import JobService
from tidegate.store import CreateOutcome, Store

S = JobState


def run_to(service: JobService, job_id: str, *states: JobState) -> None:
    for target in states:
        assert service.advance(job_id, target, "test") is not None


@pytest.mark.parametrize("dialect", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_fresh_schema_equals_migrated_schema(make_store: Callable[..., Store], dialect: str) -> None:
    fresh = make_store(dialect)
    migrated = make_store(dialect, migrate=False)
    migrated.apply_migrations_only()
    assert fresh.describe_schema() == migrated.describe_schema()
    assert migrated.migrate() == fresh.migrate()  # nothing left to apply


def test_migrate_twice_is_harmless(store: Store) -> None:
    assert store.migrate() == store.migrate()


def test_create_and_get(service: JobService, new_job: Callable[..., NewJob]) -> None:
    job = service.create_job(new_job(name="wordcount", labels={"team": "data"}, spec=b"\x01\x02"))
    assert job.current_state is S.JOB_STATE_STOPPED
    assert job.requested_state is S.JOB_STATE_RUNNING
    assert service.get_job("proj", "us-central1", job.id) == job
    assert job.labels == {"team": "data"} and job.spec == b"\x01\x02"
    history = service.history("proj", None, job.id)
    assert [(c.source, c.target) for c in history] == [(None, S.JOB_STATE_STOPPED)]


def test_get_in_another_project_or_location_is_not_found(service: JobService, new_job: Callable[..., NewJob]) -> None:
    job = service.create_job(new_job())
    with pytest.raises(NotFound):
        service.get_job("other", "us-central1", job.id)
    with pytest.raises(NotFound):
        service.get_job("proj", "europe-west1", job.id)


def test_an_update_in_another_project_or_location_is_not_found_and_changes_nothing(
    service: JobService, new_job: Callable[..., NewJob]
) -> None:
    job = service.create_job(new_job(requested_state=S.JOB_STATE_STOPPED))
    for project, location in (("other", "us-central1"), ("proj", "europe-west1"), ("other", None)):
        with pytest.raises(NotFound) as caught:
            service.update_job(project, location, job.id, requested_state=S.JOB_STATE_CANCELLED)
        assert caught.value.message.startswith(f"No job with id {job.id} in project {project}")
        with pytest.raises(NotFound):
            service.update_job(project, location, job.id, labels={"a": "b"}, update_mask=["labels"])
    with pytest.raises(NotFound):
        service.update_job("proj", None, "no-such-job", requested_state=S.JOB_STATE_CANCELLED)
    assert service.store.get_job(job.id) == job
    assert len(service.history("proj", None, job.id)) == 1


def test_create_is_idempotent_per_request_id(service: JobService, new_job: Callable[..., NewJob]) -> None:
    first = service.create_job(new_job(name="a", client_request_id="req-1"))
    again = service.create_job(new_job(name="a", client_request_id="req-1"))
    assert again == first
    assert service.submit_job(new_job(name="a", client_request_id="req-1")) == (first, CreateOutcome.REPEATED)
    assert service.store.count_jobs() == 1


@pytest.mark.parametrize("request_id", ["req-2", ""])
@pytest.mark.parametrize("held", [False, True])
def test_a_create_with_an_active_jobs_name_answers_that_job_and_creates_nothing(
    service: JobService, new_job: Callable[..., NewJob], request_id: str, held: bool
) -> None:
    asked = S.JOB_STATE_STOPPED if held else S.JOB_STATE_RUNNING
    first = service.create_job(new_job(name="a", client_request_id="req-1", requested_state=asked))
    if not held:
        run_to(service, first.id, S.JOB_STATE_PENDING, S.JOB_STATE_RUNNING)
    active = service.store.get_job(first.id)
    messages = len(service.list_messages("proj", None, first.id).items)
    job, outcome = service.submit_job(new_job(name="a", client_request_id=request_id, labels={"other": "x"}))
    assert (job, outcome) == (active, CreateOutcome.NAME_TAKEN)
    assert job.client_request_id == "req-1"  # its own: the caller tells it from its own create by this
    assert service.create_job(new_job(name="a", client_request_id=request_id)) == active
    assert service.store.count_jobs() == 1
    assert service.store.get_job(first.id) == active
    assert len(service.list_messages("proj", None, first.id).items) == messages
    # The create paths whose callers cannot tell (template launches, Beam's Job API) refuse it.
    with pytest.raises(AlreadyExists) as caught:
        service.create_new_job(new_job(name="a", client_request_id=request_id))
    assert caught.value.reason == "JOB_NAME_ALREADY_EXISTS"
    assert first.id in caught.value.message and caught.value.metadata["jobId"] == first.id
    assert service.create_new_job(new_job(name="a", client_request_id="req-1")) == active  # its own: answered
    assert service.store.count_jobs() == 1


def test_a_create_with_an_active_jobs_name_is_checked_for_bad_input_first(
    service: JobService, new_job: Callable[..., NewJob]
) -> None:
    service.create_job(new_job(name="a"))
    with pytest.raises(InvalidArgument) as caught:
        service.create_job(new_job(name="a", labels={"Bad": "x"}))
    assert caught.value.reason == "INVALID_LABELS"
    with pytest.raises(InvalidArgument):
        service.create_job(new_job(name="a", requested_state=S.JOB_STATE_DONE))


def test_a_name_is_free_again_once_its_job_ended(service: JobService, new_job: Callable[..., NewJob]) -> None:
    first = service.create_job(new_job(name="a"))
    service.update_job("proj", None, first.id, requested_state=S.JOB_STATE_CANCELLED)
    second = service.create_job(new_job(name="a"))
    assert second.id != first.id
    other_location = service.create_job(new_job(name="a", location="europe-west1"))
    assert other_location.id != second.id


def test_an_active_replacement_holds_its_name_against_other_creates(
    service: JobService, new_job: Callable[..., NewJob], clock: Clock
) -> None:
    # An update's replacement shares the name of the job it replaces, so the unique index leaves it
    # out: the create's own check is what keeps a third job from taking the name.
    old = service.create_job(new_job(name="a"))
    run_to(service, old.id, S.JOB_STATE_PENDING, S.JOB_STATE_RUNNING)
    replacement, outcome = service.store.create_job(new_job(name="a", replace_job_id=old.id), "r-1", clock())
    assert outcome is CreateOutcome.CREATED
    assert service.submit_job(new_job(name="a")) == (service.store.get_job(old.id), CreateOutcome.NAME_TAKEN)
    run_to(service, old.id, S.JOB_STATE_UPDATED)
    assert service.submit_job(new_job(name="a")) == (replacement, CreateOutcome.NAME_TAKEN)
    assert service.store.count_jobs() == 2


def test_racing_creates_of_one_name_make_one_job(service: JobService, new_job: Callable[..., NewJob]) -> None:
    outcomes: list[tuple[Job, CreateOutcome]] = []
    barrier = threading.Barrier(4)

    def create(n: int) -> None:
        barrier.wait()
        outcomes.append(service.submit_job(new_job(name="race", client_request_id=f"r{n}")))

    threads = [threading.Thread(target=create, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outcomes) == 4
    [created] = [job for job, outcome in outcomes if outcome is CreateOutcome.CREATED]
    assert [outcome for _, outcome in outcomes].count(CreateOutcome.NAME_TAKEN) == 3
    assert {job.id for job, _ in outcomes} == {created.id}  # every caller is answered the one job
    assert service.store.count_jobs() == 1


def test_an_illegal_edge_writes_nothing(service: JobService, new_job: Callable[..., NewJob]) -> None:
    job = service.create_job(new_job())
    with pytest.raises(FailedPrecondition):
        service.advance(job.id, S.JOB_STATE_DRAINED, "nope")
    assert service.store.get_job(job.id) == job
    assert len(service.history("proj", None, job.id)) == 1
    assert len(service.list_messages("proj", None, job.id).items) == 1


def test_a_change_writes_history_and_message_together(
    service: JobService, new_job: Callable[..., NewJob], clock: Clock
) -> None:
    job = service.create_job(new_job(type=JobType.JOB_TYPE_STREAMING))
    run_to(service, job.id, S.JOB_STATE_PENDING, S.JOB_STATE_RUNNING)
    drained = service.update_job("proj", None, job.id, requested_state=S.JOB_STATE_DRAINING)
    assert drained.current_state is S.JOB_STATE_DRAINING
    assert drained.requested_state is S.JOB_STATE_DRAINED
    assert drained.current_state_time > job.current_state_time
    history = service.history("proj", None, job.id)
    assert [c.target for c in history] == [
        S.JOB_STATE_STOPPED,
        S.JOB_STATE_PENDING,
        S.JOB_STATE_RUNNING,
        S.JOB_STATE_DRAINING,
    ]
    assert history[-1].actor is Actor.USER
    texts = [m.text for m in service.list_messages("proj", None, job.id).items]
    assert any("DRAINING" in t for t in texts)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (S.JOB_STATE_CANCELLED, S.JOB_STATE_DRAINED),
        (S.JOB_STATE_DONE, S.JOB_STATE_CANCELLED),
        (S.JOB_STATE_DRAINED, S.JOB_STATE_DONE),
    ],
)
def test_racing_requests_are_serialised(
    service: JobService, new_job: Callable[..., NewJob], first: JobState, second: JobState
) -> None:
    for attempt in range(5):
        job = service.create_job(new_job(type=JobType.JOB_TYPE_STREAMING, name=f"race-{attempt}"))
        run_to(service, job.id, S.JOB_STATE_PENDING, S.JOB_STATE_RUNNING)
        barrier = threading.Barrier(2)
        results: dict[JobState, Any] = {}

        def request(
            wanted: JobState,
            job_id: str = job.id,
            barrier: threading.Barrier = barrier,
            results: dict[JobState, Any] = results,
        ) -> None:
            barrier.wait()
            try:
                results[wanted] = service.update_job("proj", None, job_id, requested_state=wanted)
            except FailedPrecondition as error:
                results[wanted] = error

        threads = [threading.Thread(target=request, args=(s,)) for s in (first, second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        final = service.store.get_job(job.id)
        wins = {s for s, r in results.items() if not isinstance(r, Exception)}
        # The outcome is that of the two requests applied one after the other, in some order.
        assert (final.current_state, final.requested_state, wins) in [
            serially(order) for order in ((first, second), (second, first))
        ]
        history = service.history("proj", None, job.id)
        for change in history[1:]:
            assert change.source is not None and is_legal(change.source, change.target, change.actor)


def serially(order: tuple[JobState, JobState]) -> tuple[JobState, JobState, set[JobState]]:
    current, carried, wins = S.JOB_STATE_RUNNING, S.JOB_STATE_RUNNING, set()
    for wanted in order:
        plan = plan_request(current, carried, wanted, JobType.JOB_TYPE_STREAMING)
        if plan.kind in (PlanKind.ACCEPT, PlanKind.NOOP):
            wins.add(wanted)
            carried = plan.requested
            current = plan.step[0] if plan.step else current
    return current, carried, wins


def make_jobs(
    service: JobService, new_job: Callable[..., NewJob], clock: Clock, count: int, **fields: Any
) -> list[str]:
    ids = []
    for _ in range(count):
        clock.advance(1)
        ids.append(service.create_job(new_job(**fields)).id)
    return ids


def all_pages(service: JobService, list_filter: ListFilter, page_size: int, **kwargs: Any) -> list[str]:
    ids: list[str] = []
    token = ""
    while True:
        page = service.list_jobs("proj", kwargs.pop("location", None), list_filter, page_size, token, **kwargs)
        ids.extend(j.id for j in page.items)
        assert len(page.items) <= page_size
        if not page.next_page_token:
            return ids
        token = page.next_page_token


def test_list_orders_and_pages(service: JobService, new_job: Callable[..., NewJob], clock: Clock) -> None:
    ids = make_jobs(service, new_job, clock, 7)
    # End jobs 1, 5, 3 in that order: TERMINATED is newest termination first.
    for index in (1, 5, 3):
        clock.advance(1)
        service.update_job("proj", None, ids[index], requested_state=S.JOB_STATE_CANCELLED)
    active = [ids[i] for i in (6, 4, 2, 0)]
    terminated = [ids[i] for i in (3, 5, 1)]
    for size in (1, 2, 3, 4, 100):
        assert all_pages(service, ListFilter.ACTIVE, size) == active
        assert all_pages(service, ListFilter.TERMINATED, size) == terminated
        assert all_pages(service, ListFilter.ALL, size) == active + terminated
        assert all_pages(service, ListFilter.UNKNOWN, size) == list(reversed(ids))


def test_list_by_name_location_and_project(service: JobService, new_job: Callable[..., NewJob], clock: Clock) -> None:
    here = make_jobs(service, new_job, clock, 2)
    there = make_jobs(service, new_job, clock, 2, location="europe-west1")
    make_jobs(service, new_job, clock, 2, project_id="someone-else")
    assert set(all_pages(service, ListFilter.ALL, 10)) == set(here)
    assert set(all_pages(service, ListFilter.ALL, 10, location="europe-west1")) == set(there)
    aggregated = service.list_jobs("proj", None, ListFilter.ALL, 1, aggregated=True)
    assert aggregated.next_page_token
    assert len(service.list_jobs("proj", None, ListFilter.ALL, 10, aggregated=True).items) == 4
    named = service.store.get_job(here[0]).name
    assert [j.id for j in service.list_jobs("proj", None, ListFilter.ALL, 10, name=named).items] == [here[0]]


@pytest.mark.parametrize(
    "token",
    # garbage; ["z", 1]; ["a", "x%"]; null; ["t", 1]; ["a", 10**30]; ["u", 1] (another listing's)
    [
        "garbage!",
        "WyJ6IiwgMV0",
        "WyJhIiwgInglIl0",
        "bnVsbA",
        "WyJ0IiwgMV0",
        "WyJhIiwgMTAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMF0",
        "WyJ1IiwgMV0",
    ],
)
def test_bad_page_tokens_are_invalid_arguments(service: JobService, token: str) -> None:
    with pytest.raises(InvalidArgument):
        service.list_jobs("proj", None, ListFilter.ALL, 10, token)


def test_messages_filter_and_page(service: JobService, new_job: Callable[..., NewJob], clock: Clock) -> None:
    job = service.create_job(new_job())
    for n, importance in enumerate([MessageImportance.JOB_MESSAGE_DEBUG, MessageImportance.JOB_MESSAGE_WARNING] * 5):
        service.add_message(job.id, importance, f"m{n}")
    every = []
    token = ""
    while True:
        page = service.list_messages("proj", None, job.id, page_size=3, page_token=token)
        every.extend(page.items)
        if not page.next_page_token:
            break
        token = page.next_page_token
    assert [m.text for m in every][1:] == [f"m{n}" for n in range(10)]
    warnings = service.list_messages("proj", None, job.id, MessageImportance.JOB_MESSAGE_WARNING).items
    assert [m.text for m in warnings] == [f"m{n}" for n in range(1, 10, 2)]
    basic_and_up = service.list_messages("proj", None, job.id, MessageImportance.JOB_MESSAGE_BASIC).items
    assert len(basic_and_up) == 6  # "created" is BASIC


def test_labels_update(service: JobService, new_job: Callable[..., NewJob]) -> None:
    job = service.create_job(new_job(labels={"a": "1"}))
    updated = service.update_job("proj", None, job.id, labels={"b": "2"}, update_mask=["labels"])
    assert updated.labels == {"b": "2"} and updated.current_state is S.JOB_STATE_STOPPED
    with pytest.raises(InvalidArgument):
        service.update_job("proj", None, job.id, labels={"Bad Key": "x"}, update_mask=["labels"])
    with pytest.raises(InvalidArgument):
        service.update_job("proj", None, job.id, update_mask=["name"])
    assert service.store.get_job(job.id) == updated


def test_a_nul_character_is_invalid_argument_on_either_store_and_writes_nothing(
    service: JobService, new_job: Callable[..., NewJob]
) -> None:
    """PostgreSQL's text fields cannot keep one (it was a 500 there); SQLite refuses it alike."""
    job = service.create_job(new_job())
    before = service.store.count_jobs()
    with pytest.raises(InvalidArgument, match="NUL"):
        service.get_job("proj", None, "job\x00id")
    with pytest.raises(InvalidArgument, match="NUL"):
        service.create_job(new_job(client_request_id="retry\x00"))
    with pytest.raises(InvalidArgument, match="NUL"):
        service.update_job("proj", None, job.id + "\x00", requested_state=JobState.JOB_STATE_CANCELLED)
    assert service.store.count_jobs() == before
    assert service.store.get_job(job.id).current_state is JobState.JOB_STATE_STOPPED


def test_a_nul_in_what_a_job_printed_is_kept_as_a_replacement_character(
    service: JobService, new_job: Callable[..., NewJob]
) -> None:
    job = service.create_job(new_job())
    service.add_message(job.id, MessageImportance.JOB_MESSAGE_ERROR, "stderr ends with: \x00\x01binary")
    texts = [m.text for m in service.list_messages("proj", None, job.id).items]
    assert "stderr ends with: \ufffd\x01binary" in texts


def test_logs_are_kept_by_the_runs_holder_alone_and_read_page_by_page(
    service: JobService, store: Store, new_job: Callable[..., NewJob], clock: Clock
) -> None:
    job = service.create_job(new_job())
    assert store.claim_run(job.id, "beam", "worker-a", clock() + timedelta(minutes=1))
    lines = [LogLine("stdout", f"line {i}") for i in range(5)]
    assert store.append_logs(job.id, "worker-a", lines, '{"stdout": 35}')
    assert not store.append_logs(job.id, "worker-b", [LogLine("stdout", "fenced")], '{"stdout": 99}')
    assert store.get_run(job.id).log_cursor == '{"stdout": 35}'  # type: ignore[union-attr]
    entries, offset, complete = service.logs(job.project_id, job.location, job.id, "", 3)
    assert [e.text for e in entries] == ["line 0", "line 1", "line 2"] and not complete
    entries, offset, complete = service.logs(job.project_id, job.location, job.id, offset, 3)
    assert [e.text for e in entries] == ["line 3", "line 4"] and not complete  # the job has not ended
    assert service.logs(job.project_id, job.location, job.id, offset, 3) == ([], offset, False)
    with pytest.raises(InvalidArgument):
        service.logs(job.project_id, job.location, job.id, "not-an-offset")
    with pytest.raises(NotFound):
        service.logs("another-project", job.location, job.id)


def test_logs_past_the_limit_end_with_one_line_saying_so(
    service: JobService, store: Store, new_job: Callable[..., NewJob], clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tidegate.store.logs.MAX_LOG_LINES", 4)
    job = service.create_job(new_job())
    assert store.claim_run(job.id, "beam", "worker-a", clock() + timedelta(minutes=1))
    assert store.append_logs(job.id, "worker-a", [LogLine("stdout", f"{i}") for i in range(3)], "a")
    assert store.append_logs(job.id, "worker-a", [LogLine("stderr", "x\x00y"), LogLine("stderr", "lost")], "b")
    assert store.append_logs(job.id, "worker-a", [LogLine("stderr", "also lost")], "c")
    texts = [e.text for e in store.read_logs(job.id, 0, 100)]
    assert texts == ["0", "1", "2", "[more than 4 lines: the rest is not kept]"]
    assert store.get_run(job.id).log_cursor == "c"  # type: ignore[union-attr]


def test_jobs_are_counted_by_state_and_engine(
    service: JobService, new_job: Callable[..., NewJob], clock: Clock
) -> None:
    """One grouped COUNT (/metrics reads it at each scrape): a job's engine is its run's, none before it has one."""
    store = service.store
    assert store.count_jobs_by_state() == []
    waiting = [service.create_job(new_job()) for _ in range(3)]
    service.update_job("proj", "us-central1", waiting[0].id, requested_state=JobState.JOB_STATE_CANCELLED)
    for job, engine in ((waiting[1], "beam"), (service.create_job(new_job()), "flink")):
        assert store.claim_run(job.id, engine, "worker-a", clock() + timedelta(minutes=1))
        assert service.advance(job.id, JobState.JOB_STATE_PENDING) is not None
    counts = sorted((state.name, engine, count) for state, engine, count in store.count_jobs_by_state())
    assert counts == [
        ("JOB_STATE_CANCELLED", "", 1),
        ("JOB_STATE_PENDING", "beam", 1),
        ("JOB_STATE_PENDING", "flink", 1),
        ("JOB_STATE_STOPPED", "", 1),
    ]


def test_the_connections_of_ended_threads_are_closed(store: Store) -> None:
    """A thread pool ends idle threads and starts new ones: each thread's connection goes with it.

    They were kept open for good: a server whose blocking calls ran in short-lived threads
    ran PostgreSQL out of connections ("too many clients already").
    """
    for _ in range(30):
        thread = threading.Thread(target=store.count_jobs)
        thread.start()
        thread.join()
    store.count_jobs()
    assert len(store._all) <= 2  # this thread's, and at most the last ended one's (closed at the next opening)


def test_an_sqlite_too_old_for_returning_is_refused_with_what_to_do(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import sqlite3

    from tidegate.store.db import Database

    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 31, 1))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.31.1")
    with pytest.raises(ValueError, match=r"needs SQLite 3\.35\.0 or newer; this Python has 3\.31\.1"):
        Database(f"sqlite:///{tmp_path / 'old.db'}")
    assert not (tmp_path / "old.db").exists()
