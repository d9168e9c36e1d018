"""Group commit on real SQLite and PostgreSQL: calls that share a transaction, each still all or nothing."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import pytest

from tidegate.api import offload
from tidegate.errors import FailedPrecondition, InvalidArgument, NotFound
from tidegate.lifecycle import JobState, JobType
from tidegate.model import MessageImportance, NewJob
from tidegate.service.jobs import JobService
from tidegate.store import Store
from tidegate.store.committer import Committer

S = JobState


def messages(store: Store, job_id: str) -> list[str]:
    page = store.list_messages(job_id, MessageImportance.JOB_MESSAGE_IMPORTANCE_UNKNOWN, None, None, 1000)
    return [m.text for m in page.items]


def test_a_failing_call_costs_the_others_nothing_and_keeps_none_of_its_own(
    service: JobService, store: Store, new_job: Callable[..., NewJob]
) -> None:
    a, b = service.create_job(new_job()), service.create_job(new_job())
    committed: list[str] = []

    def half_then_fail() -> None:
        store.add_message(b.id, MessageImportance.JOB_MESSAGE_BASIC, "half of a failing call", service.clock())
        store.after_commit(lambda: committed.append("failing"))
        raise FailedPrecondition("this call fails after writing", reason="TEST")

    def cancel_a() -> object:
        store.after_commit(lambda: committed.append("cancel"))
        return service.update_job(a.project_id, a.location, a.id, requested_state=S.JOB_STATE_CANCELLED)

    def caught_inner_failure() -> str:
        """A call that catches the failure of one of its own transactions: still all or nothing."""
        try:
            service.update_job(b.project_id, b.location, b.id, requested_state=S.JOB_STATE_DRAINED)
        except Exception as error:  # a batch job cannot be drained
            return type(error).__name__
        return "none"

    outcomes = store.run_batch([cancel_a, half_then_fail, caught_inner_failure, lambda: store.get_job(a.id).id])
    assert [ok for ok, _ in outcomes] == [True, False, True, True]
    assert isinstance(outcomes[1][1], FailedPrecondition)
    assert outcomes[2][1] in {"InvalidArgument", "FailedPrecondition"}
    assert store.get_job(a.id).current_state is S.JOB_STATE_CANCELLED
    assert "half of a failing call" not in messages(store, b.id)
    assert committed == ["cancel"]  # the failing call's callback never ran: its transaction never committed


def test_calls_in_one_batch_see_each_other_as_if_run_one_after_the_other(
    service: JobService, store: Store, new_job: Callable[..., NewJob]
) -> None:
    job = service.create_job(new_job())

    def cancel() -> JobState:
        return service.update_job(
            job.project_id, job.location, job.id, requested_state=S.JOB_STATE_CANCELLED
        ).current_state

    def start() -> JobState:
        return service.update_job(
            job.project_id, job.location, job.id, requested_state=S.JOB_STATE_RUNNING
        ).current_state

    outcomes = store.run_batch([cancel, cancel, start])
    assert outcomes[:2] == [(True, S.JOB_STATE_CANCELLED)] * 2  # the second sees the first's edge: a repeat
    ok, error = outcomes[2]
    assert not ok and isinstance(error, FailedPrecondition) and error.reason == "JOB_TERMINAL"
    history = [c.target for c in store.history(job.id)]
    assert history == [S.JOB_STATE_STOPPED, S.JOB_STATE_CANCELLED]


@pytest.mark.parametrize("threads", [1, 4])
def test_racing_requests_through_the_committer_take_one_edge_each(
    service: JobService, store: Store, new_job: Callable[..., NewJob], threads: int
) -> None:
    """Many clients at once: creates and cancels batched together, and of racing cancels of one job, one wins."""
    if store.dialect == "sqlite" and threads > 1:
        pytest.skip("SQLite's committer has one thread")
    committer = Committer(store, threads)
    try:
        jobs = [f.result() for f in [committer.submit(lambda: service.create_job(new_job())) for _ in range(40)]]
        start = threading.Barrier(8)
        futures: list[Future[object]] = []
        lock = threading.Lock()

        def client() -> None:
            start.wait()
            for job in jobs:
                future = committer.submit(
                    lambda job=job: service.update_job(
                        job.project_id, job.location, job.id, requested_state=S.JOB_STATE_CANCELLED
                    )
                )
                with lock:
                    futures.append(future)

        clients = [threading.Thread(target=client) for _ in range(8)]
        for c in clients:
            c.start()
        for c in clients:
            c.join()
        assert [f.exception() for f in futures] == [None] * 8 * len(jobs)  # repeats of a cancel answer the job
        for job in jobs:  # and one cancel of each took the edge
            assert [c.target for c in store.history(job.id)] == [S.JOB_STATE_STOPPED, S.JOB_STATE_CANCELLED]
    finally:
        committer.close()


def test_an_error_reaches_the_caller_and_a_closed_committer_refuses(service: JobService, store: Store) -> None:
    committer = Committer(store, 1)
    with pytest.raises(NotFound):
        committer.submit(lambda: store.get_job("no-such-job")).result()
    committer.close()
    with pytest.raises(RuntimeError, match="closed"):
        committer.submit(lambda: None)


def test_sqlite_writes_asked_for_in_one_turn_of_the_loop_share_a_batch(
    make_store: Callable[[str], Store], new_job: Callable[..., NewJob], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite the API's writes are batched on the event loop (``tidegate.api.offload``): one failing costs none."""
    store = make_store("sqlite")
    service = JobService(store)
    jobs = [service.create_job(new_job()) for _ in range(20)]
    sizes: list[int] = []
    run_batch = store.run_batch
    monkeypatch.setattr(store, "run_batch", lambda calls: sizes.append(len(calls)) or run_batch(calls))

    def cancel(job_id: str) -> Callable[[], JobState]:
        return lambda: (
            service.update_job("proj", "us-central1", job_id, requested_state=S.JOB_STATE_CANCELLED).current_state
        )

    async def run() -> list[object]:
        writes = [offload.write(service, cancel(job.id)) for job in jobs]
        writes.insert(7, offload.write(service, cancel("no-such-job")))
        return await asyncio.gather(*writes, return_exceptions=True)

    outcomes = asyncio.run(run())
    assert isinstance(outcomes.pop(7), NotFound)
    assert outcomes == [S.JOB_STATE_CANCELLED] * len(jobs)
    assert sizes == [len(jobs) + 1]  # asked for in one turn: one batch (the failing call then runs apart)
    assert all(store.get_job(job.id).current_state is S.JOB_STATE_CANCELLED for job in jobs)


