"""The scheduler over a real store, with a scripted engine: every batch and streaming path."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from tests.conftest import Clock
from tests.engines import ScriptedEngine
from tidegate.engines.base import EngineState
from tidegate.jobspec import CLEANUP_OPTION
from tidegate.lifecycle import JobState, JobType, is_legal
from tidegate.model import MessageImportance, NewJob
from tidegate.scheduler.admission import Capacity
from tidegate.scheduler.loop import Scheduler, SchedulerSettings
from tidegate.service.jobs import JobService

S = JobState


@pytest.fixture
def engine() -> ScriptedEngine:
    return ScriptedEngine()


@pytest.fixture
def make_scheduler(service: JobService, engine: ScriptedEngine, tmp_path: Path) -> Callable[..., Scheduler]:
    def make(**settings: object) -> Scheduler:
        values: dict[str, object] = {"work_dir": tmp_path / "runs", "capacity": Capacity(max_jobs=2)}
        values.update(settings)
        return Scheduler(service, {"beam": engine}, SchedulerSettings(**values))  # type: ignore[arg-type]

    return make


@pytest.fixture
def scheduler(make_scheduler: Callable[..., Scheduler]) -> Scheduler:
    return make_scheduler()


def states(service: JobService, job_id: str) -> list[JobState]:
    history = service.store.history(job_id)
    for change in history[1:]:
        assert change.source is not None and is_legal(change.source, change.target, change.actor)
    return [c.target for c in history]


def state(service: JobService, job_id: str) -> JobState:
    return service.store.get_job(job_id).current_state


def test_a_batch_job_runs_to_done(
    service: JobService, scheduler: Scheduler, engine: ScriptedEngine, new_job: Callable[..., NewJob]
) -> None:
    job = service.create_job(new_job())
    scheduler.tick()
    assert state(service, job.id) is S.JOB_STATE_PENDING
    assert engine.run_of(job.id).request.job_id == job.id
    scheduler.tick()
    assert state(service, job.id) is S.JOB_STATE_PENDING  # workers still starting
    engine.run_of(job.id).state = EngineState.RUNNING
    engine.say(job.id, "reading input")
    scheduler.tick()
    assert state(service, job.id) is S.JOB_STATE_RUNNING
    engine.run_of(job.id).state = EngineState.SUCCEEDED
    scheduler.tick()
    assert states(service, job.id) == [S.JOB_STATE_STOPPED, S.JOB_STATE_PENDING, S.JOB_STATE_RUNNING, S.JOB_STATE_DONE]
    texts = [m.text for m in service.list_messages("proj", None, job.id).items]
    assert "reading input" in texts
    scheduler.tick()
    assert service.store.get_run(job.id).worker == ""  # type: ignore[union-attr]


def test_a_failed_run_fails_the_job_with_an_error_message(
    service: JobService, scheduler: Scheduler, engine: ScriptedEngine, new_job: Callable[..., NewJob]
) -> None:
    job = service.create_job(new_job())
    scheduler.tick()
    engine.run_of(job.id).state = EngineState.RUNNING
    scheduler.tick()
    engine.run_of(job.id).state = EngineState.FAILED
    engine.run_of(job.id).error = "ZeroDivisionError: division by zero\nTraceback ..."
    scheduler.tick()
    assert state(service, job.id) is S.JOB_STATE_FAILED
    errors = service.list_messages("proj", None, job.id, MessageImportance.JOB_MESSAGE_ERROR).items
    assert any("ZeroDivisionError" in m.text and "Traceback" in m.text for m in errors)


def test_a_held_job_waits_until_started(
    service: JobService, scheduler: Scheduler, new_job: Callable[..., NewJob]
) -> None:
    job = service.create_job(new_job(requested_state=S.JOB_STATE_STOPPED))
    scheduler.tick()
    assert state(service, job.id) is S.JOB_STATE_STOPPED
    service.update_job("proj", None, job.id, requested_state=S.JOB_STATE_RUNNING)
    scheduler.tick()
    assert state(service, job.id) is S.JOB_STATE_PENDING


def test_capacity_queues_and_releases_fairly(
    service: JobService, scheduler: Scheduler, engine: ScriptedEngine, new_job: Callable[..., NewJob], clock: Clock
) -> None:
    ids = []
    for project in ("a", "a", "a", "b"):
        clock.advance(1)
        ids.append(service.create_job(new_job(project_id=project)).id)
    scheduler.tick()  # two slots: one each for a and b, not two for a
    assert [state(service, i) for i in ids] == [
        S.JOB_STATE_PENDING,
        S.JOB_STATE_QUEUED,
        S.JOB_STATE_QUEUED,
        S.JOB_STATE_PENDING,
    ]
    engine.run_of(ids[0]).state = EngineState.SUCCEEDED
    scheduler.tick()  # PENDING -> RUNNING
    scheduler.tick()  # RUNNING -> DONE
    scheduler.tick()  # the free slot goes to a's next job, first come first served
    assert state(service, ids[1]) is S.JOB_STATE_PENDING
    assert state(service, ids[2]) is S.JOB_STATE_QUEUED
    service.update_job("a", None, ids[2], requested_state=S.JOB_STATE_CANCELLED)
    assert states(service, ids[2]) == [S.JOB_STATE_STOPPED, S.JOB_STATE_QUEUED, S.JOB_STATE_CANCELLED]


def test_cancel_while_running(
    service: JobService, scheduler: Scheduler, engine: ScriptedEngine, new_job: Callable[..., NewJob]
) -> None:
    job = service.create_job(new_job())
    scheduler.tick()
    engine.run_of(job.id).state = EngineState.RUNNING
    scheduler.tick()
    assert (
        service.update_job("proj", None, job.id, requested_state=S.JOB_STATE_CANCELLED).current_state
        is S.JOB_STATE_CANCELLING
    )
    scheduler.tick()
    assert engine.run_of(job.id).calls == ["cancel"]
    assert states(service, job.id)[-2:] == [S.JOB_STATE_CANCELLING, S.JOB_STATE_CANCELLED]


def test_cancel_while_pending_never_reads_input(
    service: JobService, scheduler: Scheduler, engine: ScriptedEngine, new_job: Callable[..., NewJob]
) -> None:
    job = service.create_job(new_job())
    scheduler.tick()
    service.update_job("proj", None, job.id, requested_state=S.JOB_STATE_CANCELLED)
    scheduler.tick()
    assert engine.run_of(job.id).calls == ["cancel"]
    assert states(service, job.id) == [
        S.JOB_STATE_STOPPED, S.JOB_STATE_PENDING, S.JOB_STATE_RUNNING, S.JOB_STATE_CANCELLING, S.JOB_STATE_CANCELLED,
    ]  # fmt: skip


def test_done_on_request_stops_workers(
    service: JobService, scheduler: Scheduler, engine: ScriptedEngine, new_job: Callable[..., NewJob]
) -> None:
    job = service.create_job(new_job())
    scheduler.tick()
    engine.run_of(job.id).state = EngineState.RUNNING
    scheduler.tick()
    service.update_job("proj", None, job.id, requested_state=S.JOB_STATE_DONE)
    scheduler.tick()
    assert engine.run_of(job.id).calls == ["cancel"]
    assert state(service, job.id) is S.JOB_STATE_DONE


def test_drain_then_cancel_of_a_streaming_job(
    service: JobService, scheduler: Scheduler, engine: ScriptedEngine, new_job: Callable[..., NewJob]
) -> None:
    drained = service.create_job(new_job(type=JobType.JOB_TYPE_STREAMING))
    scheduler.tick()
    engine.run_of(drained.id).state = EngineState.RUNNING
    scheduler.tick()
    service.update_job("proj", None, drained.id, requested_state=S.JOB_STATE_DRAINED)
    scheduler.tick()
    assert states(service, drained.id)[-2:] == [S.JOB_STATE_DRAINING, S.JOB_STATE_DRAINED]

    cancelled = service.create_job(new_job(type=JobType.JOB_TYPE_STREAMING))
    scheduler.tick()
    engine.run_of(cancelled.id).state = EngineState.RUNNING
    engine.run_of(cancelled.id).drain_to = EngineState.RUNNING  # a drain that takes its time
    scheduler.tick()
    service.update_job("proj", None, cancelled.id, requested_state=S.JOB_STATE_DRAINED)
    scheduler.tick()
    assert state(service, cancelled.id) is S.JOB_STATE_DRAINING
    service.update_job("proj", None, cancelled.id, requested_state=S.JOB_STATE_CANCELLED)
    scheduler.tick()
    assert engine.run_of(cancelled.id).calls == ["drain", "cancel"]
    assert states(service, cancelled.id)[-2:] == [S.JOB_STATE_DRAINING, S.JOB_STATE_CANCELLED]


@pytest.mark.parametrize("server_wide", [True, False])
def test_resource_cleanup_is_opt_in(
    service: JobService,
    make_scheduler: Callable[..., Scheduler],
    engine: ScriptedEngine,
    new_job: Callable[..., NewJob],
    server_wide: bool,
) -> None:
    from tidegate.api.wire import JobPb

    spec = JobPb()
    if not server_wide:
        spec.environment.service_options.append(CLEANUP_OPTION)
    scheduler = make_scheduler(cleanup=server_wide)
    plain = service.create_job(new_job()) if not server_wide else None
    job = service.create_job(new_job(spec=spec.SerializeToString()))
    scheduler.tick()
    for j in (job, plain):
        if j:
            engine.run_of(j.id).state = EngineState.SUCCEEDED
    scheduler.tick()
    scheduler.tick()
    assert states(service, job.id)[-3:] == [S.JOB_STATE_RUNNING, S.JOB_STATE_RESOURCE_CLEANING_UP, S.JOB_STATE_DONE]
    assert "release" in engine.run_of(job.id).calls
    if plain:
        assert states(service, plain.id)[-2:] == [S.JOB_STATE_RUNNING, S.JOB_STATE_DONE]


@pytest.mark.parametrize("ending", ["done", "cleanup", "cancel", "fail"])
def test_a_runs_last_messages_and_metrics_are_kept_at_its_end(
    service: JobService,
    make_scheduler: Callable[..., Scheduler],
    engine: ScriptedEngine,
    new_job: Callable[..., NewJob],
    caplog: pytest.LogCaptureFixture,
    ending: str,
) -> None:
    """What the engine said as the run ended reaches the job, read once, before the run is released."""
    from tidegate.api.wire import JobPb
    from tidegate.model import MetricValue

    scheduler = make_scheduler(cleanup=ending == "cleanup")
    job = service.create_job(new_job(spec=JobPb().SerializeToString()))
    scheduler.tick()
    run = engine.run_of(job.id)
    run.state = EngineState.RUNNING
    scheduler.tick()
    assert state(service, job.id) is S.JOB_STATE_RUNNING
    if ending == "cancel":
        service.update_job("proj", None, job.id, requested_state=S.JOB_STATE_CANCELLED)
    run.state = {"cancel": EngineState.CANCELLED, "fail": EngineState.FAILED}.get(ending, EngineState.SUCCEEDED)
    run.error = "boom" if ending == "fail" else ""
    engine.say(job.id, "the last words of the run")
    run.metrics = [MetricValue(name="ElementCount", step="read", value=7)]
    scheduler.tick()
    scheduler.tick()
    assert state(service, job.id).terminal
    texts = [m.text for m in service.list_messages("proj", None, job.id).items]
    assert texts.count("the last words of the run") == 1
    assert scheduler.metrics(service.store.get_job(job.id)) == run.metrics
    assert ("release" in run.calls) is (ending == "cleanup")
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


def test_a_watch_polls_only_the_jobs_whose_start_or_end_is_near(
    service: JobService, scheduler: Scheduler, engine: ScriptedEngine, new_job: Callable[..., NewJob]
) -> None:
    """Between ticks, the scheduler watches PENDING, CANCELLING and DRAINING jobs alone."""
    running, cancelled = service.create_job(new_job()), service.create_job(new_job())
    scheduler.tick()
    for job in (running, cancelled):
        engine.run_of(job.id).state = EngineState.RUNNING
    scheduler.tick()
    service.update_job("proj", None, cancelled.id, requested_state=S.JOB_STATE_CANCELLED)
    engine.cancel = lambda handle: None  # type: ignore[method-assign]  # the engine takes its time
    scheduler.tick()
    assert state(service, cancelled.id) is S.JOB_STATE_CANCELLING
    polls = engine.run_of(running.id).polls, engine.run_of(cancelled.id).polls
    reads = engine.run_of(cancelled.id).message_reads
    scheduler.watch()
    scheduler.watch()
    assert engine.run_of(running.id).polls == polls[0]
    assert engine.run_of(cancelled.id).polls == polls[1] + 2
    assert engine.run_of(cancelled.id).message_reads == reads  # a watch asks for the state alone
    engine.run_of(cancelled.id).state = EngineState.CANCELLED
    scheduler.watch()
    assert state(service, cancelled.id) is S.JOB_STATE_CANCELLED
    assert state(service, running.id) is S.JOB_STATE_RUNNING


def test_a_tick_sends_a_cancel_before_it_polls_the_other_runs(
    service: JobService, scheduler: Scheduler, engine: ScriptedEngine, new_job: Callable[..., NewJob]
) -> None:
    """The tick a cancel wakes sends it first: not after the leases, admissions and every other run's poll."""
    others, cancelled = [service.create_job(new_job()) for _ in range(2)], service.create_job(new_job())
    scheduler.settings = SchedulerSettings(work_dir=scheduler.settings.work_dir, capacity=Capacity(max_jobs=3))
    scheduler.tick()
    for job in (*others, cancelled):
        engine.run_of(job.id).state = EngineState.RUNNING
    scheduler.tick()
    order: list[str] = []
    engine_poll, engine_cancel = engine.poll, engine.cancel
    engine.poll = lambda handle: (order.append(f"poll {handle.ref}"), engine_poll(handle))[1]  # type: ignore[method-assign]
    engine.cancel = lambda handle: (order.append(f"cancel {handle.ref}"), engine_cancel(handle))[1]  # type: ignore[method-assign]
    service.update_job("proj", None, cancelled.id, requested_state=S.JOB_STATE_CANCELLED)
    scheduler.tick()
    cancelled_ref = service.store.get_run(cancelled.id).ref  # type: ignore[union-attr]
    assert order[0] == f"cancel {cancelled_ref}", order
    assert len(order) == 4  # the cancelled run's poll, and each other run's once
    assert state(service, cancelled.id) is S.JOB_STATE_CANCELLED


