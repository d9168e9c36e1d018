"""What a job's processes printed: lines the scheduler reads from the engine and keeps with the job."""

from __future__ import annotations

from collections.abc import Sequence

from tidegate.model import LogEntry, LogLine
from tidegate.store.db import Database

__all__ = ["MAX_LOG_LINES", "Logs"]

MAX_LOG_LINES = 20_000
"""Lines kept per job; past them one line says so and the rest is not kept (the engine's files still hold it)."""


class Logs(Database):
    """The ``job_logs`` table, and the cursor of each run's logs in ``job_runs``."""

    def append_logs(self, job_id: str, worker: str, lines: Sequence[LogLine], cursor: str) -> bool:
        """Keep ``lines`` and move the run's log cursor to ``cursor``, in one transaction, if ``worker`` holds the run.

        False (nothing kept) when it does not: the worker that holds it now reads them.
        """
        with self._transaction():
            moved = self._execute(
                "UPDATE job_runs SET log_cursor = %s WHERE job_id = %s AND worker = %s", (cursor, job_id, worker)
            )
            if moved.rowcount != 1:
                return False
            if not lines:
                return True
            row = self._execute("SELECT count(*) FROM job_logs WHERE job_id = %s", (job_id,)).fetchone()
            room = MAX_LOG_LINES - int(row[0] if row else 0)
            if room <= 0:
                return True
            kept = [(line.source, line.text) for line in lines[:room]]
            if len(lines) > room:
                kept[-1] = ("tidegate", f"[more than {MAX_LOG_LINES} lines: the rest is not kept]")
            for source, text in kept:
                self._execute(
                    "INSERT INTO job_logs (job_id, source, text) VALUES (%s, %s, %s)",
                    (job_id, source, text.replace("\x00", "\ufffd")),
                )
            return True

    def read_logs(self, job_id: str, after: int, limit: int) -> list[LogEntry]:
        """Up to ``limit`` of the job's kept lines after ``seq`` ``after``, oldest first."""
        rows = self._execute(
            "SELECT seq, source, text FROM job_logs WHERE job_id = %s AND seq > %s ORDER BY seq LIMIT %s",
            (job_id, after, limit),
        ).fetchall()
        return [LogEntry(int(r[0]), r[1], r[2]) for r in rows]
