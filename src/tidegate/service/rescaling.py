"""In-place rescaling (UpdateJob under ``runtime_updatable_params.…``) and autoscaling events, part of ``JobService``.

A RUNNING streaming job's new ``runtimeUpdatableParams`` are checked (``flink_scaling``),
kept on the job with a TARGET_NUM_WORKERS_CHANGED event in one transaction, and the
scheduler has the job's engine rescale it (``tidegate.scheduler.rescaling``), which records
CURRENT_NUM_WORKERS_CHANGED (or ACTUATION_FAILURE) when the run gets there.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from tidegate.engines.flink_scaling import check_runtime_params, is_runtime_mask, parse_runtime_update, target_workers
from tidegate.errors import FailedPrecondition
from tidegate.lifecycle import JobState, JobType
from tidegate.model import AutoscalingEvent, AutoscalingEventType, Job, MessageImportance
from tidegate.store import Change, Store

__all__ = ["RescaleCases", "WorkerCounter", "snake"]


def snake(path: str) -> str:
    """A field mask path in proto's names: its JSON form (``runtimeUpdatableParams.maxNumWorkers``, what
    the official client sends over REST) as ``runtime_updatable_params.max_num_workers``."""
    return _CAMEL.sub(lambda m: "_" + m.group(1).lower(), path)


_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")


class WorkerCounter(Protocol):
    """What the service asks of the scheduler about a job's workers."""

    def workers(self, job: Job) -> tuple[int, int | None] | None:
        """The job's workers running now and the most it could have (None: unknown); None without a run."""


class RescaleCases:
    """The rescaling part of ``JobService`` (mixed in; it supplies the attributes below)."""

    store: Store
    clock: Callable[[], datetime]
    observer: object

    def get_job(self, project_id: str, location: str | None, job_id: str) -> Job:
        raise NotImplementedError

    def _change(self, job_id: str, decide: Callable[[Job], Change | None]) -> tuple[Job, bool]:
        raise NotImplementedError

    def _notify(self, job: Job) -> Job:
        raise NotImplementedError

    def _counter(self) -> WorkerCounter | None:
        observer = self.observer
        return observer if observer is not None and hasattr(observer, "workers") else None

    @staticmethod
    def updates_runtime_params(update_mask: Sequence[str]) -> bool:
        """Whether an UpdateJob under this mask changes ``runtimeUpdatableParams`` (it asks the engine: slow)."""
        return any(is_runtime_mask(snake(path.strip())) for path in update_mask)

    def update_runtime_params(
        self, current: Job, mask: Sequence[str], body: Mapping[str, Any] | None, caller: str
    ) -> Job:
        """New ``runtimeUpdatableParams`` for a RUNNING streaming job; the scheduler has its engine rescale it."""
        params = parse_runtime_update(mask, body, current.runtime_params)
        if current.type is not JobType.JOB_TYPE_STREAMING:
            raise FailedPrecondition(
                f"Job {current.id} is a batch job: only a streaming job's runtimeUpdatableParams can be updated",
                reason="NOT_STREAMING",
                metadata={"jobType": current.type.name},
            )
        check_runtime_params(params)
        counter = self._counter()
        workers = counter.workers(current) if counter is not None else None
        running, room = workers if workers is not None else (0, None)
        check_runtime_params(params, room)
        target = target_workers(params, running or params.min_num_workers or 1, room)

        def decide(job: Job) -> Change | None:
            self._check_rescalable(job)
            if params == job.runtime_params:
                return None  # a repeat: answered as it is
            said = ", ".join(f"{name}={value}" for name, value in params.to_json().items()) or "none"
            by = f" by {caller}" if caller else ""
            bounds_changed = (params.min_num_workers, params.max_num_workers) != (
                job.runtime_params.min_num_workers,
                job.runtime_params.max_num_workers,
            )
            kind = (
                AutoscalingEventType.TARGET_NUM_WORKERS_CHANGED
                if bounds_changed and (not running or target != running)
                else AutoscalingEventType.NO_CHANGE
            )
            text = f"runtimeUpdatableParams {said} requested{by}"
            event = AutoscalingEvent(
                job.id,
                self.clock(),
                kind,
                running,
                target,
                f"{text}: {running} -> {target} workers"
                if kind is AutoscalingEventType.TARGET_NUM_WORKERS_CHANGED
                else f"{text}: {running} workers",
            )
            return Change(
                runtime_params=params,
                caller=caller,
                message=(MessageImportance.JOB_MESSAGE_BASIC, f"Job {job.id}: {text}"),
                autoscaling=event,
            )

        job, changed = self._change(current.id, decide)
        return self._notify(job) if changed else job

    def _check_rescalable(self, job: Job) -> None:
        """FAILED_PRECONDITION unless the job runs and carries no request toward an end nor an update."""
        if job.current_state is not JobState.JOB_STATE_RUNNING:
            raise FailedPrecondition(
                f"Job {job.id} is in {job.current_state.name}: only a JOB_STATE_RUNNING job can be rescaled",
                reason="JOB_NOT_RUNNING",
                metadata={"currentState": job.current_state.name},
            )
        if job.requested_state not in (JobState.JOB_STATE_RUNNING, JobState.JOB_STATE_UNKNOWN):
            raise FailedPrecondition(
                f"Job {job.id} carries a request for {job.requested_state.name}: it is not rescaled any more",
                reason="REQUEST_NOT_ALLOWED",
                metadata={"currentState": job.current_state.name, "carriedRequest": job.requested_state.name},
            )
        replacing = self.store.active_replacement(job.id)
        if replacing:
            raise FailedPrecondition(
                f"Job {job.id} is being updated: job {replacing} replaces it",
                reason="UPDATE_UNDER_WAY",
                metadata={"currentState": job.current_state.name, "replacedBy": replacing},
            )

    def autoscaling_events(
        self, project_id: str, location: str | None, job_id: str, start: datetime | None, end: datetime | None
    ) -> list[AutoscalingEvent]:
        """The job's autoscaling events (ListJobMessages' ``autoscalingEvents``), oldest first."""
        job = self.get_job(project_id, location, job_id)
        return self.store.autoscaling_events(job.id, start, end)

    def record_autoscaling(self, event: AutoscalingEvent, importance: MessageImportance) -> None:
        """An autoscaling event the scheduler saw (the new workers running, or a failed rescale), and its message."""
        self.store.add_autoscaling_event(event, importance, f"Job {event.job_id}: {event.description}")
