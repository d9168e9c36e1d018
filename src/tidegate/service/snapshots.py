"""Snapshot use cases (SnapshotJob, Get/List/DeleteSnapshot and their time to live), part of ``JobService``.

A snapshot is a savepoint of a RUNNING streaming job, taken by its engine (Flink) into
the scheduler's snapshot folder. Its record keeps where the savepoint lies, so a job
created with ``createdFromSnapshotId`` starts from it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Protocol

from tidegate.errors import FailedPrecondition, InvalidArgument, NotFound, TidegateError
from tidegate.lifecycle import JobState, JobType
from tidegate.model import Job, MessageImportance, Snapshot, SnapshotState
from tidegate.store import Store

__all__ = ["DEFAULT_SNAPSHOT_TTL", "SnapshotCases", "SnapshotTaker"]

log = logging.getLogger(__name__)

DEFAULT_SNAPSHOT_TTL = timedelta(days=7)
"""What a snapshot without a ttl is kept for (Dataflow's default)."""
MAX_SNAPSHOT_TTL = timedelta(days=30)


class SnapshotTaker(Protocol):
    """What the service asks of the scheduler to take and drop snapshots."""

    def snapshot(self, job: Job, snapshot_id: str) -> tuple[str, int]:
        """Take a savepoint of the job's run; its location and size in bytes."""

    def drop_snapshot(self, snapshot: Snapshot) -> None:
        """Delete a snapshot's files."""


class SnapshotCases:
    """The snapshot half of ``JobService`` (mixed in; it supplies the attributes below)."""

    store: Store
    clock: Callable[[], datetime]
    default_location: str
    observer: object

    def get_job(self, project_id: str, location: str | None, job_id: str) -> Job:
        raise NotImplementedError

    def add_message(self, job_id: str, importance: MessageImportance, text: str) -> None:
        raise NotImplementedError

    def _taker(self) -> SnapshotTaker | None:
        observer = self.observer
        return observer if observer is not None and hasattr(observer, "drop_snapshot") else None  # type: ignore[return-value]

    def snapshot_job(
        self,
        project_id: str,
        location: str | None,
        job_id: str,
        *,
        ttl: timedelta | None = None,
        description: str = "",
        snapshot_sources: bool = False,
        caller: str = "",
    ) -> Snapshot:
        """SnapshotJob: a savepoint of a RUNNING streaming job; FAILED (recorded) if the engine could not take it."""
        job = self.get_job(project_id, location, job_id)
        if ttl is not None and (ttl < timedelta(0) or ttl > MAX_SNAPSHOT_TTL):
            raise InvalidArgument(f"ttl must be between 0 and {MAX_SNAPSHOT_TTL.days} days", reason="INVALID_TTL")
        if job.type is not JobType.JOB_TYPE_STREAMING:
            raise FailedPrecondition(
                f"Job {job.id} is a batch job: only streaming jobs can be snapshotted", reason="SNAPSHOT_NOT_STREAMING"
            )
        if job.current_state is not JobState.JOB_STATE_RUNNING:
            raise FailedPrecondition(
                f"Job {job.id} is in {job.current_state.name}: only a RUNNING job can be snapshotted",
                reason="SNAPSHOT_NOT_RUNNING",
                metadata={"currentState": job.current_state.name},
            )
        taker = self._taker()
        if taker is None:
            raise FailedPrecondition("this server runs no engines, so it cannot take snapshots", reason="NO_ENGINE")
        snapshot = Snapshot(
            id=str(uuid.uuid4()),
            project_id=job.project_id,
            location=job.location,
            source_job_id=job.id,
            creation_time=self.clock(),
            ttl=ttl or DEFAULT_SNAPSHOT_TTL,
            state=SnapshotState.READY,
            description=description,
        )
        try:
            path, size = taker.snapshot(job, snapshot.id)
            snapshot = replace(snapshot, path=path, disk_size_bytes=size)
            text = f"Snapshot {snapshot.id} taken ({size} bytes)"
            importance = MessageImportance.JOB_MESSAGE_BASIC
        except FailedPrecondition:
            raise
        except Exception as error:  # the engine could not take it: a FAILED snapshot says so
            log.exception("snapshot of job %s failed", job.id)
            detail = error.message if isinstance(error, TidegateError) else str(error)
            snapshot = replace(snapshot, state=SnapshotState.FAILED)
            text = f"Snapshot {snapshot.id} failed: {detail}"
            importance = MessageImportance.JOB_MESSAGE_WARNING
        self.store.add_snapshot(snapshot)
        self.add_message(job.id, importance, text + (f" (requested by {caller})" if caller else ""))
        return snapshot

    def get_snapshot(self, project_id: str, location: str | None, snapshot_id: str) -> Snapshot:
        snapshot = self.store.get_snapshot(snapshot_id, project_id)
        wanted = location or self.default_location
        if snapshot.location != wanted:
            raise NotFound(
                f"No snapshot with id {snapshot_id} in project {project_id}, location {wanted}",
                reason="SNAPSHOT_NOT_FOUND",
            )
        return snapshot

    def list_snapshots(self, project_id: str, location: str | None, job_id: str = "") -> list[Snapshot]:
        """A project's snapshots in a location (the default one when None), of one job when named."""
        if job_id:
            self.get_job(project_id, location, job_id)
        return self.store.list_snapshots(project_id, location or self.default_location, job_id)

    def delete_snapshot(self, project_id: str, location: str | None, snapshot_id: str, *, caller: str = "") -> None:
        """Delete a snapshot and its files; the job it was taken of says who did."""
        snapshot = self.get_snapshot(project_id, location, snapshot_id)
        self._drop(snapshot)
        by = f" by {caller}" if caller else ""
        self.add_message(
            snapshot.source_job_id, MessageImportance.JOB_MESSAGE_BASIC, f"Snapshot {snapshot.id} deleted{by}"
        )

    def expire_snapshots(self) -> int:
        """Delete the snapshots whose time to live has passed; how many."""
        expired = self.store.expired_snapshots(self.clock())
        for snapshot in expired:
            self._drop(snapshot)
        return len(expired)

    def _drop(self, snapshot: Snapshot) -> None:
        taker = self._taker()
        if taker is not None:
            try:
                taker.drop_snapshot(snapshot)
            except Exception:  # the record goes all the same; a leftover folder is harmless
                log.exception("could not delete the files of snapshot %s", snapshot.id)
        self.store.delete_snapshot(snapshot.id)

    def snapshot_to_restore(self, project_id: str, snapshot_id: str) -> Snapshot:
        """The READY snapshot a new job starts from (``createdFromSnapshotId``)."""
        try:
            snapshot = self.store.get_snapshot(snapshot_id, project_id)
        except NotFound:
            raise InvalidArgument(
                f"createdFromSnapshotId: no snapshot {snapshot_id} in project {project_id}",
                reason="SNAPSHOT_NOT_FOUND",
            ) from None
        if snapshot.state is not SnapshotState.READY:
            raise FailedPrecondition(
                f"snapshot {snapshot_id} is {snapshot.state.name}, not READY", reason="SNAPSHOT_NOT_READY"
            )
        return snapshot
