"""The lifecycle under interleaved requests, scheduler ticks and engine events, with a scripted engine.

Hypothesis drives random sequences of creates (batch or streaming, held or not), user
requests (before a tick, or landing inside the scheduler's next engine call), ticks and
engine events (a run starts, succeeds, fails) and checks the promises of
``tests.lifecycle_model`` after every step and at the end. On SQLite and on PostgreSQL.
``test_lifecycle_model_beam.py`` is the slow variant on the real Beam engine.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import rule

from tests.engines import ScriptedEngine
from tests.lifecycle_model import LifecycleModel, postgres_store, skip_without_postgres
from tidegate.engines.base import EngineState
from tidegate.lifecycle import END_REQUESTS, JobState, JobType
from tidegate.model import NewJob

S = JobState
ENGINE_EVENTS = [EngineState.RUNNING, EngineState.SUCCEEDED, EngineState.FAILED]


class ScriptedLifecycleModel(LifecycleModel):
    engine: ScriptedEngine

    def make_engine(self) -> ScriptedEngine:
        return ScriptedEngine()

    @rule(target=LifecycleModel.jobs, streaming=st.booleans(), held=st.booleans())
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
        return self.created(job.id, job.requested_state)

    @rule(job_id=LifecycleModel.jobs)
    def start_and_tick(self, job_id: str) -> None:
        """The run's workers are up, and the scheduler sees it: the short way to a RUNNING job."""
        run = self.engine.runs.get(job_id)
        if run is not None and run.state is EngineState.STARTING:
            run.state = EngineState.RUNNING
        self.scheduler.tick()

    @rule(job_id=LifecycleModel.jobs, event=st.sampled_from(ENGINE_EVENTS))
    def engine_event(self, job_id: str, event: EngineState) -> None:
        run = self.engine.runs.get(job_id)
        if run is None or run.state not in (EngineState.STARTING, EngineState.RUNNING):
            return
        run.state = event
        if event is EngineState.FAILED:
            run.error = "the pipeline raised"
            self.engine_failed.add(job_id)

    def settle(self) -> None:
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


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )


class PostgresLifecycleModel(ScriptedLifecycleModel):
    open_store = staticmethod(postgres_store)


TestLifecycleModelOnSqlite = ScriptedLifecycleModel.TestCase
TestLifecycleModelOnSqlite.settings = _settings(400)


@pytest.mark.postgres
class TestLifecycleModelOnPostgres(PostgresLifecycleModel.TestCase):  # type: ignore[name-defined,misc]
    settings = _settings(150)  # a PostgreSQL store per example costs more

    def setUp(self) -> None:
        skip_without_postgres()
