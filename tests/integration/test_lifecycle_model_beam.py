"""The lifecycle model of ``tests.lifecycle_model`` on the real Beam engine: real runs, real cancels (slow).

Jobs run real Beam batch pipelines in the engine's own processes: a short one (it
writes its output and succeeds in about a second) and a slow one (it runs a minute
unless it is stopped). Requests land before ticks and inside the engine's calls (the
engine runs them as it polls, launches or cancels), and the rule ``wait`` lets real
time pass. At the end every job is where its request put it, with a legal history,
no FAILED job, and every short job that succeeded wrote its whole output.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("apache_beam")

import apache_beam as beam
from apache_beam.internal.cloudpickle import cloudpickle
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import rule

from tests.lifecycle_model import LifecycleModel, postgres_store, skip_without_postgres
from tidegate.engines.base import Handle, LaunchRequest, RunStatus
from tidegate.engines.beam import BeamEngine
from tidegate.jobspec import PIPELINE_ARTIFACT
from tidegate.lifecycle import JobState, JobType
from tidegate.model import NewJob

pytestmark = pytest.mark.slow
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the worker cannot import this module

S = JobState
COUNT = 20


def _slowly(value: int) -> Iterator[int]:
    time.sleep(60)
    yield value


def short_pipeline(target: Path) -> bytes:
    pipeline = beam.Pipeline()
    _ = (
        pipeline
        | beam.Create(list(range(COUNT)))
        | beam.Map(str)
        | beam.io.WriteToText(str(target), shard_name_template="")
    )
    return bytes(pipeline.to_runner_api().SerializeToString())


def slow_pipeline() -> bytes:
    pipeline = beam.Pipeline()
    _ = pipeline | beam.Create([1]) | "Slowly" >> beam.FlatMap(_slowly)
    return bytes(pipeline.to_runner_api().SerializeToString())


class InterleavedBeamEngine(BeamEngine):
    """The Beam engine, running a test's calls inside its own (a request landing while it acts)."""

    def __init__(self) -> None:
        super().__init__()
        self.during: list[Callable[[str], None]] = []

    def _meanwhile(self, call: str) -> None:
        if self.during:
            self.during.pop(0)(call)

    def launch(self, request: LaunchRequest) -> Handle:
        self._meanwhile("launch")
        return super().launch(request)

    def poll(self, handle: Handle) -> RunStatus:
        self._meanwhile("poll")
        return super().poll(handle)

    def cancel(self, handle: Handle) -> None:
        self._meanwhile("cancel")
        super().cancel(handle)


class BeamLifecycleModel(LifecycleModel):
    engine: InterleavedBeamEngine
    requests = (S.JOB_STATE_CANCELLED, S.JOB_STATE_DONE, S.JOB_STATE_RUNNING)

    def make_engine(self) -> InterleavedBeamEngine:
        self.outputs: dict[str, Path] = {}
        return InterleavedBeamEngine()

    def clock(self) -> Callable[[], Any]:
        return lambda: datetime.now(UTC)  # real runs: real time, for the leases their supervisors keep

    @rule(target=LifecycleModel.jobs, slow=st.booleans(), held=st.booleans())
    def create(self, slow: bool, held: bool) -> str:
        name = f"job-{next(self.names)}"
        target = self.folder / f"{name}.txt"
        pipeline = slow_pipeline() if slow else short_pipeline(target)
        job = self.service.create_job(
            NewJob(
                project_id="proj",
                location="us-central1",
                name=name,
                type=JobType.JOB_TYPE_BATCH,
                spec=b"",
                requested_state=S.JOB_STATE_STOPPED if held else S.JOB_STATE_UNKNOWN,
                artifacts={PIPELINE_ARTIFACT: pipeline},
            )
        )
        if not slow:
            self.outputs[job.id] = target
        return self.created(job.id, job.requested_state)

    @rule(seconds=st.sampled_from([0.2, 1.0]))
    def wait(self, seconds: float) -> None:
        time.sleep(seconds)
        self.scheduler.tick()

    def settle(self) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            active = [j for j in self.carried if not self.store.get_job(j).current_state.terminal]
            if all(self.carried[j] is S.JOB_STATE_STOPPED for j in active):
                break
            for job_id in active:  # a slow job that nobody asked to end is ended as successful
                job = self.store.get_job(job_id)
                running_on = job.current_state is S.JOB_STATE_RUNNING and job.requested_state is S.JOB_STATE_RUNNING
                if job_id not in self.outputs and running_on:
                    self._request(job_id, S.JOB_STATE_DONE)
            self.scheduler.tick()
            time.sleep(0.1)
        for job_id in self.carried:  # reap every process of the runs (their outputs stay)
            run = self.store.get_run(job_id)
            if run is not None and run.ref and self.store.get_job(job_id).current_state.terminal:
                self.engine.release(Handle("beam", run.ref))
        self.engine.close()

    def check_ends(self) -> None:
        super().check_ends()
        for job_id, target in self.outputs.items():
            history = [change.target for change in self.store.history(job_id)]
            if history[-2:] == [S.JOB_STATE_RUNNING, S.JOB_STATE_DONE] and self.carried[job_id] is S.JOB_STATE_RUNNING:
                assert sorted(int(x) for x in target.read_text().split()) == list(range(COUNT))


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        stateful_step_count=12,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        database=None,
    )


class PostgresBeamLifecycleModel(BeamLifecycleModel):
    open_store = staticmethod(postgres_store)


TestBeamLifecycleModelOnSqlite = BeamLifecycleModel.TestCase
TestBeamLifecycleModelOnSqlite.settings = _settings(4)


@pytest.mark.postgres
class TestBeamLifecycleModelOnPostgres(PostgresBeamLifecycleModel.TestCase):  # type: ignore[name-defined,misc]
    settings = _settings(3)

    def setUp(self) -> None:
        skip_without_postgres()
