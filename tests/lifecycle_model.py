"""A model of the lifecycle's promises, for hypothesis state machines over a real store and scheduler.

``LifecycleModel`` drives one store (SQLite or PostgreSQL), one service and one scheduler
over an engine a subclass gives (``make_engine``), with an engine that runs a user's
request inside its next call (``during``): the scheduler has read the job and waits on
its engine when the request lands, which is where a real request races it. After every
step it checks what the lifecycle promises:

- every history is made of legal edges and ends where the job is;
- a request answered 200 is the request the job carries from then on (never lost, never
  replaced but by a cancel of a draining job), and a refused request changed nothing;
- no job is FAILED but by its engine;

and, once a subclass has let every run finish (``settle``), that each job ended where its
request put it: a cancel in CANCELLED, a DONE in DONE, a drain in DRAINED (or FAILED
when the engine failed).
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from tests.conftest import POSTGRES_URL, Clock
from tidegate.errors import FailedPrecondition, InvalidArgument
from tidegate.lifecycle import JobState, is_legal
from tidegate.scheduler.admission import Capacity
from tidegate.scheduler.loop import Scheduler, SchedulerSettings
from tidegate.service.jobs import JobService
from tidegate.store import Store

S = JobState
OpenStore = Callable[[Path], tuple[Store, Callable[[], None]]]


def sqlite_store(folder: Path) -> tuple[Store, Callable[[], None]]:
    store = Store(f"sqlite:///{folder / 'tidegate.db'}")
    store.migrate()
    return store, store.close


def postgres_store(folder: Path) -> tuple[Store, Callable[[], None]]:
    """A store in a fresh PostgreSQL schema, dropped when closed."""
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


def skip_without_postgres() -> None:
    """In a test case's setUp: skip without PostgreSQL, except in CI, where it fails."""
    if POSTGRES_URL:
        return
    if os.environ.get("CI"):
        pytest.fail("TIDEGATE_TEST_POSTGRES_URL is not set: CI must test PostgreSQL (run scripts/test)")
    pytest.skip("no PostgreSQL: set TIDEGATE_TEST_POSTGRES_URL (scripts/ensure-postgres prints one)")


class LifecycleModel(RuleBasedStateMachine):
    """The rules every variant shares: requests (before a tick or inside an engine call) and ticks."""

    open_store: OpenStore = staticmethod(sqlite_store)
    requests: tuple[JobState, ...] = (
        S.JOB_STATE_CANCELLED,
        S.JOB_STATE_DONE,
        S.JOB_STATE_DRAINED,
        S.JOB_STATE_DRAINING,
        S.JOB_STATE_RUNNING,
    )

    jobs = Bundle("jobs")

    def __init__(self) -> None:
        super().__init__()
        self._folder = tempfile.TemporaryDirectory()
        self.folder = Path(self._folder.name)
        self.store, self._close = self.open_store(self.folder)
        self.service = JobService(self.store, clock=self.clock())
        self.engine = self.make_engine()
        settings = SchedulerSettings(work_dir=self.folder / "runs", capacity=Capacity(max_jobs=2))
        self.scheduler = Scheduler(self.service, {"beam": self.engine}, settings)
        self.carried: dict[str, JobState] = {}
        """Per job: the request it must carry, as the answers said."""
        self.engine_failed: set[str] = set()
        """Jobs whose run the engine failed (a FAILED job must be one)."""
        self.names = iter(range(1_000_000))

    def make_engine(self) -> Any:
        """The engine, with a ``during`` list of calls to run inside its next calls."""
        raise NotImplementedError

    def clock(self) -> Callable[[], Any]:
        return Clock()

    def settle(self) -> None:
        """Let every run finish (held jobs stay held)."""
        raise NotImplementedError

    def teardown(self) -> None:
        try:
            self.engine.during.clear()
            self.settle()
            self.check_ends()
        finally:
            self.scheduler.stop()
            self._close()
            self._folder.cleanup()

    # -- rules -------------------------------------------------------------------------

    @rule(job_id=jobs, requested=st.sampled_from(requests))
    def request(self, job_id: str, requested: JobState) -> None:
        self._request(job_id, requested)

    @rule(job_id=jobs, requested=st.sampled_from(requests))
    def request_during_the_next_engine_call(self, job_id: str, requested: JobState) -> None:
        self.engine.during.append(lambda call: self._request(job_id, requested))

    @rule()
    def tick(self) -> None:
        self.scheduler.tick()

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

    def created(self, job_id: str, carried: JobState) -> str:
        self.carried[job_id] = carried
        return job_id

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

    def check_ends(self) -> None:
        """Each job ended where its request put it (held jobs are still held)."""
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
