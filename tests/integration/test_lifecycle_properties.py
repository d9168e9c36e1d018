"""Random sequences of service events and user requests, on the real service and store."""

from __future__ import annotations

import itertools
from pathlib import Path
from tempfile import TemporaryDirectory

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from tidegate.errors import FailedPrecondition, InvalidArgument
from tidegate.lifecycle import TERMINAL_STATES, Actor, JobState, JobType, is_legal
from tidegate.model import NewJob
from tidegate.service.jobs import JobService
from tidegate.store import Store


class JobLifecycle(RuleBasedStateMachine):
    """A handful of jobs pushed around at random; the history must stay legal."""

    def __init__(self) -> None:
        super().__init__()
        self.folder = TemporaryDirectory()
        self.store = Store(f"sqlite:///{Path(self.folder.name) / 't.db'}")
        self.store.migrate()
        self.service = JobService(self.store)
        self.jobs: list[str] = []

    def teardown(self) -> None:
        self.store.close()
        self.folder.cleanup()

    @initialize(
        types=st.lists(st.sampled_from([JobType.JOB_TYPE_BATCH, JobType.JOB_TYPE_STREAMING]), min_size=1, max_size=3),
        held=st.booleans(),
    )
    def create(self, types: list[JobType], held: bool) -> None:
        for i, job_type in enumerate(types):
            requested = JobState.JOB_STATE_STOPPED if held else JobState.JOB_STATE_RUNNING
            job = self.service.create_job(NewJob("p", "us-central1", f"j{i}", job_type, b"", requested_state=requested))
            self.jobs.append(job.id)

    @rule(index=st.integers(0, 2), to=st.sampled_from(list(JobState)), actor=st.sampled_from(list(Actor)))
    def service_event(self, index: int, to: JobState, actor: Actor) -> None:
        job_id = self.jobs[index % len(self.jobs)]
        before = self.store.get_job(job_id)
        try:
            self.service.advance(job_id, to, "event", actor=actor)
        except FailedPrecondition:
            assert not is_legal(before.current_state, to, actor)
            assert self.store.get_job(job_id) == before
        else:
            assert is_legal(before.current_state, to, actor)

    @rule(index=st.integers(0, 2), requested=st.sampled_from(list(JobState)))
    def user_request(self, index: int, requested: JobState) -> None:
        job_id = self.jobs[index % len(self.jobs)]
        before = self.store.get_job(job_id)
        try:
            after = self.service.update_job("p", None, job_id, requested_state=requested)
        except (FailedPrecondition, InvalidArgument):
            assert self.store.get_job(job_id) == before
        else:
            if before.current_state in TERMINAL_STATES:
                assert after == before

    @invariant()
    def histories_are_legal(self) -> None:
        for job_id in self.jobs:
            history = self.store.history(job_id)
            assert history[0].source is None and history[0].target is JobState.JOB_STATE_STOPPED
            for change in history[1:]:
                assert change.source is not None and is_legal(change.source, change.target, change.actor)
                assert change.source not in TERMINAL_STATES
            for previous, change in itertools.pairwise(history):
                assert change.source is previous.target
            assert self.store.get_job(job_id).current_state is history[-1].target


JobLifecycle.TestCase.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestJobLifecycle = JobLifecycle.TestCase
