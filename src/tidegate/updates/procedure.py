"""The scheduler's part of an update (CreateJob with ``replaceJobId``), on an engine that stops with savepoints.

When the new job is launched, the old job's run is stopped with a savepoint (the old
job stays RUNNING meanwhile; its run is marked ``update`` so that its end is not taken
for a failure) and the new job starts from that savepoint. The stop runs in a thread of
its own (a savepoint takes seconds, and the scheduler's other jobs must not wait for it);
every lifecycle edge and store write stays on the scheduler's thread. Once the new job
runs, the old one becomes UPDATED with ``replacedByJobId``. If the new job fails to
start (or is cancelled first), the old job's run is launched again from the same
savepoint and the old job simply stays RUNNING; both jobs get a message saying so.
An engine that can (``LaunchPreparer``) gets the new job's request as the stop begins, to
make the new job ready meanwhile (its program run up to its graph), and is told to drop
it when the update fails.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from tidegate.engines.base import Engine, Handle, LaunchPreparer, LaunchRequest, SavepointStopper
from tidegate.errors import FailedPrecondition, TidegateError
from tidegate.lifecycle import JobState
from tidegate.model import Job, MessageImportance
from tidegate.store import Store
from tidegate.telemetry import call_engine

__all__ = ["UPDATE_ACTION", "UPDATE_SAVEPOINT", "Journal", "Updates"]

log = logging.getLogger(__name__)
S = JobState

UPDATE_SAVEPOINT = "update-savepoint"
"""The new job's artifact: where the old job's savepoint lies."""
UPDATE_ACTION = "update"
"""Marks the old job's run while it is stopped for an update."""


@dataclass
class _Stopping:
    """An old job's stop with a savepoint, under way in a thread of its own."""

    done: threading.Event = field(default_factory=threading.Event)
    location: str = ""
    error: Exception | None = None


class Journal(Protocol):
    """Where the update records what it does: the service's edges and job messages."""

    def advance(
        self,
        job_id: str,
        target: JobState,
        reason: str = "",
        *,
        expect: frozenset[JobState] | None = None,
        replaced_by: str | None = None,
    ) -> Job | None: ...

    def add_message(self, job_id: str, importance: MessageImportance, text: str) -> None: ...


