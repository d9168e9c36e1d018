"""Streaming jobs through the scheduler with a scripted engine: programs, snapshots, updates."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.cloud import dataflow_v1beta3 as dataflow

from tests.conftest import Clock
from tests.engines import PreparingEngine, ScriptedEngine
from tidegate.api.grpc_server import GrpcApi
from tidegate.api.rest.app import create_app
from tidegate.engines.base import EngineState
from tidegate.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from tidegate.jobspec import JobPb
from tidegate.lifecycle import JobState, JobType
from tidegate.model import MessageImportance, NewJob, SnapshotState
from tidegate.scheduler.admission import Capacity
from tidegate.scheduler.loop import Scheduler, SchedulerSettings
from tidegate.service.jobs import JobService
from tidegate.store import CreateOutcome

S = JobState
STREAMING = JobType.JOB_TYPE_STREAMING


@pytest.fixture
def engine() -> ScriptedEngine:
    return ScriptedEngine()


@pytest.fixture
def scheduler(service: JobService, engine: ScriptedEngine, tmp_path: Path) -> Scheduler:
    settings = SchedulerSettings(work_dir=tmp_path / "runs", capacity=Capacity(max_jobs=10))
    return Scheduler(service, {"beam": engine}, settings)


def spec(mapping: dict[str, str] | None = None, **tidegate: Any) -> bytes:
    pb = JobPb()
    pb.environment.sdk_pipeline_options.update({"options": {"tidegate": tidegate}})
    for old, new in (mapping or {}).items():
        pb.transform_name_mapping[old] = new
    return bytes(pb.SerializeToString())


def state(service: JobService, job_id: str) -> JobState:
    return service.store.get_job(job_id).current_state


def texts(service: JobService, job_id: str, importance: MessageImportance = MessageImportance.JOB_MESSAGE_DEBUG) -> str:
    return "\n".join(m.text for m in service.list_messages("proj", None, job_id, importance).items)


def tick_until(scheduler: Scheduler, done: Callable[[], bool]) -> None:
    """Tick until ``done()``: an update's stop with a savepoint runs in a thread, so it takes ticks to show."""
    deadline = time.monotonic() + 30
    scheduler.tick()
    while not done():
        assert time.monotonic() < deadline, "the scheduler did not get there in 30 s"
        time.sleep(0.005)
        scheduler.tick()


def running(
    service: JobService, scheduler: Scheduler, engine: ScriptedEngine, new_job: Callable[..., NewJob], **fields: Any
) -> str:
    job = service.create_job(new_job(type=STREAMING, **fields))
    scheduler.tick()
    engine.run_of(job.id).state = EngineState.RUNNING
    scheduler.tick()
    assert state(service, job.id) is S.JOB_STATE_RUNNING
    return job.id


# -- programs ----------------------------------------------------------------------------


def test_a_program_is_kept_at_create_and_written_into_the_run(
    service: JobService,
    scheduler: Scheduler,
    engine: ScriptedEngine,
    new_job: Callable[..., NewJob],
    tmp_path: Path,
) -> None:
    program = tmp_path / "job.py"
    program.write_text("print('v1')\n")
    job = service.create_job(new_job(type=STREAMING, spec=spec(program=str(program), args=["--out", "x"])))
    program.write_text("print('changed after create')\n")
    scheduler.tick()
    request = engine.run_of(job.id).request
    assert Path(request.program).read_text() == "print('v1')\n"
    assert Path(request.program).parent == tmp_path / "runs" / job.id
    assert list(request.args) == ["--out", "x"] and request.streaming


@pytest.mark.parametrize(("name", "exists"), [("job.jar", True), ("missing.py", False)])
def test_a_program_that_cannot_run_is_refused_at_create(
    service: JobService, new_job: Callable[..., NewJob], tmp_path: Path, name: str, exists: bool
) -> None:
    if exists:
        (tmp_path / name).write_text("")
    with pytest.raises(InvalidArgument) as caught:
        service.create_job(new_job(spec=spec(program=str(tmp_path / name))))
    assert caught.value.reason == "INVALID_PROGRAM"
    assert service.store.count_jobs() == 0


