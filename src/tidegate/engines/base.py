"""The engine seam: launch, poll, cancel, drain, snapshot, messages and metrics.

An engine runs one job per ``Handle``. The scheduler calls these methods from its own
thread; an engine must not block for long in any of them (start work in a process or
thread and answer). An engine never touches the store: it reports what it sees and
the scheduler turns that into lifecycle edges.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

from tidegate.model import JobGraph, LogLine, MessageImportance, MetricValue, RuntimeParams, StageDetails
from tidegate.telemetry import ClusterHealth

__all__ = [
    "WORKING_FOLDER_EXPERIMENT",
    "ClusterReporting",
    "Engine",
    "EngineState",
    "Handle",
    "LaunchPreparer",
    "LaunchRequest",
    "LogReader",
    "Planning",
    "Rescaling",
    "RunLeaseSpec",
    "RunStatus",
    "SavepointStopper",
    "Supervising",
    "WorkerMessage",
    "working_folder",
]

WORKING_FOLDER_EXPERIMENT = "tidegate_working_folder"
"""An experiment ``tidegate_working_folder=PATH`` that ``tidegate run`` adds: the folder it was run
from, where the job's relative paths resolve (as they would for a local run) when the
server's machine has that folder."""


def working_folder(options: Mapping[str, object]) -> str:
    """The ``tidegate_working_folder`` a job's pipeline options name (their last), or ""."""
    experiments = options.get("experiments")
    found = ""
    for experiment in experiments if isinstance(experiments, list) else ():
        name, _, value = str(experiment).partition("=")
        if name == WORKING_FOLDER_EXPERIMENT:
            found = value
    return found


class EngineState(enum.Enum):
    """What an engine can say of a run; the scheduler maps it onto ``JobState``."""

    STARTING = "starting"  # workers being provisioned (the job is PENDING)
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"  # stopped on request, nothing more will be written
    DRAINED = "drained"  # sources stopped, in-flight data written


@dataclass(frozen=True)
class RunLeaseSpec:
    """How a run's own supervisor keeps its lease (``tidegate.store.leases``), for an engine that supervises runs."""

    database_url: str
    token: str
    seconds: float


@dataclass(frozen=True)
class LaunchRequest:
    """Everything an engine needs to start a job."""

    job_id: str
    job_name: str
    streaming: bool
    workdir: Path
    """A folder that belongs to this run alone (logs, staged files, outputs of the engine)."""
    pipeline: bytes = b""
    """For Beam: a serialized ``beam_runner_api_pb2.Pipeline``."""
    program: str = ""
    """For Flink: the path of a PyFlink program or a Flink SQL script."""
    options: Mapping[str, object] = field(default_factory=dict)
    """Pipeline options as the client sent them (ints already converted from floats)."""
    args: Sequence[str] = ()
    num_workers: int = 1
    restore_from: str = ""
    """A savepoint or snapshot location to start from (update, or a job created from a snapshot)."""
    state_uids: Mapping[str, str] = field(default_factory=dict)
    """For Flink: operators to run under another uid than the program gives them, the one their
    saved state has (``{uid in the program: uid to run under}``; operators renamed by updates)."""
    lease: RunLeaseSpec | None = None
    """For an engine whose runs have a supervisor (``Supervising``): the lease the supervisor keeps."""


@dataclass(frozen=True)
class Handle:
    """An engine's reference to a run; ``ref`` is engine-specific and kept in the store."""

    engine: str
    ref: str


@dataclass(frozen=True)
class RunStatus:
    state: EngineState
    error: str = ""
    """For FAILED: the error and its traceback, shown as a JOB_MESSAGE_ERROR."""


@dataclass(frozen=True)
class WorkerMessage:
    time: datetime
    importance: MessageImportance
    text: str


