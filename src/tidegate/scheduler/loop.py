"""The scheduler: admits jobs, hands them to engines, and walks them along legal edges.

One loop, run by a thread in ``tidegate server`` and woken by every job change. It
ticks (``tick``) every ``tick`` seconds and at once when woken; while a job is PENDING,
CANCELLING or DRAINING it also watches (``watch``) every ``starting_tick``: a pass over
those jobs alone, whose end or start the engine is about to report. Each tick:

1. renews this scheduler's lease and the leases of the runs it keeps itself, and adopts
   the runs of schedulers that are gone (their lease expired, or their process on this
   machine died): a run outlives the server that launched it, and the engine, asked
   about it, says whether it still runs;
2. starts jobs (STOPPED → PENDING) while capacity lasts, fairly, and queues the rest
   (STOPPED → QUEUED); QUEUED jobs leave the queue the same way;
3. launches PENDING jobs on their engine, and reconciles every run it holds: the
   engine's state becomes lifecycle edges; requests recorded on the job (cancel,
   drain, done) are sent to the engine once each; engine messages become job messages.

It never imports an engine's libraries: engines sit behind ``tidegate.engines.base``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path

from tidegate.engines.base import (
    ClusterReporting,
    Engine,
    EngineState,
    Handle,
    LaunchRequest,
    LogReader,
    Rescaling,
    RunLeaseSpec,
    Supervising,
)
from tidegate.engines.flink_scaling import submit_parallelism
from tidegate.errors import FailedPrecondition, NotFound, TidegateError
from tidegate.failures import root_cause
from tidegate.jobspec import PIPELINE_ARTIFACT, JobSpec, read_spec, spec_of
from tidegate.lifecycle import Actor, JobState
from tidegate.model import EngineRun, Job, JobGraph, MessageImportance, MetricValue, Snapshot, StageDetails
from tidegate.scheduler.admission import Capacity, Waiting, admit
from tidegate.scheduler.leases import Leases
from tidegate.scheduler.observations import Observations
from tidegate.scheduler.rescaling import Rescales
from tidegate.service.jobs import JobService
from tidegate.telemetry import call_engine, scheduler_tick
from tidegate.updates.compatibility import state_uids_of
from tidegate.updates.procedure import UPDATE_ACTION, Updates

__all__ = ["Prepare", "Scheduler", "SchedulerSettings", "default_prepare", "failure_summary", "submit_workers"]

log = logging.getLogger(__name__)
S = JobState
_RUNNING_STATES = (
    S.JOB_STATE_PENDING,
    S.JOB_STATE_RUNNING,
    S.JOB_STATE_DRAINING,
    S.JOB_STATE_CANCELLING,
    S.JOB_STATE_RESOURCE_CLEANING_UP,
)
_ENDED = (EngineState.SUCCEEDED, EngineState.FAILED, EngineState.CANCELLED, EngineState.DRAINED)
_WATCHED_CLOSELY = (S.JOB_STATE_PENDING, S.JOB_STATE_CANCELLING, S.JOB_STATE_DRAINING)
"""States in which the scheduler watches a job every ``starting_tick``: they end when the engine says so."""

Prepare = Callable[[Job, JobSpec, Path], LaunchRequest]
"""Builds an engine's launch request from a job (reads its staged pipeline or program)."""


def default_prepare(job: Job, spec: JobSpec, workdir: Path) -> LaunchRequest:
    return LaunchRequest(
        job_id=job.id,
        job_name=job.name,
        streaming=spec.streaming,
        workdir=workdir,
        program=str(spec.tidegate.get("program", "")),
        options=spec.options,
        args=tuple(str(a) for a in spec.tidegate.get("args", ())),
        num_workers=submit_workers(job, spec),
    )


