"""A job's autoscaling events (``ListJobMessages``' ``autoscalingEvents``): its workers asked for and running."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tidegate.model import AutoscalingEvent, AutoscalingEventType
from tidegate.store.db import Database, from_micros, time_range

__all__ = ["Autoscaling"]


class Autoscaling(Database):
    """The ``autoscaling_events`` table; a change of a job (``Store.change_job``) may write one too."""

    def _autoscaling(self, job_id: str, t: int, event: AutoscalingEvent) -> None:
        self._execute(
            "INSERT INTO autoscaling_events (job_id, time, event_type, current_num_workers, target_num_workers,"
            " description, worker_pool) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (
                job_id,
                t,
                int(event.event_type),
                event.current_num_workers,
                event.target_num_workers,
                event.description.replace("\x00", "\ufffd"),
                event.worker_pool,
            ),
        )

    def autoscaling_events(
        self, job_id: str, start: datetime | None = None, end: datetime | None = None, limit: int = 1000
    ) -> list[AutoscalingEvent]:
        """The job's autoscaling events, oldest first (those at or after ``start`` and before ``end``)."""
        clauses: list[str] = ["job_id = %s"]
        values: list[Any] = [job_id]
        time_range(clauses, values, start, end)
        rows = self._execute(
            "SELECT job_id, time, event_type, current_num_workers, target_num_workers, description, worker_pool"
            f" FROM autoscaling_events WHERE {' AND '.join(clauses)} ORDER BY seq LIMIT %s",
            (*values, limit),
        ).fetchall()
        return [
            AutoscalingEvent(r[0], from_micros(r[1]), AutoscalingEventType(r[2]), int(r[3]), int(r[4]), r[5], r[6])
            for r in rows
        ]
