"""The jobs this process last saw committed: what a change decides on, and what a read confirms, first.

A change (``Store.change_job``) needs the job's row to decide on. Reading it under a lock
is a statement, and a round trip to PostgreSQL, of its own. Instead, the change first
decides on the job as this process last saw it committed, and writes with a
compare-and-set on that version (``UPDATE … WHERE version = …``): when nobody has changed
the job since, that one statement is the whole change, exactly as atomic. When someone
has (another server, a supervisor, a batch that rolled back), the write matches no row,
and the change reads the row under its lock and decides again, as it always did.

A read (``Store.get_job``) of a job kept here asks the database for its version alone, and
answers the job kept when the version is the same.

A committed row and its version name one content, so a job is kept only once its
transaction has committed, and never replaces a newer version. The jobs kept are bounded
in number and in the bytes of their specs.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from tidegate.model import Job

__all__ = ["SeenJobs"]

_MAX_JOBS = 4096
_MAX_SPEC_BYTES = 16 << 20
_LARGE_SPEC = _MAX_SPEC_BYTES // 64
"""A spec this large (a big pipeline's) is not kept: such a job is read again each time."""


class SeenJobs:
    """Jobs by id, the newest version of each."""

    def __init__(self, max_jobs: int = _MAX_JOBS) -> None:
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._max_jobs = max_jobs
        self._spec_bytes = 0
        self._lock = threading.Lock()

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def put(self, job: Job) -> None:
        """Keep a committed job, unless a newer version of it is kept already."""
        with self._lock:
            old = self._jobs.get(job.id)
            if old is not None:
                if old.version > job.version:
                    return
                self._spec_bytes -= len(old.spec)
                del self._jobs[job.id]
            if len(job.spec) > _LARGE_SPEC:
                return
            self._jobs[job.id] = job
            self._spec_bytes += len(job.spec)
            while len(self._jobs) > self._max_jobs or self._spec_bytes > _MAX_SPEC_BYTES:
                _, dropped = self._jobs.popitem(last=False)
                self._spec_bytes -= len(dropped.spec)