class Updates:
    """The update procedure of the scheduler that runs the new job's launch.

    ``request_for``: the launch request of a job (the old one's, to resume it);
    ``keep_observations``: keeps a run's final metrics before it ends; ``wake``: makes the
    scheduler tick (a stop finished).
    """

    def __init__(
        self,
        store: Store,
        journal: Journal,
        engines: Mapping[str, Engine],
        snapshots: Path,
        *,
        request_for: Callable[[Job], LaunchRequest],
        keep_observations: Callable[[Job], None],
        wake: Callable[[], None],
    ) -> None:
        self.store = store
        self.journal = journal
        self.engines = engines
        self.snapshots = snapshots
        self._request_for = request_for
        self._keep_observations = keep_observations
        self._wake = wake
        self._stopping: dict[str, _Stopping] = {}
        """Per new job: the stop of the job it replaces, while under way."""
        self._lock = threading.Lock()

    def stop_old(self, new: Job, engine: Engine | None = None, request: LaunchRequest | None = None) -> str | None:
        """The savepoint of the job ``new`` replaces, once it is stopped with one; None while that is under way.

        The stop (a savepoint, which takes seconds) runs in a thread of its own, so the
        scheduler's other jobs go on meanwhile; the scheduler is woken when it is done.
        Every store write stays on the scheduler's thread: the thread only asks the engine.
        ``request``, the new job's launch request, goes to its ``engine``'s ``prepare_launch``
        as the stop begins, where that is a ``LaunchPreparer``.
        """
        kept = self.store.get_artifact(new.id, UPDATE_SAVEPOINT)
        if kept is not None:
            return kept.decode()
        with self._lock:
            stopping = self._stopping.get(new.id)
        if stopping is None:
            self._start_stop(new, engine, request)
            return None
        if not stopping.done.is_set():
            return None
        with self._lock:
            del self._stopping[new.id]
        old = self.store.get_job(new.replace_job_id)
        if stopping.error is not None:  # the old job goes on as it was; the update fails
            self._forget_launch(new)
            error = stopping.error
            run = self.store.get_run(old.id)
            if run is not None:
                self.store.update_run(old.id, run.worker, actions=run.actions - {UPDATE_ACTION})
            detail = error.message if isinstance(error, TidegateError) else str(error)
            self.journal.add_message(
                old.id, MessageImportance.JOB_MESSAGE_WARNING, f"The update to job {new.id} failed: {detail}"
            )
            raise FailedPrecondition(
                f"job {old.id} could not be stopped with a savepoint ({detail}); it keeps running"
            ) from error
        location = stopping.location
        self.store.put_artifact(new.id, UPDATE_SAVEPOINT, location.encode())
        text = f"Stopped with a savepoint for its replacement, job {new.id}: {location}"
        self.journal.add_message(old.id, MessageImportance.JOB_MESSAGE_BASIC, text)
        self.journal.add_message(new.id, MessageImportance.JOB_MESSAGE_BASIC, f"Starting from job {old.id}'s state")
        return location

    def stopping(self, new: Job) -> bool:
        """Whether the job ``new`` replaces is being stopped with a savepoint (or was, not yet seen by ``stop_old``)."""
        with self._lock:
            return new.id in self._stopping

    def under_way(self, new: Job) -> bool:
        """Whether the job ``new`` replaces is being stopped with a savepoint right now."""
        with self._lock:
            stopping = self._stopping.get(new.id)
        return stopping is not None and not stopping.done.is_set()

    def _start_stop(self, new: Job, preparer: Engine | None, request: LaunchRequest | None) -> None:
        old = self.store.get_job(new.replace_job_id)
        if old.current_state is not S.JOB_STATE_RUNNING:
            raise FailedPrecondition(f"the job to replace, {old.id}, is {old.current_state.name}, no longer RUNNING")
        run = self.store.get_run(old.id)
        engine = self.engines.get(run.engine) if run is not None and run.ref else None
        if run is None or engine is None:
            raise FailedPrecondition(f"the job to replace, {old.id}, has no run on this server's engines")
        if not isinstance(engine, SavepointStopper):
            raise FailedPrecondition(f"the {run.engine} engine cannot update a running job")
        self.store.update_run(old.id, run.worker, actions=run.actions | {UPDATE_ACTION})
        stopping = _Stopping()
        with self._lock:
            self._stopping[new.id] = stopping
        handle, target = Handle(run.engine, run.ref), self._target(new)
        if request is not None and isinstance(preparer, LaunchPreparer):
            try:
                call_engine(preparer.name, "prepare_launch", preparer.prepare_launch, request)
            except Exception:  # only a head start lost: the launch goes the usual way
                log.exception("could not prepare job %s's launch during the stop", new.id)
        threading.Thread(
            target=self._stop, args=(engine, handle, target, stopping), name=f"update-{new.id}", daemon=True
        ).start()

    def _stop(self, engine: SavepointStopper, handle: Handle, target: Path, stopping: _Stopping) -> None:
        try:
            stopping.location = call_engine(
                handle.engine, "stop_with_savepoint", engine.stop_with_savepoint, handle, target
            )
        except Exception as error:  # handed to the scheduler's thread, which fails the update
            log.exception("could not stop run %s with a savepoint", handle.ref)
            stopping.error = error
        stopping.done.set()
        self._wake()

    def _forget_launch(self, new: Job) -> None:
        for engine in self.engines.values():
            if isinstance(engine, LaunchPreparer):
                with contextlib.suppress(Exception):  # what was prepared expires by itself
                    engine.forget_launch(new.id)

    def _target(self, new: Job) -> Path:
        return self.snapshots / f"update-{new.id}"

    def holding(self, job: Job) -> bool:
        """Whether the job's run is stopped for an update still under way (its end is no failure)."""
        run = self.store.get_run(job.id)
        return run is not None and UPDATE_ACTION in run.actions

    def succeeded(self, new: Job) -> None:
        """The new job runs: the old one becomes UPDATED, replaced by it."""
        old = self.store.get_job(new.replace_job_id)
        if old.current_state is not S.JOB_STATE_RUNNING or not self.holding(old):
            return
        self._keep_observations(old)
        self.journal.advance(
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
        self._forget_launch(new)
        old = self.store.get_job(new.replace_job_id)
        run = self.store.get_run(old.id)
        kept = self.store.get_artifact(new.id, UPDATE_SAVEPOINT)
        if run is None or UPDATE_ACTION not in run.actions or old.current_state is not S.JOB_STATE_RUNNING:
            return
        if kept is None:  # never stopped: it kept running
            self.store.update_run(old.id, run.worker, actions=run.actions - {UPDATE_ACTION})
            return
        location = kept.decode()
        engine = self.engines[run.engine]
        request = replace(self._request_for(old), restore_from=location)
        handle = call_engine(engine.name, "launch", engine.launch, request)
        self.store.update_run(old.id, run.worker, ref=handle.ref, message_cursor=0, actions=frozenset())
        first = why.splitlines()[0] if why else "it failed"
        self.journal.add_message(
            old.id,
            MessageImportance.JOB_MESSAGE_WARNING,
            f"The update to job {new.id} failed ({first}); this job resumed from its savepoint {location}",
        )
        self.journal.add_message(
            new.id,
            MessageImportance.JOB_MESSAGE_ERROR,
            f"This update failed to start; job {old.id} resumed from its savepoint and keeps running",
        )
