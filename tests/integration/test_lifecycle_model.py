"""A model-based test of the lifecycle under interleaved requests, scheduler ticks and engine events.

Hypothesis drives one store, one service and one scheduler with a scripted engine
through random sequences of: creates (batch or streaming, held or not), user requests
(before a tick, or landing inside the scheduler's next engine call, which is where a
real request races it), ticks, and engine events (a run starts, succeeds, fails). After
every step it checks what the lifecycle promises:

- every history is made of legal edges and ends where the job is;
- a request answered 200 is the request the job carries from then on (never lost, never
  replaced but by a cancel of a draining job), and a refused request changed nothing;
- no job is FAILED but by its engine;
- at the end, with every run let finish, each job ends where its request put it: a
  cancel in CANCELLED, a DONE in DONE, a drain in DRAINED (or CANCELLED when escalated,
  or FAILED when the engine failed).

On SQLite and on PostgreSQL.
"""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from tests.conftest import POSTGRES_URL, Clock
from tests.engines import ScriptedEngine
from tidegate.engines.base import EngineState
from tidegate.errors import FailedPrecondition, InvalidArgument
from tidegate.lifecycle import END_REQUESTS, JobState, JobType, is_legal
from tidegate.model import NewJob
from tidegate.scheduler.admission import Capacity
from tidegate.scheduler.loop import Scheduler, SchedulerSettings
from tidegate.service.jobs import JobService
from tidegate.store import Store

S = JobState
REQUESTS = [S.JOB_STATE_CANCELLED, S.JOB_STATE_DONE, S.JOB_STATE_DRAINED, S.JOB_STATE_DRAINING, S.JOB_STATE_RUNNING]
ENGINE_EVENTS = [EngineState.RUNNING, EngineState.SUCCEEDED, EngineState.FAILED]


def _sqlite(folder: Path) -> tuple[Store, Callable[[], None]]:
    store = Store(f"sqlite:///{folder / 'tidegate.db'}")
    store.migrate()
    return store, store.close


def _postgres(folder: Path) -> tuple[Store, Callable[[], None]]:
    import psycopg

    schema = f"tg_model_{secrets.token_hex(6)}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in POSTGRES_URL else "?"
    store = Store(f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}")
    store.migrate()

    def close() -> None:
        store.close()
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")

    return store, close