# -- snapshots ---------------------------------------------------------------------------


def test_a_snapshot_and_a_job_created_from_it(
    service: JobService, scheduler: Scheduler, engine: ScriptedEngine, new_job: Callable[..., NewJob]
) -> None:
    source = running(service, scheduler, engine, new_job)
    snapshot = service.snapshot_job("proj", None, source, ttl=timedelta(hours=1), description="nightly")
    assert snapshot.state is SnapshotState.READY and snapshot.source_job_id == source
    assert snapshot.disk_size_bytes > 0 and snapshot.ttl == timedelta(hours=1)
    assert service.get_snapshot("proj", None, snapshot.id) == snapshot
    assert service.list_snapshots("proj", None, source) == [snapshot]
    assert "Snapshot" in texts(service, source)
    restored = service.create_job(new_job(type=STREAMING, created_from_snapshot_id=snapshot.id))
    scheduler.tick()
    assert engine.run_of(restored.id).request.restore_from == snapshot.path
    assert service.store.get_job(restored.id).created_from_snapshot_id == snapshot.id


def test_snapshots_only_of_running_streaming_jobs(
    service: JobService, scheduler: Scheduler, engine: ScriptedEngine, new_job: Callable[..., NewJob]
) -> None:
    batch = service.create_job(new_job()).id
    with pytest.raises(FailedPrecondition, match="batch"):
        service.snapshot_job("proj", None, batch)
    pending = service.create_job(new_job(type=STREAMING)).id
    scheduler.tick()
    with pytest.raises(FailedPrecondition) as caught:
        service.snapshot_job("proj", None, pending)
    assert caught.value.reason == "SNAPSHOT_NOT_RUNNING"
    with pytest.raises(InvalidArgument):
        service.create_job(new_job(created_from_snapshot_id="no-such-snapshot"))
    assert service.list_snapshots("proj", None) == []


def test_a_snapshot_the_engine_cannot_take_is_failed(
    service: JobService, scheduler: Scheduler, engine: ScriptedEngine, new_job: Callable[..., NewJob]
) -> None:
    source = running(service, scheduler, engine, new_job)
    engine.savepoints_fail = True
    snapshot = service.snapshot_job("proj", None, source)
    assert snapshot.state is SnapshotState.FAILED
    assert "could not be written" in texts(service, source, MessageImportance.JOB_MESSAGE_WARNING)
    with pytest.raises(FailedPrecondition):
        service.create_job(new_job(created_from_snapshot_id=snapshot.id))


def test_expired_and_deleted_snapshots_are_gone_with_their_files(
    service: JobService,
    scheduler: Scheduler,
    engine: ScriptedEngine,
    new_job: Callable[..., NewJob],
    clock: Clock,
    tmp_path: Path,
) -> None:
    source = running(service, scheduler, engine, new_job)
    short = service.snapshot_job("proj", None, source, ttl=timedelta(minutes=5))
    kept = service.snapshot_job("proj", None, source)  # the default: 7 days
    assert (tmp_path / "snapshots" / short.id).is_dir()
    clock.advance(600)
    scheduler.tick()
    assert [s.id for s in service.list_snapshots("proj", None)] == [kept.id]
    assert not (tmp_path / "snapshots" / short.id).exists()
    service.delete_snapshot("proj", None, kept.id)
    assert service.list_snapshots("proj", None) == []
    assert not (tmp_path / "snapshots" / kept.id).exists()


# -- updates -----------------------------------------------------------------------------


