"""UpdateJob under ``runtime_updatable_params.…`` on a real store (SQLite and PostgreSQL): what is kept and refused.

The rescale itself (the engine's part) runs on a real Flink cluster in
``tests/acceptance/test_flink_rescale.py``; here the service's rules: the parameters and a
TARGET_NUM_WORKERS_CHANGED event kept together, repeats answered as they are, and a batch
job, a job that is not running, a mask mixed with other fields or values out of range
refused with nothing written.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from google.cloud import dataflow_v1beta3 as dataflow
from google.protobuf import json_format

from tidegate.errors import FailedPrecondition, InvalidArgument
from tidegate.jobspec import read_spec
from tidegate.lifecycle import JobState, JobType
from tidegate.model import AutoscalingEventType, Job, NewJob, RuntimeParams
from tidegate.scheduler.loop import submit_workers
from tidegate.service.jobs import JobService

S = JobState
MAX, MIN = "runtime_updatable_params.max_num_workers", "runtime_updatable_params.min_num_workers"


class Workers:
    """The scheduler's answer about a job's workers (what ``Scheduler.workers`` asks the engine)."""

    def __init__(self, running: int, room: int | None) -> None:
        self.answer = (running, room)

    def workers(self, job: Job) -> tuple[int, int | None] | None:
        return self.answer


def _running(
    service: JobService, new_job: Callable[..., NewJob], job_type: JobType = JobType.JOB_TYPE_STREAMING
) -> Job:
    job = service.create_job(new_job(type=job_type))
    service.advance(job.id, S.JOB_STATE_PENDING)
    running = service.advance(job.id, S.JOB_STATE_RUNNING)
    assert running is not None
    return running


def _update(service: JobService, job: Job, mask: list[str], body: dict[str, object]) -> Job:
    return service.update_job("proj", None, job.id, update_mask=mask, runtime_params=body, caller="ops")


def test_new_params_are_kept_with_a_target_event_and_a_repeat_changes_nothing(
    service: JobService, new_job: Callable[..., NewJob]
) -> None:
    service.observer = Workers(running=2, room=4)
    job = _running(service, new_job)
    updated = _update(service, job, [MAX, MIN], {"maxNumWorkers": 3, "minNumWorkers": 1})
    assert updated.runtime_params == RuntimeParams(max_num_workers=3, min_num_workers=1)
    assert service.store.get_job(job.id) == updated
    (event,) = service.autoscaling_events("proj", None, job.id, None, None)
    assert (event.event_type, event.current_num_workers, event.target_num_workers) == (
        AutoscalingEventType.TARGET_NUM_WORKERS_CHANGED,
        2,
        3,
    )
    assert "ops" in event.description
    texts = [m.text for m in service.list_messages("proj", None, job.id).items]
    assert any("runtimeUpdatableParams" in text and "ops" in text for text in texts)

    again = _update(service, job, [MAX, MIN], {"maxNumWorkers": 3, "minNumWorkers": 1})
    assert again == updated  # a repeat: answered, nothing written
    assert len(service.autoscaling_events("proj", None, job.id, None, None)) == 1

    # The official client's REST mask is camelCase; a hint alone changes no bound: NO_CHANGE.
    hinted = service.update_job(
        "proj",
        None,
        job.id,
        update_mask=["runtimeUpdatableParams.workerUtilizationHint"],
        runtime_params={"workerUtilizationHint": 0.5},
    )
    assert hinted.runtime_params == RuntimeParams(max_num_workers=3, min_num_workers=1, worker_utilization_hint=0.5)
    kinds = [e.event_type for e in service.autoscaling_events("proj", None, job.id, None, None)]
    assert kinds == [AutoscalingEventType.TARGET_NUM_WORKERS_CHANGED, AutoscalingEventType.NO_CHANGE]


@pytest.mark.parametrize(
    ("mask", "body", "reason"),
    [
        ([MAX], {"maxNumWorkers": 0}, "INVALID_RUNTIME_PARAMS"),
        ([MAX, MIN], {"maxNumWorkers": 2, "minNumWorkers": 3}, "INVALID_RUNTIME_PARAMS"),
        ([MAX], {"maxNumWorkers": 2.5}, "INVALID_RUNTIME_PARAMS"),
        (
            ["runtime_updatable_params.worker_utilization_hint"],
            {"workerUtilizationHint": 0.95},
            "INVALID_RUNTIME_PARAMS",
        ),
        ([MAX], {"maxNumWorkers": 5}, "INVALID_RUNTIME_PARAMS"),  # the cluster has room for 4
        (["runtime_updatable_params.autoscaling_tier"], {}, "INVALID_UPDATE_MASK"),
        ([MAX, "labels"], {"maxNumWorkers": 2}, "INVALID_UPDATE_MASK"),
        ([MAX, "requested_state"], {"maxNumWorkers": 2}, "INVALID_UPDATE_MASK"),
    ],
)
def test_bad_values_are_invalid_argument_and_change_nothing(
    service: JobService, new_job: Callable[..., NewJob], mask: list[str], body: dict[str, object], reason: str
) -> None:
    service.observer = Workers(running=2, room=4)
    job = _running(service, new_job)
    with pytest.raises(InvalidArgument) as raised:
        _update(service, job, mask, body)
    assert raised.value.reason == reason
    assert service.store.get_job(job.id) == job
    assert service.autoscaling_events("proj", None, job.id, None, None) == []


def test_a_batch_job_a_job_not_running_and_one_being_drained_are_failed_precondition(
    service: JobService, new_job: Callable[..., NewJob]
) -> None:
    batch = _running(service, new_job, JobType.JOB_TYPE_BATCH)
    held = service.create_job(new_job(type=JobType.JOB_TYPE_STREAMING, requested_state=S.JOB_STATE_STOPPED))
    draining = _running(service, new_job)
    draining = service.update_job("proj", None, draining.id, requested_state=S.JOB_STATE_DRAINED)
    assert draining.current_state is S.JOB_STATE_DRAINING
    for job, reason in ((batch, "NOT_STREAMING"), (held, "JOB_NOT_RUNNING"), (draining, "JOB_NOT_RUNNING")):
        with pytest.raises(FailedPrecondition) as raised:
            _update(service, job, [MAX], {"maxNumWorkers": 2})
        assert raised.value.reason == reason, job
        assert service.store.get_job(job.id) == job
        assert service.autoscaling_events("proj", None, job.id, None, None) == []


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        ({"workerPools": [{"numWorkers": 3, "autoscalingSettings": {"maxNumWorkers": 2}}]}, 2),
        ({"workerPools": [{"numWorkers": 3}]}, 3),
        ({"sdkPipelineOptions": {"options": {"numWorkers": 4, "maxNumWorkers": 3}}}, 3),
        ({"sdkPipelineOptions": {"options": {"parallelism": 2}}}, 2),
        ({"sdkPipelineOptions": {"options": {"tidegate": {"num_workers": 2}}}}, 2),
        ({}, 1),
    ],
)
def test_a_job_starts_with_the_workers_its_settings_ask_for(
    service: JobService, new_job: Callable[..., NewJob], environment: dict[str, object], expected: int
) -> None:
    spec = json_format.ParseDict({"environment": environment}, dataflow.Job.pb()())
    job = service.create_job(new_job(spec=spec.SerializeToString()))
    assert submit_workers(job, read_spec(job)) == expected
