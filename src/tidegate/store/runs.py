"""Engine runs: which scheduler runs a job on which engine, under a lease."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from tidegate.lifecycle import JobState
from tidegate.model import EngineRun, SchedulerLease
from tidegate.store.db import Database, from_micros, micros

__all__ = ["Runs"]

_RUN_COLUMNS = "job_id, engine, ref, worker, lease_until, message_cursor, actions, log_cursor"
_RUN_WIDTH = len(_RUN_COLUMNS.split(","))


def _run(row: Sequence[Any]) -> EngineRun:
    return EngineRun(
        job_id=row[0],
        engine=row[1],
        ref=row[2],
        worker=row[3],
        lease_until=from_micros(row[4]),
        message_cursor=int(row[5]),
        actions=frozenset(a for a in row[6].split(",") if a),
        log_cursor=row[7],
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
                f"INSERT INTO job_runs ({_RUN_COLUMNS}) VALUES (%s, %s, '', %s, %s, 0, '', '')",
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
        """Extend the leases of the runs ``worker`` holds and keeps itself (not those a supervisor keeps); how many."""
        cursor = self._execute(
            "UPDATE job_runs SET lease_until = %s WHERE worker = %s AND job_id NOT IN (SELECT job_id FROM run_tokens)",
            (micros(lease_until), worker),
        )
        return cursor.rowcount

    def set_run_token(self, job_id: str, token: str) -> None:
        """The token of the run about to be launched, whose own supervisor keeps its lease with it."""
        with self._transaction():
            self._execute("DELETE FROM run_tokens WHERE job_id = %s", (job_id,))
            self._execute("INSERT INTO run_tokens (job_id, token) VALUES (%s, %s)", (job_id, token))

    def supervised(self, job_id: str) -> bool:
        """Whether the job's run has a supervisor of its own that keeps its lease."""
        return self._execute("SELECT 1 FROM run_tokens WHERE job_id = %s", (job_id,)).fetchone() is not None

    # -- schedulers ------------------------------------------------------------------

    def renew_scheduler(self, lease: SchedulerLease) -> None:
        """Record that a scheduler lives, until ``lease.lease_until``."""
        with self._transaction():
            params = (lease.host, lease.pid, lease.started, micros(lease.lease_until), lease.worker)
            cursor = self._execute(
                "UPDATE schedulers SET host = %s, pid = %s, started = %s, lease_until = %s WHERE worker = %s", params
            )
            if cursor.rowcount == 0:
                self._execute(
                    "INSERT INTO schedulers (host, pid, started, lease_until, worker) VALUES (%s, %s, %s, %s, %s)",
                    params,
                )

    def scheduler_lease(self, worker: str) -> SchedulerLease | None:
        """The lease a scheduler of this worker id last recorded, if any."""
        row = self._execute(
            "SELECT host, pid, started, lease_until FROM schedulers WHERE worker = %s", (worker,)
        ).fetchone()
        return None if row is None else SchedulerLease(worker, row[0], int(row[1]), row[2], from_micros(row[3]))

    def held_runs(self, worker: str) -> list[str]:
        """The jobs whose runs ``worker`` holds."""
        return [r[0] for r in self._execute("SELECT job_id FROM job_runs WHERE worker = %s", (worker,)).fetchall()]

    def drop_scheduler(self, worker: str) -> None:
        """A scheduler that stops on purpose: its runs can be adopted at once."""
        self._execute("DELETE FROM schedulers WHERE worker = %s", (worker,))

    def foreign_runs(self, worker: str) -> list[tuple[EngineRun, SchedulerLease | None]]:
        """The runs other schedulers hold, each with its holder's lease (None: it has none)."""
        columns = ", ".join(f"r.{c.strip()}" for c in _RUN_COLUMNS.split(","))
        rows = self._execute(
            f"SELECT {columns}, s.host, s.pid, s.started, s.lease_until FROM job_runs r"
            " LEFT JOIN schedulers s ON s.worker = r.worker WHERE r.worker != '' AND r.worker != %s",
            (worker,),
        ).fetchall()
        found = []
        for row in rows:
            run = _run(row)
            holder = None
            host, pid, started, until = row[_RUN_WIDTH:]
            if host is not None:
                holder = SchedulerLease(run.worker, host, int(pid), started, from_micros(until))
            found.append((run, holder))
        return found

    def take_over_run(self, job_id: str, old_worker: str, worker: str, lease_until: datetime) -> bool:
        """Take a run from ``old_worker`` (whose scheduler is gone); exactly one contender wins."""
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