def test_a_gone_schedulers_runs_are_adopted_after_its_lease_and_go_on(
    service: JobService,
    make_scheduler: Callable[..., Scheduler],
    engine: ScriptedEngine,
    new_job: Callable[..., NewJob],
    clock: Clock,
) -> None:
    dead = make_scheduler(worker_id="dead")
    job = service.create_job(new_job())
    gone = service.create_job(new_job())
    dead.tick()
    engine.run_of(job.id).state = EngineState.RUNNING
    engine.run_of(gone.id).state = EngineState.RUNNING
    dead.tick()
    alive = make_scheduler(worker_id="alive")
    alive.tick()
    assert service.store.get_run(job.id).worker == "dead"  # type: ignore[union-attr]  # its lease still holds
    clock.advance(31)
    engine.run_of(gone.id).state, engine.run_of(gone.id).error = EngineState.FAILED, "its processes are gone"
    alive.tick()
    assert service.store.get_run(job.id).worker == "alive"  # type: ignore[union-attr]
    assert state(service, job.id) is S.JOB_STATE_RUNNING  # its run goes on
    texts = [m.text for m in service.list_messages("proj", None, job.id).items]
    assert any("Adopted by server alive" in t and "dead" in t and "lease" in t for t in texts)
    assert state(service, gone.id) is S.JOB_STATE_FAILED  # the engine says its run is gone
    engine.run_of(job.id).state = EngineState.SUCCEEDED
    alive.tick()
    assert state(service, job.id) is S.JOB_STATE_DONE


