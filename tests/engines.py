"""A scripted engine for scheduler tests: runs do what the test says, at once.

It stands in for Beam and Flink only where the scheduler's own logic is under test;
the real engines have real-run tests of their own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tidegate.engines.base import EngineState, Handle, LaunchRequest, RunStatus, WorkerMessage
from tidegate.errors import FailedPrecondition, NotFound
from tidegate.model import MessageImportance, MetricValue, StageDetails


@dataclass
class ScriptedRun:
    request: LaunchRequest
    state: EngineState = EngineState.STARTING
    error: str = ""
    messages: list[WorkerMessage] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    drain_to: EngineState = EngineState.DRAINED
    metrics: list[MetricValue] = field(default_factory=list)
    stages: list[StageDetails] = field(default_factory=list)
    released: bool = False
    polls: int = 0
    message_reads: int = 0


class ScriptedEngine:
    name = "beam"

    def __init__(self) -> None:
        self.runs: dict[str, ScriptedRun] = {}
        self.launched: list[LaunchRequest] = []
        self.savepoints_fail = False
        self.savepoint_gate: threading.Event | None = None
        """When set, savepoints wait for it (up to 10 s, then fail): a savepoint under way."""
        self.savepoint_waiting = threading.Event()
        """Set once a savepoint waits for ``savepoint_gate``."""
        self.during: list[Callable[[str], None]] = []
        """Run, first in first out, inside the next engine calls (one each), with the call's name: what
        happens elsewhere (a user's request) while the engine is acting."""

    def run_of(self, job_id: str) -> ScriptedRun:
        return self.runs[job_id]

    def _meanwhile(self, call: str) -> None:
        if self.during:
            self.during.pop(0)(call)

    def launch(self, request: LaunchRequest) -> Handle:
        self._meanwhile("launch")
        self.runs[request.job_id] = ScriptedRun(request)
        self.launched.append(request)
        return Handle(self.name, request.job_id)

    def poll(self, handle: Handle) -> RunStatus:
        self._meanwhile("poll")
        run = self.runs[handle.ref]
        run.polls += 1
        return RunStatus(run.state, run.error)

    def cancel(self, handle: Handle) -> None:
        self._meanwhile("cancel")
        run = self.runs[handle.ref]
        run.calls.append("cancel")
        if run.state not in (EngineState.SUCCEEDED, EngineState.FAILED):
            run.state = EngineState.CANCELLED

    def drain(self, handle: Handle) -> None:
        self._meanwhile("drain")
        run = self.runs[handle.ref]
        if not run.request.streaming:
            raise FailedPrecondition("batch runs cannot be drained")
        run.calls.append("drain")
        run.state = run.drain_to

    def snapshot(self, handle: Handle, target: Path) -> str:
        if self.savepoint_gate is not None:
            self.savepoint_waiting.set()
            if not self.savepoint_gate.wait(10):
                raise RuntimeError("the savepoint was held for 10 s")
        run = self.runs[handle.ref]
        run.calls.append("snapshot")
        if run.state is not EngineState.RUNNING:
            raise FailedPrecondition("the run is not running")
        if self.savepoints_fail:
            raise RuntimeError("the savepoint could not be written")
        target.mkdir(parents=True, exist_ok=True)
        (target / "_metadata").write_bytes(b"state of " + handle.ref.encode())
        return str(target / "_metadata")

    def stop_with_savepoint(self, handle: Handle, target: Path) -> str:
        location = self.snapshot(handle, target)
        run = self.runs[handle.ref]
        run.calls[-1] = "stop_with_savepoint"
        run.state = EngineState.CANCELLED
        return location

    def messages(self, handle: Handle, after: int) -> tuple[list[WorkerMessage], int]:
        run = self._kept(handle)
        run.message_reads += 1
        return run.messages[after:], len(run.messages)

    def metrics(self, handle: Handle) -> list[MetricValue]:
        return list(self._kept(handle).metrics)

    def stages(self, handle: Handle) -> list[StageDetails]:
        return list(self._kept(handle).stages)

    def release(self, handle: Handle) -> None:
        run = self.runs[handle.ref]
        run.calls.append("release")
        run.released = True

    def _kept(self, handle: Handle) -> ScriptedRun:
        """A run that still answers: as in the real engines, a released run's records are gone."""
        run = self.runs[handle.ref]
        if run.released:
            raise NotFound(f"run {handle.ref} was released")
        return run

    def say(self, job_id: str, text: str, importance: MessageImportance = MessageImportance.JOB_MESSAGE_BASIC) -> None:
        self.runs[job_id].messages.append(WorkerMessage(datetime.now(UTC), importance, text))


class PreparingEngine(ScriptedEngine):
    """A scripted engine that can make an update's new job ready during the stop (``LaunchPreparer``)."""

    def __init__(self) -> None:
        super().__init__()
        self.prepared: list[LaunchRequest] = []
        self.forgotten: list[str] = []

    def prepare_launch(self, request: LaunchRequest) -> None:
        self.prepared.append(request)

    def forget_launch(self, job_id: str) -> None:
        self.forgotten.append(job_id)
