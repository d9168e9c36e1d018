"""The lease a run's supervisor keeps itself, in a thread of its own, and the fencing when it is lost.

A run outlives the scheduler that launched it: its supervisor renews the run's lease in
the database (``tidegate.store.leases``) every third of its length, so that the next
scheduler adopts the run instead of failing it. When the lease is lost (the job ended
and its run was released, or another launch took its place) or cannot be renewed
before it runs out (the database is unreachable), the supervisor stops its pipeline at
once: a job marked ended never has a process left behind that still writes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["keep_lease"]

log = logging.getLogger(__name__)


def keep_lease(spec: Mapping[str, Any], job_id: str, fence: Callable[[str], None]) -> threading.Thread:
    """Start renewing the lease ``spec`` describes (``RunLeaseSpec`` as JSON); ``fence(why)`` once it is lost."""
    thread = threading.Thread(target=_renew, args=(dict(spec), job_id, fence), name="run-lease", daemon=True)
    thread.start()
    return thread


def _renew(spec: dict[str, Any], job_id: str, fence: Callable[[str], None]) -> None:
    from tidegate.store.leases import RunLease  # the database driver loads in this thread, not at start

    seconds = float(spec["seconds"])
    lease = RunLease(str(spec["database_url"]), job_id, str(spec["token"]))
    # Fence a sixth of the lease before it runs out: a scheduler may fail a job whose lease has run out.
    held_until = time.monotonic() + seconds * 5 / 6
    while True:
        try:
            if not lease.renew(datetime.now(UTC) + timedelta(seconds=seconds)):
                fence("its lease was taken: the job ended, or another run took its place")
                return
            held_until = time.monotonic() + seconds * 5 / 6
        except Exception as error:  # the database is unreachable: try again while the lease holds
            log.warning("could not renew the run's lease: %s", error)
            if time.monotonic() >= held_until:
                fence(f"it could not renew its lease for {seconds:.0f} s ({error})")
                return
        time.sleep(min(seconds / 3, max(0.05, held_until - time.monotonic())))
