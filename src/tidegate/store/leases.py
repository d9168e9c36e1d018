"""A run's lease as its own supervisor keeps it, from a process of the run (it may outlive every scheduler).

The scheduler gives a run a token before it launches it (``Runs.set_run_token``); the
run's supervisor renews the lease with it. A renewal fails, for good, once the run is
no longer the job's (the job ended and its run was released, or another launch took its
place): the supervisor must then stop its pipeline (fencing), so that a job marked
ended has no process left.
"""

from __future__ import annotations

from datetime import datetime

from tidegate.store.db import Database, micros

__all__ = ["RunLease"]


class RunLease(Database):
    """The lease of one run, renewed through a connection of its own."""

    def __init__(self, database_url: str, job_id: str, token: str) -> None:
        super().__init__(database_url)
        self.job_id = job_id
        self.token = token

    def renew(self, until: datetime) -> bool:
        """Extend the lease to ``until``; False when the run is no longer this one (fenced). Raises on I/O errors."""
        cursor = self._execute(
            "UPDATE job_runs SET lease_until = %s WHERE job_id = %s AND worker != ''"
            " AND EXISTS (SELECT 1 FROM run_tokens t WHERE t.job_id = %s AND t.token = %s)",
            (micros(until), self.job_id, self.job_id, self.token),
        )
        return cursor.rowcount == 1