def test_a_stopped_schedulers_runs_are_adopted_at_once(
    service: JobService,
    make_scheduler: Callable[..., Scheduler],
    engine: ScriptedEngine,
    new_job: Callable[..., NewJob],
) -> None:
    first = make_scheduler(worker_id="first")
    job = service.create_job(new_job())
    first.tick()
    first.stop()  # on purpose: it gives up its lease
    second = make_scheduler(worker_id="second")
    second.tick()
    assert service.store.get_run(job.id).worker == "second"  # type: ignore[union-attr]
    engine.run_of(job.id).state = EngineState.RUNNING
    second.tick()
    assert state(service, job.id) is S.JOB_STATE_RUNNING


def test_an_unknown_engine_is_refused_at_create_and_a_missing_one_fails_the_job(
    service: JobService, scheduler: Scheduler, new_job: Callable[..., NewJob], tmp_path: Path
) -> None:
    from google.protobuf import struct_pb2

    from tidegate.api.wire import JobPb
    from tidegate.errors import InvalidArgument

    def spec(**own: object) -> bytes:
        pb = JobPb()
        options = struct_pb2.Struct()
        options.update({"options": {"tidegate": own}})
        pb.environment.sdk_pipeline_options.CopyFrom(options)
        return bytes(pb.SerializeToString())

    for own in ({"engine": "spark"}, {"engine": "flink", "progam": "typo.py"}, {"engine": "flink"}):
        with pytest.raises(InvalidArgument):
            service.create_job(new_job(spec=spec(**own)))
    assert service.store.count_jobs() == 0
    program = tmp_path / "job.py"
    program.write_text("print('hi')\n")
    job = service.create_job(new_job(spec=spec(engine="flink", program=str(program))))
    scheduler.tick()  # this server runs the beam engine alone
    assert state(service, job.id) is S.JOB_STATE_FAILED
    assert "flink" in service.list_messages("proj", None, job.id, MessageImportance.JOB_MESSAGE_ERROR).items[0].text


