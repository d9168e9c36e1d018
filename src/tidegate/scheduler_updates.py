"""The scheduler's part of an update (CreateJob with ``replaceJobId``), on an engine that stops with savepoints.

When the new job is launched, the old job's run is stopped with a savepoint (the old
job stays RUNNING meanwhile; its run is marked ``update`` so that its end is not taken
for a failure) and the new job starts from that savepoint. Once the new job runs, the
old one becomes UPDATED with ``replacedByJobId``. If the new job fails to start (or is
cancelled first), the old job's run is launched again from the same savepoint and the
old job simply stays RUNNING; both jobs get a message saying so.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from tidegate.engines.base import Handle, SavepointStopper
from tidegate.errors import FailedPrecondition, TidegateError
from tidegate.lifecycle import JobState
from tidegate.model import Job, MessageImportance

if TYPE_CHECKING:
    from tidegate.scheduler import Scheduler

__all__ = ["UPDATE_ACTION", "UPDATE_SAVEPOINT", "Updates"]

log = logging.getLogger(__name__)
S = JobState

UPDATE_SAVEPOINT = "update-savepoint"
"""The new job's artifact: where the old job's savepoint lies."""
UPDATE_ACTION = "update"
"""Marks the old job's run while it is stopped for an update."""


class Updates:
    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.store = scheduler.store
        self.service = scheduler.service

    def stop_old(self, new: Job) -> str:
        """Stop the job ``new`` replaces with a savepoint (once); the savepoint's location."""
        kept = self.store.get_artifact(new.id, UPDATE_SAVEPOINT)
        if kept is not None:
            return kept.decode()
        old = self.store.get_job(new.replace_job_id)
        if old.current_state is not S.JOB_STATE_RUNNING:
            raise FailedPrecondition(f"the job to replace, {old.id}, is {old.current_state.name}, no longer RUNNING")
        run = self.store.get_run(old.id)
        engine = self.scheduler.engines.get(run.engine) if run is not None and run.ref else None
        if run is None or engine is None:
            raise FailedPrecondition(f"the job to replace, {old.id}, has no run on this server's engines")
        if not isinstance(engine, SavepointStopper):
            raise FailedPrecondition(f"the {run.engine} engine cannot update a running job")
        self.store.update_run(old.id, run.worker, actions=run.actions | {UPDATE_ACTION})
        try:
            location = engine.stop_with_savepoint(Handle(run.engine, run.ref), self._target(new))
        except Exception as error:  # the old job goes on as it was; the update fails
            log.exception("could not stop job %s with a savepoint", old.id)
            self.store.update_run(old.id, run.worker, actions=run.actions - {UPDATE_ACTION})
            detail = error.message if isinstance(error, TidegateError) else str(error)
            self.service.add_message(
                old.id, MessageImportance.JOB_MESSAGE_WARNING, f"The update to job {new.id} failed: {detail}"
            )
            raise FailedPrecondition(
                f"job {old.id} could not be stopped with a savepoint ({detail}); it keeps running"
            ) from error
        self.store.put_artifact(new.id, UPDATE_SAVEPOINT, location.encode())
        text = f"Stopped with a savepoint for its replacement, job {new.id}: {location}"
        self.service.add_message(old.id, MessageImportance.JOB_MESSAGE_BASIC, text)
        self.service.add_message(new.id, MessageImportance.JOB_MESSAGE_BASIC, f"Starting from job {old.id}'s state")
        return location

    def _target(self, new: Job) -> Path:
        return self.scheduler.settings.snapshots / f"update-{new.id}"

    def holding(self, job: Job) -> bool:
        """Whether the job's run is stopped for an update still under way (its end is no failure)."""
        run = self.store.get_run(job.id)
        return run is not None and UPDATE_ACTION in run.actions

    def succeeded(self, new: Job) -> None:
        """The new job runs: the old one becomes UPDATED, replaced by it."""
        old = self.store.get_job(new.replace_job_id)
        if old.current_state is not S.JOB_STATE_RUNNING or not self.holding(old):
            return
        self.scheduler._keep_observations(old)
        self.service.advance(
            old.id,
            S.JOB_STATE_UPDATED,
            f"replaced by job {new.id}, which carries its state on",
            expect=frozenset({S.JOB_STATE_RUNNING}),
            replaced_by=new.id,
        )
        run = self.store.get_run(old.id)
        if run is not None:
            self.store.update_run(old.id, run.worker, release=True)

    def failed(self, new: Job, why: str) -> None:
        """The new job did not start: the old one resumes from the savepoint and stays RUNNING."""
        if not new.replace_job_id:
            return
        old = self.store.get_job(new.replace_job_id)
        run = self.store.get_run(old.id)
        kept = self.store.get_artifact(new.id, UPDATE_SAVEPOINT)
        if run is None or UPDATE_ACTION not in run.actions or old.current_state is not S.JOB_STATE_RUNNING:
            return
        if kept is None:  # never stopped: it kept running
            self.store.update_run(old.id, run.worker, actions=run.actions - {UPDATE_ACTION})
            return
        location = kept.decode()
        engine = self.scheduler.engines[run.engine]
        request = replace(self.scheduler.launch_request(old), restore_from=location)
        handle = engine.launch(request)
        self.store.update_run(old.id, run.worker, ref=handle.ref, message_cursor=0, actions=frozenset())
        first = why.splitlines()[0] if why else "it failed"
        self.service.add_message(
            old.id,
            MessageImportance.JOB_MESSAGE_WARNING,
            f"The update to job {new.id} failed ({first}); this job resumed from its savepoint {location}",
        )
        self.service.add_message(
            new.id,
            MessageImportance.JOB_MESSAGE_ERROR,
            f"This update failed to start; job {old.id} resumed from its savepoint and keeps running",
        )
