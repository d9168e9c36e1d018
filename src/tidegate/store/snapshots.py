"""Snapshots: savepoints of streaming jobs, with a time to live."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from tidegate.errors import NotFound
from tidegate.model import Snapshot, SnapshotState
from tidegate.store.db import Database, from_micros, micros

__all__ = ["Snapshots"]

_COLUMNS = (
    "id, project_id, location, source_job_id, creation_time, ttl_micros, state, description, disk_size_bytes, path"
)


def _snapshot(row: Sequence[Any]) -> Snapshot:
    return Snapshot(
        id=row[0],
        project_id=row[1],
        location=row[2],
        source_job_id=row[3],
        creation_time=from_micros(row[4]),
        ttl=None if row[5] is None else timedelta(microseconds=int(row[5])),
        state=SnapshotState(int(row[6])),
        description=row[7],
        disk_size_bytes=int(row[8]),
        path=row[9],
    )


class Snapshots(Database):
    """The ``snapshots`` table."""

    def add_snapshot(self, snapshot: Snapshot) -> None:
        ttl = None if snapshot.ttl is None else snapshot.ttl // timedelta(microseconds=1)
        self._execute(
            f"INSERT INTO snapshots ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                snapshot.id,
                snapshot.project_id,
                snapshot.location,
                snapshot.source_job_id,
                micros(snapshot.creation_time),
                ttl,
                int(snapshot.state),
                snapshot.description,
                snapshot.disk_size_bytes,
                snapshot.path,
            ),
        )

    def get_snapshot(self, snapshot_id: str, project_id: str | None = None) -> Snapshot:
        row = self._execute(f"SELECT {_COLUMNS} FROM snapshots WHERE id = %s", (snapshot_id,)).fetchone()
        if row is None or (project_id is not None and row[1] != project_id):
            raise NotFound(
                f"No snapshot with id {snapshot_id} in project {project_id or '-'}", reason="SNAPSHOT_NOT_FOUND"
            )
        return _snapshot(row)

    def list_snapshots(self, project_id: str, location: str | None, job_id: str = "") -> list[Snapshot]:
        """A project's snapshots (in a location, of a job, when named), oldest first."""
        sql, params = f"SELECT {_COLUMNS} FROM snapshots WHERE project_id = %s", [project_id]
        if location is not None:
            sql, params = sql + " AND location = %s", [*params, location]
        if job_id:
            sql, params = sql + " AND source_job_id = %s", [*params, job_id]
        rows = self._execute(sql + " ORDER BY creation_time, id", params).fetchall()
        return [_snapshot(row) for row in rows]

    def delete_snapshot(self, snapshot_id: str) -> bool:
        return self._execute("DELETE FROM snapshots WHERE id = %s", (snapshot_id,)).rowcount == 1

    def expired_snapshots(self, now: datetime) -> list[Snapshot]:
        rows = self._execute(
            f"SELECT {_COLUMNS} FROM snapshots WHERE ttl_micros IS NOT NULL AND creation_time + ttl_micros < %s",
            (micros(now),),
        ).fetchall()
        return [_snapshot(row) for row in rows]