def test_an_update_replaces_the_job_and_carries_its_state(
    service: JobService, scheduler: Scheduler, engine: ScriptedEngine, new_job: Callable[..., NewJob]
) -> None:
    old = running(service, scheduler, engine, new_job, name="counts", spec=spec(uids=["count", "total"]))
    new = service.create_job(
        new_job(
            name="counts",
            type=STREAMING,
            replace_job_id=old,
            spec=spec({"total": "sum"}, uids=["count", "sum"]),
        )
    )
    # The new job is admitted; the old one stops with a savepoint; then the new one is launched from it.
    tick_until(scheduler, lambda: new.id in engine.runs)
    assert engine.run_of(old).calls == ["stop_with_savepoint"]
    restore = engine.run_of(new.id).request.restore_from
    assert restore.endswith("_metadata")
    scheduler.tick()
    assert state(service, old) is S.JOB_STATE_RUNNING  # stopped for the update, not failed
    engine.run_of(new.id).state = EngineState.RUNNING
    scheduler.tick()
    assert state(service, new.id) is S.JOB_STATE_RUNNING
    replaced = service.store.get_job(old)
    assert replaced.current_state is S.JOB_STATE_UPDATED and replaced.replaced_by_job_id == new.id
    assert service.store.get_job(new.id).replace_job_id == old
    scheduler.tick()
    assert service.store.get_run(old).worker == ""  # type: ignore[union-attr]


def test_an_incompatible_update_is_refused_and_the_old_job_runs_on(
    service: JobService, scheduler: Scheduler, engine: ScriptedEngine, new_job: Callable[..., NewJob]
) -> None:
    old = running(service, scheduler, engine, new_job, name="counts", spec=spec(uids=["count", "total"]))
    with pytest.raises(FailedPrecondition) as caught:
        service.create_job(new_job(name="counts", type=STREAMING, replace_job_id=old, spec=spec(uids=["count"])))
    assert caught.value.reason == "UPDATE_INCOMPATIBLE" and "total" in caught.value.message
    with pytest.raises(FailedPrecondition):  # a batch replacement
        service.create_job(new_job(name="counts", replace_job_id=old, spec=spec(uids=["count", "total"])))
    scheduler.tick()
    assert state(service, old) is S.JOB_STATE_RUNNING and engine.run_of(old).calls == []
    assert service.store.count_jobs() == 1


def test_an_update_that_fails_to_start_resumes_the_old_job(
    service: JobService, scheduler: Scheduler, engine: ScriptedEngine, new_job: Callable[..., NewJob]
) -> None:
    old = running(service, scheduler, engine, new_job, name="counts")
    new = service.create_job(new_job(name="counts", type=STREAMING, replace_job_id=old))
    tick_until(scheduler, lambda: new.id in engine.runs)
    location = engine.run_of(new.id).request.restore_from
    engine.run_of(new.id).state = EngineState.FAILED
    engine.run_of(new.id).error = "StateMigrationException: incompatible state"
    scheduler.tick()
    assert state(service, new.id) is S.JOB_STATE_FAILED
    assert state(service, old) is S.JOB_STATE_RUNNING
    assert engine.launched[-1].job_id == old and engine.launched[-1].restore_from == location
    assert "resumed from its savepoint" in texts(service, old, MessageImportance.JOB_MESSAGE_WARNING)
    assert "resumed from its savepoint" in texts(service, new.id, MessageImportance.JOB_MESSAGE_ERROR)
    engine.run_of(old).state = EngineState.RUNNING
    scheduler.tick()
    assert state(service, old) is S.JOB_STATE_RUNNING
    # The resumed job lives on: it can be drained as usual.
    service.update_job("proj", None, old, requested_state=S.JOB_STATE_DRAINED)
    scheduler.tick()
    assert state(service, old) is S.JOB_STATE_DRAINED