def submit_workers(job: Job, spec: JobSpec) -> int:
    """The workers a job starts with (Flink: its parallelism): ``submit_parallelism`` of its worker settings.

    ``environment.workerPools[0]``'s ``numWorkers`` and ``autoscalingSettings.maxNumWorkers`` (what
    Beam's DataflowRunner sends for ``--num_workers`` and ``--max_num_workers``), ``tidegate.num_workers``,
    then the pipeline options.
    """
    pools = spec_of(job).environment.worker_pools
    environment: dict[str, int] = {}
    if pools:
        environment = {"numWorkers": pools[0].num_workers, "maxWorkers": pools[0].autoscaling_settings.max_num_workers}
    options = dict(spec.options)
    if spec.tidegate.get("num_workers"):
        options["numWorkers"] = spec.tidegate["num_workers"]
    return submit_parallelism(environment, options) or spec.num_workers


@dataclass(frozen=True)
class SchedulerSettings:
    work_dir: Path
    """Runs get a folder each under it."""
    capacity: Capacity = field(default_factory=Capacity)
    cleanup: bool = False
    """RESOURCE_CLEANING_UP for every batch job (otherwise only for jobs that ask for it)."""
    lease: timedelta = timedelta(seconds=30)
    tick: float = 0.25
    starting_tick: float = 0.02
    """The watch while a job is PENDING, CANCELLING or DRAINING: a run's start or end is seen within this."""
    messages_every: float = 1.0
    """Seconds between two reads of a run's messages (and at once when the engine's state changes)."""
    worker_id: str = ""
    snapshot_dir: Path | None = None
    """Snapshots get a folder each under it (default: ``snapshots`` beside ``work_dir``)."""

    @property
    def snapshots(self) -> Path:
        return self.snapshot_dir or self.work_dir.parent / "snapshots"


