"""The scheduler's lease, and the adoption of the runs of schedulers that are gone.

A scheduler says it lives by renewing its lease (``schedulers`` table: its worker id,
host, pid and process start time) every third of its length; with it, the leases of
the runs it keeps itself (a Beam run's supervisor keeps its own). A run whose scheduler
is gone (its lease expired, or its process on this machine died, or it stopped on
purpose) is taken over by another scheduler, which leaves a job message: the run goes
on, and its engine says at the next poll whether it still runs. A restarted server
keeps its worker id and so its runs; they get a message too.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime, timedelta

from tidegate import processes
from tidegate.model import MessageImportance, SchedulerLease
from tidegate.store import Store

__all__ = ["Leases"]

Say = Callable[[str, MessageImportance, str], None]
"""Adds a job message: ``say(job_id, importance, text)``."""


class Leases:
    """One scheduler's side of the leases."""

    def __init__(self, store: Store, worker: str, lease: timedelta, say: Say) -> None:
        self.store = store
        self.worker = worker
        self.lease = lease
        self._say = say
        self._pid = os.getpid()
        self._started = processes.started(self._pid)
        self._last_renewal: datetime | None = None
        self._last_adoption: datetime | None = None
        self._taken_back_from: SchedulerLease | None = None
        """The earlier process of this worker id, whose runs this one holds on from (once: they get a message)."""

    def renew(self, now: datetime) -> bool:
        """Renew this scheduler's lease and its own runs' when a third of it has passed; whether it did."""
        if self._last_renewal is None:  # the first renewal: did a process of this worker id run before?
            previous = self.store.scheduler_lease(self.worker)
            if previous is not None and (previous.pid, previous.started) != (self._pid, self._started):
                self._taken_back_from = previous
        elif now - self._last_renewal <= self.lease / 3:
            return False
        until = now + self.lease
        self.store.renew_scheduler(SchedulerLease(self.worker, processes.HOST, self._pid, self._started, until))
        self.store.renew_leases(self.worker, until)
        self._last_renewal = now
        return True

    def adopt(self, now: datetime) -> list[str]:
        """Take over the runs of schedulers that are gone (at most once a second); the jobs adopted."""
        every = min(timedelta(seconds=1), self.lease / 3)
        if self._last_adoption is not None and now - self._last_adoption < every:
            return []
        self._last_adoption = now
        if self._taken_back_from is not None:
            previous, self._taken_back_from = self._taken_back_from, None
            for job_id in self.store.held_runs(self.worker):
                text = f"Taken back by server {self.worker} as it restarted (its process {previous.pid} had stopped)"
                self._say(job_id, MessageImportance.JOB_MESSAGE_BASIC, text)
        adopted = []
        for run, holder in self.store.foreign_runs(self.worker):
            if holder is None:
                why = "stopped"
            elif holder.lease_until < now:
                why = "stopped renewing its lease"
            elif holder.host == processes.HOST and not processes.is_alive(holder.pid, holder.started):
                why = "is no longer running"
            else:
                continue
            if not self.store.take_over_run(run.job_id, run.worker, self.worker, now + self.lease):
                continue  # another scheduler took it
            text = f"Adopted by server {self.worker}: server {run.worker}, which ran this job, {why}"
            self._say(run.job_id, MessageImportance.JOB_MESSAGE_BASIC, text)
            adopted.append(run.job_id)
        return adopted

    def release(self) -> None:
        """This scheduler stops on purpose: its runs can be adopted at once."""
        self.store.drop_scheduler(self.worker)