def test_an_update_whose_savepoint_fails_leaves_the_old_job_running(
    service: JobService, scheduler: Scheduler, engine: ScriptedEngine, new_job: Callable[..., NewJob]
) -> None:
    old = running(service, scheduler, engine, new_job, name="counts")
    engine.savepoints_fail = True
    new = service.create_job(new_job(name="counts", type=STREAMING, replace_job_id=old))
    tick_until(scheduler, lambda: state(service, new.id).terminal)
    assert state(service, new.id) is S.JOB_STATE_FAILED
    assert "could not be stopped with a savepoint" in texts(service, new.id, MessageImportance.JOB_MESSAGE_ERROR)
    scheduler.tick()
    assert state(service, old) is S.JOB_STATE_RUNNING
    assert service.store.get_run(old).actions == frozenset()  # type: ignore[union-attr]
    engine.savepoints_fail = False
    again = service.create_job(new_job(name="counts", type=STREAMING, replace_job_id=old))
    tick_until(scheduler, lambda: again.id in engine.runs)
    engine.run_of(again.id).state = EngineState.RUNNING
    scheduler.tick()
    assert service.store.get_job(old).replaced_by_job_id == again.id


def test_other_jobs_advance_while_an_update_waits_for_its_savepoint(
    service: JobService, scheduler: Scheduler, engine: ScriptedEngine, new_job: Callable[..., NewJob]
) -> None:
    old = running(service, scheduler, engine, new_job, name="counts")
    other = running(service, scheduler, engine, new_job, name="other")
    engine.savepoint_gate = threading.Event()  # the old job's savepoint stays under way until it is set
    new = service.create_job(new_job(name="counts", type=STREAMING, replace_job_id=old))
    scheduler.tick()  # the update starts: the old job is being stopped with a savepoint
    service.update_job("proj", None, other, requested_state=S.JOB_STATE_CANCELLED)
    scheduler.tick()
    assert state(service, other) is S.JOB_STATE_CANCELLED
    assert engine.run_of(other).calls == ["cancel"]
    # The update is still under way, untouched: the old job RUNNING, the new one not launched.
    assert state(service, old) is S.JOB_STATE_RUNNING and state(service, new.id) is S.JOB_STATE_PENDING
    assert new.id not in engine.runs
    engine.savepoint_gate.set()
    tick_until(scheduler, lambda: new.id in engine.runs)
    assert engine.run_of(new.id).request.restore_from.endswith("_metadata")
    engine.run_of(new.id).state = EngineState.RUNNING
    tick_until(scheduler, lambda: state(service, old) is S.JOB_STATE_UPDATED)
    assert state(service, new.id) is S.JOB_STATE_RUNNING


def test_a_cancel_during_the_savepoint_of_an_update_resumes_the_old_job(
    service: JobService, scheduler: Scheduler, engine: ScriptedEngine, new_job: Callable[..., NewJob]
) -> None:
    old = running(service, scheduler, engine, new_job, name="counts")
    engine.savepoint_gate = threading.Event()
    new = service.create_job(new_job(name="counts", type=STREAMING, replace_job_id=old))
    scheduler.tick()
    service.update_job("proj", None, new.id, requested_state=S.JOB_STATE_CANCELLED)
    scheduler.tick()
    assert state(service, new.id) is S.JOB_STATE_PENDING  # the stop under way ends first
    engine.savepoint_gate.set()
    tick_until(scheduler, lambda: state(service, new.id).terminal)
    assert state(service, new.id) is S.JOB_STATE_CANCELLED and new.id not in engine.runs
    assert state(service, old) is S.JOB_STATE_RUNNING
    assert engine.launched[-1].job_id == old and engine.launched[-1].restore_from.endswith("_metadata")
    assert "resumed from its savepoint" in texts(service, old, MessageImportance.JOB_MESSAGE_WARNING)


@pytest.fixture
def preparing(service: JobService, tmp_path: Path) -> tuple[PreparingEngine, Scheduler]:
    engine = PreparingEngine()
    settings = SchedulerSettings(work_dir=tmp_path / "runs", capacity=Capacity(max_jobs=10))
    return engine, Scheduler(service, {"beam": engine}, settings)


