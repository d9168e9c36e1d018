"""Who leaves the queue: capacity per server and per project, fairness, flexible starts.

Pure: the scheduler gives it the waiting jobs and the counts, and starts what it picks.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["Capacity", "Waiting", "admit"]


@dataclass(frozen=True)
class Capacity:
    """Limits on jobs running at once (PENDING through CANCELLING); 0 means no limit."""

    max_jobs: int = 4
    max_jobs_per_project: int = 0
    flex_window: timedelta = timedelta(hours=6)
    """How long a FlexRS job may wait for a quiet moment (Dataflow's own bound is six hours)."""


@dataclass(frozen=True)
class Waiting:
    """A job that wants to start, in the order it was created."""

    job_id: str
    project_id: str
    created: datetime
    flexible: bool = False


def admit(
    waiting: Sequence[Waiting],
    running: Mapping[str, int],
    capacity: Capacity,
    now: datetime,
) -> list[str]:
    """The ids to start now, in order: round-robin across projects, first come first served within one.

    ``running`` counts each project's running jobs. A flexible job starts only when
    nothing else runs or waits ahead of it, or once its window has passed.
    """
    total = sum(running.values())
    per_project = dict(running)
    queues: OrderedDict[str, list[Waiting]] = OrderedDict()
    for job in sorted(waiting, key=lambda w: w.created):
        queues.setdefault(job.project_id, []).append(job)
    started: list[str] = []
    while queues:
        if capacity.max_jobs and total >= capacity.max_jobs:
            break
        for project in list(queues):
            queue = queues[project]
            job = queue[0]
            full = capacity.max_jobs_per_project and per_project.get(project, 0) >= capacity.max_jobs_per_project
            quiet = total == 0 and not started
            if job.flexible and not quiet and now - job.created < capacity.flex_window:
                full = True  # a flexible job waits for a quiet moment, and holds its project's line
            if full:
                del queues[project]
                continue
            started.append(job.job_id)
            total += 1
            per_project[project] = per_project.get(project, 0) + 1
            queue.pop(0)
            if not queue:
                del queues[project]
            if capacity.max_jobs and total >= capacity.max_jobs:
                break
    return started