class LifecycleModel(RuleBasedStateMachine):
    open_store: Callable[[Path], tuple[Store, Callable[[], None]]] = staticmethod(_sqlite)

    jobs = Bundle("jobs")

    def __init__(self) -> None:
        super().__init__()
        self._folder = tempfile.TemporaryDirectory()
        folder = Path(self._folder.name)
        self.store, self._close = self.open_store(folder)
        self.service = JobService(self.store, clock=Clock())
        self.engine = ScriptedEngine()
        settings_ = SchedulerSettings(work_dir=folder / "runs", capacity=Capacity(max_jobs=2))
        self.scheduler = Scheduler(self.service, {"beam": self.engine}, settings_)
        self.carried: dict[str, JobState] = {}
        """Per job: the request it must carry, as the answers said."""
        self.engine_failed: set[str] = set()
        self.names = iter(range(1_000_000))

    def teardown(self) -> None:
        try:
            self._settle()
        finally:
            self._close()
            self._folder.cleanup()

    # -- rules -------------------------------------------------------------------------

    @rule(target=jobs, streaming=st.booleans(), held=st.booleans())
    def create(self, streaming: bool, held: bool) -> str:
        job = self.service.create_job(
            NewJob(
                project_id="proj",
                location="us-central1",
                name=f"job-{next(self.names)}",
                type=JobType.JOB_TYPE_STREAMING if streaming else JobType.JOB_TYPE_BATCH,
                spec=b"",
                requested_state=S.JOB_STATE_STOPPED if held else S.JOB_STATE_UNKNOWN,
            )
        )
        self.carried[job.id] = job.requested_state
        return job.id

    @rule(job_id=jobs, requested=st.sampled_from(REQUESTS))
    def request(self, job_id: str, requested: JobState) -> None:
        self._request(job_id, requested)

    @rule(job_id=jobs, requested=st.sampled_from(REQUESTS))
    def request_during_the_next_engine_call(self, job_id: str, requested: JobState) -> None:
        self.engine.during.append(lambda call: self._request(job_id, requested))

    @rule()
    def tick(self) -> None:
        self.scheduler.tick()

    @rule(job_id=jobs)
    def start_and_tick(self, job_id: str) -> None:
        """The run's workers are up, and the scheduler sees it: the short way to a RUNNING job."""
        run = self.engine.runs.get(job_id)
        if run is not None and run.state is EngineState.STARTING:
            run.state = EngineState.RUNNING
        self.scheduler.tick()

    @rule(job_id=jobs, event=st.sampled_from(ENGINE_EVENTS))
    def engine_event(self, job_id: str, event: EngineState) -> None:
        run = self.engine.runs.get(job_id)
        if run is None or run.state not in (EngineState.STARTING, EngineState.RUNNING):
            return
        run.state = event
        if event is EngineState.FAILED:
            run.error = "the pipeline raised"
            self.engine_failed.add(job_id)

    # -- checks ------------------------------------------------------------------------

    @invariant()
    def histories_are_legal_and_requests_are_carried(self) -> None:
        for job_id, carried in self.carried.items():
            job = self.store.get_job(job_id)
            history = self.store.history(job_id)
            assert history[0].target is S.JOB_STATE_STOPPED
            for change in history[1:]:
                assert change.source is not None and is_legal(change.source, change.target, change.actor), change
            assert history[-1].target is job.current_state
            assert job.requested_state is carried, (job_id, job.requested_state, carried)
            if job.current_state is S.JOB_STATE_FAILED:
                assert job_id in self.engine_failed, f"job {job_id} FAILED without its engine failing"

    def _request(self, job_id: str, requested: JobState) -> None:
        before = self.store.get_job(job_id)
        history = len(self.store.history(job_id))
        try:
            self.service.update_job("proj", None, job_id, requested_state=requested)
        except (FailedPrecondition, InvalidArgument):
            after = self.store.get_job(job_id)
            assert (after.current_state, after.requested_state, after.version) == (
                before.current_state,
                before.requested_state,
                before.version,
            )
            assert len(self.store.history(job_id)) == history
            return
        self.carried[job_id] = S.JOB_STATE_DRAINED if requested is S.JOB_STATE_DRAINING else requested

    def _settle(self) -> None:
        """Let every run finish, then check that each job ended where its request put it."""
        self.engine.during.clear()
        for _ in range(60):
            active = [j for j in self.carried if not self.store.get_job(j).current_state.terminal]
            if all(self.carried[j] is S.JOB_STATE_STOPPED for j in active):
                break  # held jobs stay held
            for run in self.engine.runs.values():
                if run.state is EngineState.STARTING:
                    run.state = EngineState.RUNNING
                elif run.state is EngineState.RUNNING and self.carried[run.request.job_id] not in END_REQUESTS:
                    run.state = EngineState.SUCCEEDED
            self.scheduler.tick()
        for job_id, carried in self.carried.items():
            job = self.store.get_job(job_id)
            if carried is S.JOB_STATE_STOPPED:
                assert job.current_state is S.JOB_STATE_STOPPED
                continue
            assert job.current_state.terminal, (job_id, job.current_state, carried)
            if carried is S.JOB_STATE_CANCELLED or carried is S.JOB_STATE_DONE:
                assert job.current_state is carried, (job_id, job.current_state, carried)
            elif carried is S.JOB_STATE_DRAINED:
                allowed = {S.JOB_STATE_DRAINED} | ({S.JOB_STATE_FAILED} if job_id in self.engine_failed else set())
                assert job.current_state in allowed, (job_id, job.current_state)


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )


class PostgresLifecycleModel(LifecycleModel):
    open_store = staticmethod(_postgres)


TestLifecycleModelOnSqlite = LifecycleModel.TestCase
TestLifecycleModelOnSqlite.settings = _settings(400)


@pytest.mark.postgres
class TestLifecycleModelOnPostgres(PostgresLifecycleModel.TestCase):  # type: ignore[name-defined,misc]
    settings = _settings(150)  # a PostgreSQL store per example costs more

    def setUp(self) -> None:
        if not POSTGRES_URL:
            import os

            if os.environ.get("CI"):
                pytest.fail("TIDEGATE_TEST_POSTGRES_URL is not set: CI must test PostgreSQL (run scripts/test)")
            pytest.skip("no PostgreSQL: set TIDEGATE_TEST_POSTGRES_URL (scripts/ensure-postgres prints one)")