class Scheduler:
    """Moves jobs through the lifecycle with engines behind one seam."""

    def __init__(
        self,
        service: JobService,
        engines: Mapping[str, Engine],
        settings: SchedulerSettings,
        prepare: Prepare = default_prepare,
    ) -> None:
        self.service = service
        self.store = service.store
        self.engines = dict(engines)
        self.settings = settings
        self.prepare = prepare
        self.worker = settings.worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._leases = Leases(self.store, self.worker, settings.lease, service.add_message)
        self._observations = Observations(self.store, self._handle)
        self._wake = threading.Event()
        self._starting = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._messages_read: dict[str, tuple[EngineState, float]] = {}
        """Per job: the engine's state and the time (monotonic) when its messages were last read."""
        self._rescales = Rescales(service, self.worker)
        service.subscribe(lambda job: self._wake.set())
        service.observer = self
        self._updates = Updates(
            self.store,
            service,
            self.engines,
            settings.snapshots,
            request_for=self.launch_request,
            keep_observations=self._observations.keep,
            wake=self.wake,
        )

    # -- what the service asks -------------------------------------------------------------

    def metrics(self, job: Job) -> list[MetricValue]:
        """The job's metrics: live from its engine while it runs, the kept final ones after."""
        return self._observations.metrics(job)

    def stages(self, job: Job) -> list[StageDetails]:
        """The job's execution details per stage."""
        return self._observations.stages(job)

    def plan(self, job: Job) -> JobGraph | None:
        """The engine's plan of the job's run (Flink's job graph), if its engine has one."""
        return self._observations.plan(job)

    def workers(self, job: Job) -> tuple[int, int | None] | None:
        """The job's workers running now and the most it could have (its own slots and the free ones)."""
        found = self._handle(job)
        if found is None:
            return None
        engine, handle = found
        if not isinstance(engine, Rescaling):
            return None
        try:
            running = call_engine(handle.engine, "workers", engine.workers, handle)
        except TidegateError:
            return None
        health = engine.cluster_health() if isinstance(engine, ClusterReporting) else None
        room = running + health.slots_available if health is not None and health.up else None
        return running, room

    def snapshot(self, job: Job, snapshot_id: str) -> tuple[str, int]:
        """Take a savepoint of the job's run into the snapshot folder; its location and size."""
        found = self._handle(job)
        if found is None:
            raise FailedPrecondition(f"Job {job.id} has no run on this server's engines", reason="SNAPSHOT_NO_RUN")
        engine, handle = found
        target = self.settings.snapshots / snapshot_id
        target.mkdir(parents=True, exist_ok=True)
        location = call_engine(handle.engine, "snapshot", engine.snapshot, handle, target)
        size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
        return location, size

    def drop_snapshot(self, snapshot: Snapshot) -> None:
        shutil.rmtree(self.settings.snapshots / snapshot.id, ignore_errors=True)

    def _handle(self, job: Job) -> tuple[Engine, Handle] | None:
        run = self.store.get_run(job.id)
        if run is None or not run.ref or run.engine not in self.engines:
            return None
        return self.engines[run.engine], Handle(run.engine, run.ref)

    # -- the loop ----------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="tidegate-scheduler", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Make the loop tick now (a thread of the scheduler's finished something)."""
        self._wake.set()

    def stop(self) -> None:
        """Stop the loop; its runs go on, and the next scheduler adopts them at once."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with contextlib.suppress(Exception):  # the database may be gone: the lease then expires
            self._leases.release()

    def _loop(self) -> None:
        woken, last_tick = True, 0.0
        while not self._stop.is_set():
            try:
                if woken or time.monotonic() - last_tick >= self.settings.tick:
                    last_tick = time.monotonic()
                    with scheduler_tick(self.settings.tick):
                        self.tick()
                else:
                    self.watch()
            except Exception:  # a bad tick must not stop the scheduler
                log.exception("scheduler tick failed")
            woken = self._wake.wait(self.settings.starting_tick if self._starting else self.settings.tick)
            self._wake.clear()

    def tick(self) -> None:
        """One pass over everything the scheduler looks after.

        The jobs that are PENDING, CANCELLING or DRAINING go first: a tick woken by a
        cancel or a drain sends it before the leases, the admissions and the other runs.
        """
        closely = self.store.job_ids_in_states(_WATCHED_CLOSELY)
        for job_id in closely:
            self._reconcile(job_id)
        now = self.service.clock()
        self._renew(now)
        self._adopt(now)
        self._admit(now)
        done = set(closely)
        for job_id in self.store.job_ids_in_states(_RUNNING_STATES):
            if job_id not in done:
                self._reconcile(job_id)
        self._starting = bool(self.store.job_ids_in_states(_WATCHED_CLOSELY))

    def watch(self) -> None:
        """A pass over the jobs that are PENDING, CANCELLING or DRAINING alone, between two ticks.

        Their engine is about to report a run's start or end; the other running jobs wait
        for the next tick, so a watch costs the same however many jobs run. A watch asks
        the engine for the run's state alone: its messages (several calls to the engine,
        which would hold up seeing the end) are read by the ticks, and at the run's end.
        """
        for job_id in self.store.job_ids_in_states(_WATCHED_CLOSELY):
            self._reconcile(job_id, messages=False)
        self._starting = bool(self.store.job_ids_in_states(_WATCHED_CLOSELY))

    # -- leases ------------------------------------------------------------------------

    def _renew(self, now: datetime) -> None:
        if self._leases.renew(now):
            self.service.expire_snapshots()

    def _adopt(self, now: datetime) -> None:
        if self._leases.adopt(now):
            self._wake.set()

    # -- admission -----------------------------------------------------------------------

    def _admit(self, now: datetime) -> None:
        waiting: list[Waiting] = []
        stopped: list[Job] = []
        for job_id in self.store.job_ids_in_states((S.JOB_STATE_STOPPED, S.JOB_STATE_QUEUED)):
            job = self.store.get_job(job_id)
            if job.current_state is S.JOB_STATE_STOPPED and job.requested_state is not S.JOB_STATE_RUNNING:
                continue  # held
            spec = read_spec(job)
            waiting.append(Waiting(job.id, job.project_id, job.create_time, spec.flexible))
            if job.current_state is S.JOB_STATE_STOPPED:
                stopped.append(job)
        if not waiting:
            return
        running = self.store.count_jobs_by_project(_RUNNING_STATES)
        chosen = set(admit(waiting, running, self.settings.capacity, now))
        for item in waiting:
            if item.job_id in chosen:
                self.service.advance(
                    item.job_id,
                    S.JOB_STATE_PENDING,
                    "starting workers",
                    expect=frozenset({S.JOB_STATE_STOPPED, S.JOB_STATE_QUEUED}),
                )
        for job in stopped:
            if job.id not in chosen:
                why = (
                    "a flexible (FlexRS) start: waiting for a quiet moment"
                    if read_spec(job).flexible
                    else "waiting for capacity"
                )
                self.service.advance(job.id, S.JOB_STATE_QUEUED, why, expect=frozenset({S.JOB_STATE_STOPPED}))

    # -- runs ------------------------------------------------------------------------------

    def _reconcile(self, job_id: str, *, messages: bool = True) -> None:
        job = self.store.get_job(job_id)
        run = self.store.get_run(job_id)
        if run is None:
            if job.current_state is not S.JOB_STATE_PENDING:
                return
            spec = read_spec(job)
            if not self.store.claim_run(job.id, spec.engine, self.worker, self.service.clock() + self.settings.lease):
                return
            run = self.store.get_run(job_id)
            assert run is not None
        if run.worker != self.worker:
            return
        engine = self.engines.get(run.engine)
        if engine is None:
            self._fail(
                job, f"this server has no {run.engine!r} engine (it has: {', '.join(sorted(self.engines)) or 'none'})"
            )
            return
        try:
            self._step(job, run, engine, messages)
        except NotFound as error:
            if run.ref and run.lease_until > self.service.clock() and self.store.supervised(job.id):
                return  # its supervisor keeps its lease where this server cannot see the run: it lives
            self._fail(job, error.message)
        except TidegateError as error:
            self._fail(job, error.message)
        except Exception as error:
            log.exception("engine %s failed on job %s", run.engine, job.id)
            self.service.add_message(job.id, MessageImportance.JOB_MESSAGE_WARNING, f"engine error: {error}")

    def _step(self, job: Job, run: EngineRun, engine: Engine, messages: bool = True) -> None:
        state, wanted = job.current_state, job.requested_state
        if state.terminal:
            self.store.update_run(job.id, self.worker, release=True)
            self._messages_read.pop(job.id, None)
            return
        if not run.ref:  # nothing launched yet
            if wanted is S.JOB_STATE_CANCELLED:
                if self._updates.stopping(job):
                    with contextlib.suppress(TidegateError):  # the stop failed: the old job runs on
                        if self._updates.stop_old(job) is None:
                            return  # the old job's stop ends first; the abort then resumes it
                self._abort_launch(job)
            elif state is S.JOB_STATE_PENDING:
                self._launch(job, run, engine)
            return
        handle = Handle(run.engine, run.ref)
        run = self._send_stop(job, run, engine, handle)
        status = call_engine(handle.engine, "poll", engine.poll, handle)
        if messages and (status.state not in _ENDED or UPDATE_ACTION in run.actions):  # the end's edge reads them
            run = self._messages_when_due(job, run, engine, handle, status.state)
        if state is S.JOB_STATE_PENDING:
            if wanted is S.JOB_STATE_CANCELLED:
                call_engine(handle.engine, "cancel", engine.cancel, handle)
                self._abort_launch(job)
            elif status.state is EngineState.FAILED:
                self._fail(job, status.error or "the run failed while starting")
            elif status.state is not EngineState.STARTING:
                running = self._to(job, S.JOB_STATE_RUNNING, "workers are running")
                if running is not None and job.replace_job_id:
                    self._updates.succeeded(running)
                if status.state in _ENDED:
                    self._wake.set()
        elif state is S.JOB_STATE_RUNNING:
            if UPDATE_ACTION in run.actions:
                return  # stopped for an update under way: its replacement decides what comes next
            if wanted is S.JOB_STATE_CANCELLED:  # accepted before the job ran (its abort was cut short)
                self._to(job, S.JOB_STATE_CANCELLING, "cancel requested")
            elif wanted is S.JOB_STATE_DONE:
                self._once(run, "cancel", lambda: call_engine(handle.engine, "cancel", engine.cancel, handle))
                self._to(job, S.JOB_STATE_DONE, "ended as successful on request; workers stopped", Actor.USER)
            elif status.state is EngineState.SUCCEEDED:
                self._succeed(job, engine, handle)
            elif status.state is EngineState.FAILED:
                self._fail(job, status.error or "the run failed")
            elif status.state in (EngineState.CANCELLED, EngineState.DRAINED):
                self._fail(job, f"the engine ended the run by itself ({status.state.value})")
            elif status.state is EngineState.RUNNING and wanted in (S.JOB_STATE_RUNNING, S.JOB_STATE_UNKNOWN):
                self._rescales.step(job, run, engine, handle)
        elif state is S.JOB_STATE_CANCELLING:
            if status.state in _ENDED:
                self._to(job, S.JOB_STATE_CANCELLED, "workers stopped")
        elif state is S.JOB_STATE_DRAINING:
            if wanted is S.JOB_STATE_CANCELLED:
                if status.state in _ENDED:
                    self._to(job, S.JOB_STATE_CANCELLED, "cancelled while draining; workers stopped", Actor.USER)
                return
            if status.state in (EngineState.DRAINED, EngineState.SUCCEEDED):
                self._to(job, S.JOB_STATE_DRAINED, "in-flight data written")
            elif status.state is EngineState.FAILED:
                self._fail(job, status.error or "the run failed while draining")
            elif status.state is EngineState.CANCELLED:
                self._fail(job, "the engine cancelled the run while it was draining")
        elif state is S.JOB_STATE_RESOURCE_CLEANING_UP:
            call_engine(handle.engine, "release", engine.release, handle)
            self._to(job, S.JOB_STATE_DONE, "resources cleaned up", observed=True)

    def _launch(self, job: Job, run: EngineRun, engine: Engine) -> None:
        if job.replace_job_id and self._updates.under_way(job):
            return  # the old job is being stopped with a savepoint; the stopping thread wakes the loop
        request = self.launch_request(job)
        if job.replace_job_id and not request.restore_from:  # an update: the old job's state first
            location = self._updates.stop_old(job, engine, request)
            if location is None:
                return  # the old job is being stopped with a savepoint: a later tick launches
            request = replace(request, restore_from=location)
        handle = call_engine(engine.name, "launch", engine.launch, request)
        self.store.update_run(job.id, self.worker, ref=handle.ref)
        self.service.add_message(
            job.id, MessageImportance.JOB_MESSAGE_DETAILED, f"launched on the {engine.name} engine"
        )

    def launch_request(self, job: Job) -> LaunchRequest:
        """What the engine needs to run the job: its pipeline or program, where to start from."""
        workdir = self.settings.work_dir / job.id
        workdir.mkdir(parents=True, exist_ok=True)
        spec = read_spec(job)
        request = self.prepare(job, spec, workdir)
        if not request.pipeline:
            request = replace(request, pipeline=self.store.get_artifact(job.id, PIPELINE_ARTIFACT) or b"")
        if job.created_from_snapshot_id and not request.restore_from:
            snapshot = self.store.get_snapshot(job.created_from_snapshot_id)  # NotFound: deleted since
            request = replace(request, restore_from=snapshot.path)
        program = self.store.get_artifact(job.id, spec.program_artifact) if spec.program else None
        if program is not None:  # the program as it was at create, whatever became of the file since
            path = workdir / (Path(spec.program).name or spec.program_artifact)
            path.write_bytes(program)
            request = replace(request, program=str(path))
        under = state_uids_of(self.store, job.id)
        if under:
            request = replace(request, state_uids=under)
        engine = self.engines.get(spec.engine)
        if isinstance(engine, Supervising) and engine.supervises_runs:  # its run keeps its lease itself
            token = uuid.uuid4().hex
            self.store.set_run_token(job.id, token)
            lease = RunLeaseSpec(self.store.url, token, self.settings.lease.total_seconds())
            request = replace(request, lease=lease)
        return request

    def _abort_launch(self, job: Job) -> None:
        """Cancel of a PENDING job: it passes RUNNING → CANCELLING → CANCELLED without reading input.

        Each edge from where the job is: an abort cut short (a crash between two edges) goes on
        from there at the next tick.
        """
        steps = (
            (S.JOB_STATE_PENDING, S.JOB_STATE_RUNNING, "launch aborted by a cancel request"),
            (S.JOB_STATE_RUNNING, S.JOB_STATE_CANCELLING, "cancel requested before the job read any input"),
            (S.JOB_STATE_CANCELLING, S.JOB_STATE_CANCELLED, "workers stopped"),
        )
        at: Job | None = job
        for source, target, reason in steps:
            if at is not None and at.current_state is source:
                at = self._to(at, target, reason)
        if at is not None and at.current_state is S.JOB_STATE_CANCELLED:
            self._updates.failed(at, "it was cancelled before it started")

    def _succeed(self, job: Job, engine: Engine, handle: Handle) -> None:
        if self.settings.cleanup or read_spec(job).cleanup:
            cleaning = self._to(job, S.JOB_STATE_RESOURCE_CLEANING_UP, "cleaning up temporary files and processes")
            if cleaning is None:
                return
            call_engine(handle.engine, "release", engine.release, handle)
            shutil.rmtree(self.settings.work_dir / job.id, ignore_errors=True)
            self._to(cleaning, S.JOB_STATE_DONE, "resources cleaned up", observed=True)
        else:
            self._to(job, S.JOB_STATE_DONE, "the run succeeded")

    def _last_messages(self, job: Job) -> None:
        """The messages an ended run wrote since they were last read."""
        run, found = self.store.get_run(job.id), self._handle(job)
        if run is None or found is None:
            return
        try:
            self._pull_messages(job, run, *found)
        except Exception:  # messages are a courtesy too
            log.exception("could not read the last messages of job %s", job.id)

    def _messages_when_due(
        self, job: Job, run: EngineRun, engine: Engine, handle: Handle, state: EngineState
    ) -> EngineRun:
        """Read the run's messages every ``messages_every``, and at once when its state changed."""
        read = self._messages_read.get(job.id)
        if read is None or read[0] is not state or time.monotonic() - read[1] >= self.settings.messages_every:
            run = self._pull_messages(job, run, engine, handle)
            self._messages_read[job.id] = (state, time.monotonic())
        return run

    def _pull_messages(self, job: Job, run: EngineRun, engine: Engine, handle: Handle) -> EngineRun:
        messages, cursor = call_engine(handle.engine, "messages", engine.messages, handle, run.message_cursor)
        for message in messages:
            self.service.add_message(job.id, message.importance, message.text)
        if cursor != run.message_cursor:
            self.store.update_run(job.id, self.worker, message_cursor=cursor)
            run = replace(run, message_cursor=cursor)
        if isinstance(engine, LogReader):
            lines, log_cursor = call_engine(handle.engine, "logs", engine.logs, handle, run.log_cursor)
            if log_cursor != run.log_cursor and self.store.append_logs(job.id, self.worker, lines, log_cursor):
                run = replace(run, log_cursor=log_cursor)
        return run

    def _send_stop(self, job: Job, run: EngineRun, engine: Engine, handle: Handle) -> EngineRun:
        """Send a user's cancel or drain of a CANCELLING or DRAINING job first, before the tick polls the run.

        The request leaves as soon as the tick starts: not after a poll and a read of the engine's
        messages (several calls to a busy engine); the poll that follows sees its effect.
        """
        if job.current_state is S.JOB_STATE_CANCELLING or (
            job.current_state is S.JOB_STATE_DRAINING and job.requested_state is S.JOB_STATE_CANCELLED
        ):
            action, send = "cancel", engine.cancel
        elif job.current_state is S.JOB_STATE_DRAINING:
            action, send = "drain", engine.drain
        else:
            return run
        if self._once(run, action, lambda: call_engine(handle.engine, action, send, handle)):
            run = replace(run, actions=run.actions | {action})
        return run

    def _once(self, run: EngineRun, action: str, send: Callable[[], None]) -> bool:
        """Send a request to the engine unless it was sent before; whether it was sent now."""
        if action in run.actions:
            return False
        send()
        self.store.update_run(run.job_id, self.worker, actions=run.actions | {action})
        return True

    def _to(
        self, job: Job, target: JobState, reason: str, actor: Actor = Actor.SERVICE, *, observed: bool = False
    ) -> Job | None:
        """Take an edge decided on ``job`` as the scheduler read it; the job after it, or None.

        The edge is taken only while the job is still in the state and carries the request it
        was decided on, checked in the edge's own transaction: when a request changed the job
        since (a cancel that came in while the engine was asked), nothing is written, and the
        loop ticks again at once to decide anew. On the run's last edges, its final metrics,
        stages and messages are kept (``observed``: they were, at RESOURCE_CLEANING_UP, before
        the engine released the run and could no longer answer for it).
        """
        moved = self.service.advance(
            job.id,
            target,
            reason,
            actor=actor,
            expect=frozenset({job.current_state}),
            carrying=job.requested_state,
        )
        if moved is None:
            self._wake.set()
            return None
        if (target.terminal or target is S.JOB_STATE_RESOURCE_CLEANING_UP) and not observed:
            # After the edge, so that the job's end is not held up by reading them (the engine
            # still answers for the ended run until it is released).
            self._observations.keep(job)
            self._last_messages(job)
        if target.terminal:
            self.store.update_run(job.id, self.worker, release=True)
            self._messages_read.pop(job.id, None)
            self._rescales.forget(job.id)
        return moved

    def _fail(self, job: Job, error: str) -> None:
        """Fail the job, as the scheduler read it: not when a request has changed it since (that decides anew)."""
        current = self.store.get_job(job.id)
        if current.current_state.terminal:
            return
        if (current.current_state, current.requested_state) != (job.current_state, job.requested_state):
            self._wake.set()
            return
        self.service.add_message(job.id, MessageImportance.JOB_MESSAGE_ERROR, error)
        if current.current_state is S.JOB_STATE_RESOURCE_CLEANING_UP:  # it already succeeded
            self._to(current, S.JOB_STATE_DONE, "finished; cleaning up failed", observed=True)
            return
        at: Job | None = current
        if current.current_state in (S.JOB_STATE_STOPPED, S.JOB_STATE_QUEUED):
            at = self._to(current, S.JOB_STATE_PENDING, "starting workers")
        if at is not None and self._to(at, S.JOB_STATE_FAILED, failure_summary(error)) is not None:
            self._updates.failed(at, error)


def failure_summary(error: str, limit: int = 500) -> str:
    """The one line that says why a run failed: its root exception's own line (``tidegate.failures``)."""
    if not error.strip():
        return "failed"
    line = root_cause(error)
    return line if len(line) <= limit else line[: limit - 1] + "…"