class Engine(Protocol):
    """What the scheduler needs of an engine."""

    name: str

    def launch(self, request: LaunchRequest) -> Handle:
        """Start the run and return at once; the run is STARTING until ``poll`` says otherwise."""

    def poll(self, handle: Handle) -> RunStatus:
        """The run's state now."""

    def cancel(self, handle: Handle) -> None:
        """Stop the run and every process of it; nothing more is written. Idempotent."""

    def drain(self, handle: Handle) -> None:
        """Stop pulling from sources and finish in-flight data (streaming runs only)."""

    def snapshot(self, handle: Handle, target: Path) -> str:
        """Capture the run's state (a savepoint) into ``target``; returns its location."""

    def messages(self, handle: Handle, after: int) -> tuple[list[WorkerMessage], int]:
        """Messages the run wrote since cursor ``after``, and the new cursor."""

    def metrics(self, handle: Handle) -> list[MetricValue]:
        """The run's metrics as they are now (final once the run has ended)."""

    def stages(self, handle: Handle) -> list[StageDetails]:
        """Execution details per stage."""

    def release(self, handle: Handle) -> None:
        """Delete the run's temporary files and reap its processes (RESOURCE_CLEANING_UP)."""


@runtime_checkable
class ClusterReporting(Protocol):
    """An engine with a cluster of its own whose health is worth watching (``/metrics``). Optional."""

    def cluster_health(self) -> ClusterHealth:
        """Whether the cluster answers now, and its workers and slots."""


@runtime_checkable
class Supervising(Protocol):
    """An engine whose every run has a supervisor process of its own, which keeps the run's lease.

    Such a run outlives the scheduler that launched it: another scheduler adopts it. Its
    supervisor stops the run when it loses the lease (``tidegate.store.leases``).
    """

    supervises_runs: bool


@runtime_checkable
class SavepointStopper(Protocol):
    """An engine that can update a job: stop it with a savepoint, then launch the new code from it.

    Optional: the scheduler checks for it (``isinstance(engine, SavepointStopper)``) before an update.
    """

    def stop_with_savepoint(self, handle: Handle, target: Path) -> str:
        """Stop the run with a savepoint into ``target`` (no drain); wait for it and return its location.

        The run then ends CANCELLED; the savepoint holds its state for the replacement.
        """


@runtime_checkable
class LaunchPreparer(Protocol):
    """An engine that can make an update's new job ready while the old job is stopped with a savepoint.

    Optional: the update procedure checks for it. ``prepare_launch`` gets the new job's
    request without its ``restore_from`` and returns at once; nothing may start before
    ``launch`` brings the same request with the savepoint. ``forget_launch`` drops what was
    prepared for a job that is not launched after all (the stop failed, or it was cancelled).
    """

    def prepare_launch(self, request: LaunchRequest) -> None:
        """Begin what can be done of ``request``'s launch before its state is there (in the background)."""

    def forget_launch(self, job_id: str) -> None:
        """Drop what ``prepare_launch`` made ready for the job ``job_id``."""


@runtime_checkable
class LogReader(Protocol):
    """An engine that can hand out what a run's processes printed (their stdout and stderr).

    Optional: the scheduler checks for it and keeps the lines with the job.
    """

    def logs(self, handle: Handle, cursor: str) -> tuple[list[LogLine], str]:
        """Lines printed since ``cursor`` ('' at first) and the cursor to ask next; the last partial
        line only once the run has ended."""


@runtime_checkable
class Planning(Protocol):
    """An engine that knows a run's plan (Flink's job graph), for a job that brings no pipeline of its own.

    Optional: the scheduler checks for it (``isinstance(engine, Planning)``).
    """

    def plan(self, handle: Handle) -> JobGraph | None:
        """The run's graph of steps, or None while the engine has none (not submitted yet)."""


@runtime_checkable
class Rescaling(Protocol):
    """An engine that can change a running job's workers in place (UpdateJob's ``runtimeUpdatableParams``).

    Optional: the service refuses a batch job's rescale, and the scheduler records an
    ACTUATION_FAILURE for a run whose engine is not one (``isinstance(engine, Rescaling)``).
    """

    def workers(self, handle: Handle) -> int:
        """How many workers (Flink: the parallelism) the run has running now; 0 while it restarts."""

    def rescale(self, handle: Handle, params: RuntimeParams) -> tuple[int, int]:
        """Ask for the bounds ``params`` set, in place; returns the workers running now and the number it is to reach.

        Returns once the engine has taken the request; the run reaches the number later
        (``workers`` says when). Raises ``FailedPrecondition`` when the engine cannot.
        """