def test_the_wal_is_checkpointed_by_a_thread_of_its_own(make_store: Callable[[str], Store]) -> None:
    store = make_store("sqlite")
    store.checkpoint_in_background(every=0.05)
    service = JobService(store)
    for i in range(50):
        service.create_job(NewJob("proj", "us-central1", f"job-{i}", JobType.JOB_TYPE_BATCH, b""))
    conn = store._conn
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0  # no commit checkpoints itself
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        _, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()  # what is left to copy
        if frames > 0 and frames == copied:
            break
        time.sleep(0.05)
    assert frames > 0 and frames == copied
    store.close()  # stops the thread
    assert store._checkpointer is None


def test_a_create_with_bad_input_is_refused_before_it_reaches_a_batch(
    service: JobService, new_job: Callable[..., NewJob], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused create never joins a batch (where its failure would send the others back to run one by one)."""
    batched: list[object] = []
    run_batch = service.store.run_batch

    def recorded(calls: list[Callable[[], object]]) -> list[tuple[bool, object]]:
        outcomes = run_batch(calls)
        batched.extend(ok for ok, _ in outcomes)
        return outcomes

    monkeypatch.setattr(service.store, "run_batch", recorded)
    monkeypatch.setattr(service.calls, "run_batch", recorded)

    async def create(new: NewJob) -> object:
        return await offload.submit(service, new)

    with pytest.raises(InvalidArgument) as caught:
        asyncio.run(create(new_job(name="Not A Name")))
    assert caught.value.reason == "INVALID_JOB_NAME"
    with pytest.raises(InvalidArgument):
        asyncio.run(create(new_job(labels={"Bad": "label"})))
    assert batched == [] and service.store.count_jobs() == 0
    asyncio.run(create(new_job()))
    assert batched == [True] and service.store.count_jobs() == 1


def test_sqlite_runs_a_batch_whose_commit_fails_call_by_call(
    make_store: Callable[[str], Store], new_job: Callable[..., NewJob]
) -> None:
    """A COMMIT that fails (here a deferred foreign key) keeps nothing; each call then runs alone and answers alone."""
    store = make_store("sqlite")
    service = JobService(store)
    jobs = [service.create_job(new_job(requested_state=S.JOB_STATE_STOPPED)) for _ in range(3)]

    def cancel(job_id: str) -> Callable[[], JobState]:
        return lambda: service.update_job("proj", None, job_id, requested_state=S.JOB_STATE_CANCELLED).current_state

    def orphan() -> None:  # checked only at the commit
        store._execute("PRAGMA defer_foreign_keys=ON")
        store._execute("INSERT INTO job_messages (job_id, time, importance, text) VALUES ('nope', 0, 1, 'lost')")

    async def run() -> list[object]:
        writes = [offload.write(service, cancel(job.id)) for job in jobs]
        writes.insert(1, offload.write(service, orphan))
        return await asyncio.gather(*writes, return_exceptions=True)

    outcomes = asyncio.run(run())
    assert isinstance(outcomes.pop(1), sqlite3.IntegrityError)
    assert outcomes == [S.JOB_STATE_CANCELLED] * 3
    assert store._execute("SELECT count(*) FROM job_messages WHERE job_id = 'nope'").fetchone()[0] == 0
    assert all(store.get_job(job.id).current_state is S.JOB_STATE_CANCELLED for job in jobs)
    assert service.create_job(new_job()).current_state is S.JOB_STATE_STOPPED  # the writer is free again
