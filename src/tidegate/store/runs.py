"""Engine runs: which scheduler runs a job on which engine, under a lease."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from tidegate.lifecycle import JobState
from tidegate.model import EngineRun
from tidegate.store.db import Database, from_micros, micros

__all__ = ["Runs"]

_RUN_COLUMNS = "job_id, engine, ref, worker, lease_until, message_cursor, actions"


def _run(row: Sequence[Any]) -> EngineRun:
    return EngineRun(
        job_id=row[0],
        engine=row[1],
        ref=row[2],
        worker=row[3],
        lease_until=from_micros(row[4]),
        message_cursor=int(row[5]),
        actions=frozenset(a for a in row[6].split(",") if a),
    )


class Runs(Database):
    """The ``job_runs`` table."""

    def claim_run(self, job_id: str, engine: str, worker: str, lease_until: datetime) -> bool:
        """Take a job for ``worker`` unless another worker already holds it. Returns whether it did."""
        with self._transaction():
            row = self._execute("SELECT worker FROM job_runs WHERE job_id = %s", (job_id,)).fetchone()
            if row is not None:
                return bool(row[0] == worker)
            self._execute(
                f"INSERT INTO job_runs ({_RUN_COLUMNS}) VALUES (%s, %s, '', %s, %s, 0, '')",
                (job_id, engine, worker, micros(lease_until)),
            )
            return True

    def get_run(self, job_id: str) -> EngineRun | None:
        row = self._execute(f"SELECT {_RUN_COLUMNS} FROM job_runs WHERE job_id = %s", (job_id,)).fetchone()
        return None if row is None else _run(row)

    def update_run(
        self,
        job_id: str,
        worker: str,
        *,
        ref: str | None = None,
        message_cursor: int | None = None,
        actions: frozenset[str] | None = None,
        release: bool = False,
    ) -> bool:
        """Change a run that ``worker`` holds; ``release`` gives up the lease. False if it does not hold it."""
        sets: dict[str, Any] = {}
        if ref is not None:
            sets["ref"] = ref
        if message_cursor is not None:
            sets["message_cursor"] = message_cursor
        if actions is not None:
            sets["actions"] = ",".join(sorted(actions))
        if release:
            sets["worker"] = ""
        if not sets:
            return True
        assignments = ", ".join(f"{column} = %s" for column in sets)
        cursor = self._execute(
            f"UPDATE job_runs SET {assignments} WHERE job_id = %s AND worker = %s", (*sets.values(), job_id, worker)
        )
        return cursor.rowcount == 1

    def renew_leases(self, worker: str, lease_until: datetime) -> int:
        """Extend every lease ``worker`` holds; returns how many."""
        cursor = self._execute("UPDATE job_runs SET lease_until = %s WHERE worker = %s", (micros(lease_until), worker))
        return cursor.rowcount

    def expired_runs(self, now: datetime) -> list[EngineRun]:
        """Runs whose worker stopped renewing its lease."""
        rows = self._execute(
            f"SELECT {_RUN_COLUMNS} FROM job_runs WHERE worker != '' AND lease_until < %s", (micros(now),)
        ).fetchall()
        return [_run(r) for r in rows]

    def take_over_run(self, job_id: str, old_worker: str, worker: str, lease_until: datetime) -> bool:
        """Take an expired run from ``old_worker``; exactly one contender wins."""
        cursor = self._execute(
            "UPDATE job_runs SET worker = %s, lease_until = %s WHERE job_id = %s AND worker = %s",
            (worker, micros(lease_until), job_id, old_worker),
        )
        return cursor.rowcount == 1

    def job_ids_in_states(self, states: Sequence[JobState], limit: int = 1000) -> list[str]:
        """Ids of jobs in these (non-terminal) states, oldest first."""
        marks = ", ".join(str(int(s)) for s in states)
        rows = self._execute(
            f"SELECT id FROM jobs WHERE current_state IN ({marks}) AND current_state NOT IN (3, 4, 5, 6, 8)"
            " ORDER BY seq LIMIT %s",
            (limit,),
        ).fetchall()
        return [r[0] for r in rows]

    def count_jobs_by_project(self, states: Sequence[JobState]) -> dict[str, int]:
        """How many jobs each project has in these states (the scheduler's capacity check)."""
        marks = ", ".join(str(int(s)) for s in states)
        rows = self._execute(
            f"SELECT project_id, count(*) FROM jobs WHERE current_state IN ({marks})"
            " AND current_state NOT IN (3, 4, 5, 6, 8) GROUP BY project_id"
        ).fetchall()
        return {r[0]: int(r[1]) for r in rows}
