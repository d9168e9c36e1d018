"""An update's new job made ready while the old job stops: its program run up to its graph in a warm submitter.

An update stops the old job with a savepoint (a second or so), then launches the new job
from that savepoint; the new job's program then needs seconds in the submitter before
Flink has the job (its table environment, its DDL, the planner, its graph). Both lie in
the job's output gap. ``PreparedLaunches.prepare`` runs the program's part during the
stop: a warm submitter is given the job deferred (``flink_submitter``), builds its graph
and waits. ``take`` hands it to the launch that comes with the savepoint, which then only
submits it (``Submitter.finish``).

Nothing reaches Flink before the savepoint is given, so a failed stop (the old job runs
on) or a dead server loses nothing: the submitter is stopped (``drop``), or ends with its
stdin. A prepared job that is not taken within ``keep_for`` seconds is dropped too. A
program that did not build its graph the deferred way, or whose Python mode is not its
state's, is simply launched as any job.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from tidegate.engines.base import LaunchRequest
from tidegate.engines.flink_runs import request_record
from tidegate.engines.flink_warm import NotStarted, Submitter, WarmSubmitter
from tidegate.errors import Unavailable

__all__ = ["Prepared", "PreparedLaunches"]

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """One job prepared for a launch: the Flink job id it will have, its Python mode, its submitter once built."""

    key: str
    record: dict[str, Any]
    job_id: str
    python_mode: str
    since: float = field(default_factory=time.monotonic)
    _submitter: Submitter | None = None
    _settled: threading.Event = field(default_factory=threading.Event)
    _dropped: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def settle(self, submitter: Submitter | None) -> None:
        """The preparation ended: ``submitter`` holds the built graph (None: the job is to be launched as any)."""
        with self._lock:
            self._submitter = submitter
            self._settled.set()
            dropped = self._dropped
        if dropped and submitter is not None:
            submitter.stop()

    def settled(self) -> bool:
        """Whether the preparation has ended (``settle``)."""
        return self._settled.is_set()

    def wait(self, timeout: float) -> Submitter | None:
        """The submitter holding the built graph, once the preparation ended; None: launch the job as any."""
        self._settled.wait(timeout)
        with self._lock:
            return None if self._dropped else self._submitter

    def drop(self) -> None:
        """Not to be submitted: its submitter (now, or once the preparation ends) stops, nothing sent to Flink."""
        with self._lock:
            self._dropped = True
            submitter = self._submitter if self._settled.is_set() else None
        if submitter is not None:
            submitter.stop()


def _key(request: LaunchRequest) -> dict[str, Any]:
    return request_record(replace(request, restore_from=""))


class PreparedLaunches:
    """The jobs prepared ahead of their launch, by tidegate job id."""

    def __init__(self, warm: WarmSubmitter, timeout: float, keep_for: float) -> None:
        self._warm = warm
        self._timeout = timeout
        self._keep_for = keep_for
        self._prepared: dict[str, Prepared] = {}
        self._lock = threading.Lock()

    def prepare(
        self,
        request: LaunchRequest,
        job_id: str,
        python_mode: str,
        job_line: Callable[[LaunchRequest, str, str], dict[str, Any]],
    ) -> None:
        """Run ``request``'s program up to its graph in a warm submitter, in the background; ``take`` gets it."""
        prepared = Prepared(request.job_id, _key(request), job_id, python_mode)
        with self._lock:
            stale = [p for p in self._prepared.values() if time.monotonic() - p.since > self._keep_for]
            stale += [self._prepared[request.job_id]] if request.job_id in self._prepared else []
            for old in stale:
                self._prepared.pop(old.key, None)
            self._prepared[prepared.key] = prepared
        for old in stale:
            old.drop()
        name = f"flink-prepare-{request.job_id}"
        threading.Thread(target=self._run, args=(prepared, request, job_line), name=name, daemon=True).start()

    def _run(
        self, prepared: Prepared, request: LaunchRequest, job_line: Callable[[LaunchRequest, str, str], dict[str, Any]]
    ) -> None:
        submitter = None
        try:
            submitter = self._warm.take()
            if submitter is None:
                return
            ended = submitter.prepare(job_line(request, prepared.job_id, prepared.python_mode), self._timeout)
            if ended is None:
                log.info("job %s's program built its graph ahead of its state", request.job_id)
                prepared.settle(submitter)
                return
            log.info("job %s's program did not defer its submission (%s): it runs at its launch", request.job_id, ended)
        except (NotStarted, Unavailable) as why:
            log.warning("could not prepare job %s ahead of its launch: %s", request.job_id, why)
        except Exception:  # a thread has nobody to raise to: the launch goes the usual way
            log.exception("could not prepare job %s ahead of its launch", request.job_id)
        finally:
            if not prepared.settled():
                if submitter is not None:
                    submitter.stop()
                    self._warm.start()
                prepared.settle(None)

    def take(self, request: LaunchRequest) -> Prepared | None:
        """The job prepared for ``request`` (the same but for the state it starts from), no longer kept here."""
        with self._lock:
            prepared = self._prepared.get(request.job_id)
            if prepared is None or prepared.record != _key(request):
                return None
            del self._prepared[request.job_id]
        return prepared

    def drop(self, job_id: str) -> None:
        """Drop what was prepared for the tidegate job ``job_id`` (its update failed, or it was cancelled)."""
        with self._lock:
            prepared = self._prepared.pop(job_id, None)
        if prepared is not None:
            prepared.drop()

    def close(self) -> None:
        with self._lock:
            prepared, self._prepared = list(self._prepared.values()), {}
        for each in prepared:
            each.drop()