def test_an_update_has_its_engine_prepare_the_new_job_while_the_old_one_stops(
    service: JobService, preparing: tuple[PreparingEngine, Scheduler], new_job: Callable[..., NewJob]
) -> None:
    engine, scheduler = preparing
    old = running(service, scheduler, engine, new_job, name="counts")
    engine.savepoint_gate = threading.Event()
    new = service.create_job(new_job(name="counts", type=STREAMING, replace_job_id=old))
    scheduler.tick()
    # Asked as the stop begins, with the request the launch will bring, but for the state.
    assert [r.job_id for r in engine.prepared] == [new.id] and engine.prepared[0].restore_from == ""
    assert new.id not in engine.runs
    engine.savepoint_gate.set()
    tick_until(scheduler, lambda: new.id in engine.runs)
    launched = engine.run_of(new.id).request
    assert launched.restore_from.endswith("_metadata")
    assert replace(launched, restore_from="") == engine.prepared[0]
    assert len(engine.prepared) == 1 and engine.forgotten == []


def test_what_was_prepared_is_forgotten_when_the_stop_fails_or_the_new_job_is_cancelled(
    service: JobService, preparing: tuple[PreparingEngine, Scheduler], new_job: Callable[..., NewJob]
) -> None:
    engine, scheduler = preparing
    old = running(service, scheduler, engine, new_job, name="counts")
    engine.savepoints_fail = True
    failed = service.create_job(new_job(name="counts", type=STREAMING, replace_job_id=old))
    tick_until(scheduler, lambda: state(service, failed.id).terminal)
    assert set(engine.forgotten) == {failed.id} and failed.id not in engine.runs  # told once or more: it is idempotent

    engine.savepoints_fail, engine.savepoint_gate = False, threading.Event()
    cancelled = service.create_job(new_job(name="counts", type=STREAMING, replace_job_id=old))
    scheduler.tick()
    service.update_job("proj", None, cancelled.id, requested_state=S.JOB_STATE_CANCELLED)
    engine.savepoint_gate.set()
    tick_until(scheduler, lambda: state(service, cancelled.id).terminal)
    assert state(service, cancelled.id) is S.JOB_STATE_CANCELLED and cancelled.id not in engine.runs
    assert set(engine.forgotten) == {failed.id, cancelled.id}
    assert [r.job_id for r in engine.prepared] == [failed.id, cancelled.id]


def test_an_update_of_an_updated_job_answers_the_job_that_replaced_it(
    service: JobService, scheduler: Scheduler, engine: ScriptedEngine, new_job: Callable[..., NewJob]
) -> None:
    old = running(service, scheduler, engine, new_job, name="counts", spec=spec(uids=["count"]))

    def update(request_id: str, **fields: Any) -> NewJob:
        values: dict[str, Any] = {"spec": spec(uids=["count"]), "type": STREAMING, **fields}
        return new_job(name="counts", replace_job_id=old, client_request_id=request_id, **values)

    new = service.create_job(update("update-1"))
    # A retry of the update while it is under way answers its own job (not UPDATE_UNDER_WAY).
    assert service.submit_job(update("update-1")) == (service.store.get_job(new.id), CreateOutcome.REPEATED)
    tick_until(scheduler, lambda: new.id in engine.runs)
    engine.run_of(new.id).state = EngineState.RUNNING
    tick_until(scheduler, lambda: state(service, old) is S.JOB_STATE_UPDATED)
    replacement = service.store.get_job(new.id)
    assert replacement.current_state is S.JOB_STATE_RUNNING and service.store.count_jobs() == 2
    launched = list(engine.launched)

    # Another update of the old job: the job that replaced it, with its own clientRequestId; nothing is
    # created, whatever the new job would have been (it is not checked against the old one: it is not made).
    assert service.submit_job(update("update-2")) == (replacement, CreateOutcome.ALREADY_UPDATED)
    assert service.create_job(update("update-3", spec=spec(uids=["other"]))) == replacement
    assert service.create_job(update("", type=JobType.JOB_TYPE_BATCH)).client_request_id == "update-1"
    assert service.submit_job(update("update-1")) == (replacement, CreateOutcome.REPEATED)  # the first one's retry
    with pytest.raises(AlreadyExists) as caught:  # for the paths whose callers cannot tell
        service.create_new_job(update("update-4"))
    assert caught.value.reason == "JOB_ALREADY_UPDATED" and new.id in caught.value.message

    # The same over gRPC and REST: OK / 200 with the replacement.
    request = dataflow.CreateJobRequest.pb()(project_id="proj", location="us-central1")
    request.job.CopyFrom(JobPb(name="counts", type_=int(STREAMING), replace_job_id=old, client_request_id="grpc"))
    answer = asyncio.run(GrpcApi(service).create_job(request))
    assert (answer.id, answer.client_request_id) == (new.id, "update-1")
    body = {"name": "counts", "type": "JOB_TYPE_STREAMING", "clientRequestId": "rest"}
    response = rest_post(service, f"/v1b3/projects/proj/locations/us-central1/jobs?replaceJobId={old}", body)
    assert response.status_code == 200, response.text
    assert (response.json()["id"], response.json()["clientRequestId"]) == (new.id, "update-1")

    assert service.store.count_jobs() == 2 and engine.launched == launched
    assert state(service, old) is S.JOB_STATE_UPDATED and service.store.get_job(new.id) == replacement


