"""The job rows this process last saw committed: what a change decides on before it reads the row again.

A change (``Store.change_job``) needs the job's row to decide on. Reading it under a lock
is a statement, and a round trip to PostgreSQL, of its own. Instead, the change first
decides on the row as this process last saw it committed, and writes with a
compare-and-set on that row's version (``UPDATE … WHERE version = …``): when nobody has
changed the job since, that one statement is the whole change, exactly as atomic. When
someone has (another server, a supervisor, a batch that rolled back), the write matches
no row and the change reads the row under its lock and decides again, as it always did.

A committed row and its version name one content, so a row is kept only once its
transaction has committed, and never replaces a newer version. The rows kept are bounded
in number and in the bytes of their specs.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

__all__ = ["SeenRows"]

_MAX_ROWS = 4096
_MAX_SPEC_BYTES = 16 << 20


class SeenRows:
    """Job rows by id (``id`` first, ``version`` at ``version_at``, the spec at ``spec_at``), newest version kept."""

    def __init__(self, version_at: int, spec_at: int, max_rows: int = _MAX_ROWS) -> None:
        self._rows: OrderedDict[str, Sequence[Any]] = OrderedDict()
        self._version_at = version_at
        self._spec_at = spec_at
        self._max_rows = max_rows
        self._spec_bytes = 0
        self._lock = threading.Lock()

    def get(self, job_id: str) -> Sequence[Any] | None:
        return self._rows.get(job_id)

    def put(self, row: Sequence[Any]) -> None:
        """Keep a committed row, unless a newer version of the job is kept already."""
        size = len(row[self._spec_at])
        with self._lock:
            old = self._rows.get(row[0])
            if old is not None:
                if old[self._version_at] > row[self._version_at]:
                    return
                self._spec_bytes -= len(old[self._spec_at])
                del self._rows[row[0]]
            if size > _MAX_SPEC_BYTES // 64:  # a large pipeline's spec: read again when it changes
                return
            self._rows[row[0]] = row
            self._spec_bytes += size
            while len(self._rows) > self._max_rows or self._spec_bytes > _MAX_SPEC_BYTES:
                _, dropped = self._rows.popitem(last=False)
                self._spec_bytes -= len(dropped[self._spec_at])