def test_flexrs_waits_for_an_idle_service(
    service: JobService,
    make_scheduler: Callable[..., Scheduler],
    engine: ScriptedEngine,
    new_job: Callable[..., NewJob],
    clock: Clock,
) -> None:
    from tidegate.api.wire import JobPb

    scheduler = make_scheduler(capacity=Capacity(max_jobs=4, flex_window=timedelta(minutes=5)))
    busy = service.create_job(new_job())
    scheduler.tick()
    spec = JobPb()
    spec.environment.flex_resource_scheduling_goal = 2
    flex = service.create_job(new_job(spec=spec.SerializeToString()))
    scheduler.tick()
    assert state(service, flex.id) is S.JOB_STATE_QUEUED
    engine.run_of(busy.id).state = EngineState.SUCCEEDED
    scheduler.tick()
    scheduler.tick()
    scheduler.tick()
    assert state(service, flex.id) is S.JOB_STATE_PENDING


def test_metrics_are_live_while_running_and_kept_after_the_end(
    service: JobService, scheduler: Scheduler, engine: ScriptedEngine, new_job: Callable[..., NewJob]
) -> None:
    from datetime import UTC, datetime

    from tidegate.model import MetricValue, StageDetails

    job = service.create_job(new_job())
    assert service.metrics("proj", None, job.id)[1] == []
    scheduler.tick()
    run = engine.run_of(job.id)
    run.state = EngineState.RUNNING
    run.metrics = [MetricValue("ElementCount", "ref_AppliedPTransform_Split", 7, "dataflow/v1b3", "pc1")]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    run.stages = [StageDetails("stage-1", "running", start, None, ("Split",))]
    scheduler.tick()
    assert service.metrics("proj", None, job.id)[1][0].value == 7
    run.metrics = [MetricValue("ElementCount", "ref_AppliedPTransform_Split", 9, "dataflow/v1b3", "pc1")]
    run.state = EngineState.SUCCEEDED
    scheduler.tick()
    assert state(service, job.id) is S.JOB_STATE_DONE
    run.metrics = []  # the engine forgot: the service still has the final figures
    run.stages = []
    assert service.metrics("proj", None, job.id)[1][0].value == 9
    assert service.stages("proj", None, job.id)[1] == [StageDetails("stage-1", "running", start, None, ("Split",))]