def test_an_update_of_a_job_that_ended_otherwise_is_still_refused(
    service: JobService, scheduler: Scheduler, engine: ScriptedEngine, new_job: Callable[..., NewJob]
) -> None:
    old = running(service, scheduler, engine, new_job, name="counts")
    service.update_job("proj", None, old, requested_state=S.JOB_STATE_CANCELLED)
    tick_until(scheduler, lambda: state(service, old).terminal)
    with pytest.raises(FailedPrecondition) as caught:
        service.create_job(new_job(name="counts", type=STREAMING, replace_job_id=old))
    assert caught.value.reason == "UPDATE_NOT_RUNNING"
    assert service.store.count_jobs() == 1


def rest_post(service: JobService, path: str, body: dict[str, Any]) -> httpx.Response:
    """A POST to the REST app, in-process."""

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(service))
        async with httpx.AsyncClient(transport=transport, base_url="http://tidegate") as client:
            return await client.post(path, json=body)

    return asyncio.run(call())


def test_requests_on_a_job_being_updated_are_refused_naming_its_replacement(
    service: JobService, scheduler: Scheduler, engine: ScriptedEngine, new_job: Callable[..., NewJob]
) -> None:
    """The replacement decides how the old job ends (UPDATED, or RUNNING on when the update fails)."""
    old = running(service, scheduler, engine, new_job, name="counts")
    engine.savepoint_gate = threading.Event()
    new = service.create_job(new_job(name="counts", type=STREAMING, replace_job_id=old))
    scheduler.tick()
    for wanted in (S.JOB_STATE_CANCELLED, S.JOB_STATE_DRAINED, S.JOB_STATE_DONE):
        with pytest.raises(FailedPrecondition) as refused:
            service.update_job("proj", None, old, requested_state=wanted)
        assert refused.value.reason == "UPDATE_UNDER_WAY" and new.id in refused.value.message
    engine.savepoint_gate.set()
    tick_until(scheduler, lambda: new.id in engine.runs)
    engine.run_of(new.id).state = EngineState.RUNNING
    tick_until(scheduler, lambda: state(service, old).terminal)
    assert state(service, old) is S.JOB_STATE_UPDATED
    assert service.store.get_job(old).requested_state is S.JOB_STATE_RUNNING


def test_an_update_of_a_job_that_carries_a_request_to_end_is_refused(
    service: JobService, scheduler: Scheduler, engine: ScriptedEngine, new_job: Callable[..., NewJob]
) -> None:
    old = running(service, scheduler, engine, new_job, name="counts")
    engine.run_of(old).drain_to = EngineState.RUNNING  # the drain takes its time
    service.update_job("proj", None, old, requested_state=S.JOB_STATE_DRAINED)
    with pytest.raises(FailedPrecondition) as refused:
        service.create_job(new_job(name="counts", type=STREAMING, replace_job_id=old))
    assert refused.value.reason == "UPDATE_NOT_RUNNING"
    assert service.store.active_replacement(old) is None
