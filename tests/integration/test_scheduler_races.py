"""Requests that arrive while the scheduler acts on a job: each is honoured or refused, never lost.

The scripted engine runs a user's request inside an engine call (``engine.during``): the
scheduler has read the job and is waiting on its engine when the request lands, which
is where a real request races it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.engines import ScriptedEngine
from tidegate.engines.base import EngineState
from tidegate.errors import FailedPrecondition
from tidegate.lifecycle import JobState, JobType, is_legal
from tidegate.model import NewJob
from tidegate.scheduler.admission import Capacity
from tidegate.scheduler.loop import Scheduler, SchedulerSettings
from tidegate.service.jobs import JobService

S = JobState


@pytest.fixture
def engine() -> ScriptedEngine:
    return ScriptedEngine()


@pytest.fixture
def scheduler(service: JobService, engine: ScriptedEngine, tmp_path: Path) -> Scheduler:
    settings = SchedulerSettings(work_dir=tmp_path / "runs", capacity=Capacity(max_jobs=4))
    return Scheduler(service, {"beam": engine}, settings)


def request(service: JobService, job_id: str, state: JobState) -> None:
    service.update_job("proj", None, job_id, requested_state=state)


def history(service: JobService, job_id: str) -> list[JobState]:
    changes = service.store.history(job_id)
    for change in changes[1:]:
        assert change.source is not None and is_legal(change.source, change.target, change.actor), change
    return [change.target for change in changes]


def settle(scheduler: Scheduler, ticks: int = 6) -> None:
    for _ in range(ticks):
        scheduler.tick()


def running_job(service: JobService, scheduler: Scheduler, engine: ScriptedEngine, new: NewJob) -> str:
    job = service.create_job(new)
    scheduler.tick()
    engine.run_of(job.id).state = EngineState.RUNNING
    scheduler.tick()
    assert service.store.get_job(job.id).current_state is S.JOB_STATE_RUNNING
    return job.id


def test_a_cancel_after_an_accepted_done_is_refused_naming_done_and_the_job_ends_done(
    service: JobService, scheduler: Scheduler, engine: ScriptedEngine, new_job: Callable[..., NewJob]
) -> None:
    job_id = running_job(service, scheduler, engine, new_job())
    request(service, job_id, S.JOB_STATE_DONE)
    with pytest.raises(FailedPrecondition) as refused:
        request(service, job_id, S.JOB_STATE_CANCELLED)
    assert "JOB_STATE_DONE" in refused.value.message
    assert refused.value.metadata["carriedRequest"] == "JOB_STATE_DONE"
    settle(scheduler)
    assert history(service, job_id)[-1] is S.JOB_STATE_DONE


def test_a_cancel_that_lands_while_the_engine_stops_a_done_job_is_refused_and_the_job_ends_done(
    service: JobService, scheduler: Scheduler, engine: ScriptedEngine, new_job: Callable[..., NewJob]
) -> None:
    job_id = running_job(service, scheduler, engine, new_job())
    request(service, job_id, S.JOB_STATE_DONE)
    refusals: list[Exception] = []

    def cancel_meanwhile(call: str) -> None:
        try:
            request(service, job_id, S.JOB_STATE_CANCELLED)
        except FailedPrecondition as error:
            refusals.append(error)

    engine.during.append(cancel_meanwhile)
    settle(scheduler)
    assert len(refusals) == 1
    assert history(service, job_id)[-1] is S.JOB_STATE_DONE
    assert service.store.get_job(job_id).requested_state is S.JOB_STATE_DONE


def test_a_cancel_that_lands_while_the_engine_reports_the_start_ends_cancelled(
    service: JobService, scheduler: Scheduler, engine: ScriptedEngine, new_job: Callable[..., NewJob]
) -> None:
    """The scheduler read PENDING and asks the engine, which says RUNNING; the cancel came in between."""
    job = service.create_job(new_job())
    scheduler.tick()
    engine.run_of(job.id).state = EngineState.RUNNING
    engine.during.append(lambda call: request(service, job.id, S.JOB_STATE_CANCELLED))
    settle(scheduler)
    assert history(service, job.id) == [
        S.JOB_STATE_STOPPED,
        S.JOB_STATE_PENDING,
        S.JOB_STATE_RUNNING,
        S.JOB_STATE_CANCELLING,
        S.JOB_STATE_CANCELLED,
    ]
    assert "cancel" in engine.run_of(job.id).calls


def test_a_cancel_that_lands_while_a_starting_run_fails_ends_cancelled(
    service: JobService, scheduler: Scheduler, engine: ScriptedEngine, new_job: Callable[..., NewJob]
) -> None:
    job = service.create_job(new_job())
    scheduler.tick()
    run = engine.run_of(job.id)
    run.state, run.error = EngineState.FAILED, "the workers could not start"
    engine.during.append(lambda call: request(service, job.id, S.JOB_STATE_CANCELLED))
    settle(scheduler)
    assert history(service, job.id)[-1] is S.JOB_STATE_CANCELLED


def test_a_cancel_that_lands_while_a_running_job_succeeds_is_honoured(
    service: JobService, scheduler: Scheduler, engine: ScriptedEngine, new_job: Callable[..., NewJob]
) -> None:
    job_id = running_job(service, scheduler, engine, new_job())
    engine.run_of(job_id).state = EngineState.SUCCEEDED
    engine.during.append(lambda call: request(service, job_id, S.JOB_STATE_CANCELLED))
    settle(scheduler)
    assert history(service, job_id)[-2:] == [S.JOB_STATE_CANCELLING, S.JOB_STATE_CANCELLED]


def test_a_done_after_a_cancel_accepted_in_pending_is_refused_all_the_way_to_cancelled(
    service: JobService, scheduler: Scheduler, engine: ScriptedEngine, new_job: Callable[..., NewJob]
) -> None:
    job = service.create_job(new_job())
    scheduler.tick()
    request(service, job.id, S.JOB_STATE_CANCELLED)
    tries, refusals = 0, 0

    def done(call: str = "") -> None:
        nonlocal tries, refusals
        tries += 1
        try:
            request(service, job.id, S.JOB_STATE_DONE)
        except FailedPrecondition:
            refusals += 1

    for _ in range(6):  # a DONE before every tick, and inside its first engine call when it makes one
        done()
        engine.during[:] = [done]
        scheduler.tick()
    assert tries >= 7
    assert refusals == tries
    assert history(service, job.id)[-1] is S.JOB_STATE_CANCELLED
    assert service.store.get_job(job.id).requested_state is S.JOB_STATE_CANCELLED


def test_a_drain_that_lands_while_the_engine_reports_the_start_is_honoured(
    service: JobService, scheduler: Scheduler, engine: ScriptedEngine, new_job: Callable[..., NewJob]
) -> None:
    job_id = running_job(service, scheduler, engine, new_job(type=JobType.JOB_TYPE_STREAMING))
    engine.during.append(lambda call: request(service, job_id, S.JOB_STATE_DRAINED))
    settle(scheduler)
    assert history(service, job_id)[-2:] == [S.JOB_STATE_DRAINING, S.JOB_STATE_DRAINED]


def test_a_cancel_of_a_draining_job_is_the_one_escalation(
    service: JobService, scheduler: Scheduler, engine: ScriptedEngine, new_job: Callable[..., NewJob]
) -> None:
    job_id = running_job(service, scheduler, engine, new_job(type=JobType.JOB_TYPE_STREAMING))
    engine.run_of(job_id).drain_to = EngineState.RUNNING  # the drain takes its time
    request(service, job_id, S.JOB_STATE_DRAINED)
    scheduler.tick()
    with pytest.raises(FailedPrecondition):
        request(service, job_id, S.JOB_STATE_DONE)
    request(service, job_id, S.JOB_STATE_CANCELLED)
    with pytest.raises(FailedPrecondition) as refused:
        request(service, job_id, S.JOB_STATE_DRAINED)
    assert "JOB_STATE_CANCELLED" in refused.value.message
    settle(scheduler)
    assert history(service, job_id)[-2:] == [S.JOB_STATE_DRAINING, S.JOB_STATE_CANCELLED]
