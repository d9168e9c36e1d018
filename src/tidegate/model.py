"""Domain values: what the store keeps and the service hands out.

These are plain frozen dataclasses; the API adapters turn them into Dataflow's wire
messages. Times are timezone-aware UTC ``datetime`` values.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Generic, TypeVar

from tidegate.lifecycle import Actor, JobState, JobType

__all__ = [
    "EngineRun",
    "Job",
    "JobMessage",
    "ListFilter",
    "LogEntry",
    "LogLine",
    "MessageImportance",
    "MetricValue",
    "NewJob",
    "Page",
    "SchedulerLease",
    "Snapshot",
    "SnapshotState",
    "StageDetails",
    "StateChange",
]


T = TypeVar("T")


def _frozen(labels: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(labels))


class MessageImportance(enum.IntEnum):
    """``google.dataflow.v1beta3.JobMessageImportance``."""

    JOB_MESSAGE_IMPORTANCE_UNKNOWN = 0
    JOB_MESSAGE_DEBUG = 1
    JOB_MESSAGE_DETAILED = 2
    JOB_MESSAGE_WARNING = 3
    JOB_MESSAGE_ERROR = 4
    JOB_MESSAGE_BASIC = 5

    @property
    def rank(self) -> int:
        """Order by severity (BASIC sits between DETAILED and WARNING)."""
        return _RANK[self]


_RANK = {
    MessageImportance.JOB_MESSAGE_IMPORTANCE_UNKNOWN: 0,
    MessageImportance.JOB_MESSAGE_DEBUG: 1,
    MessageImportance.JOB_MESSAGE_DETAILED: 2,
    MessageImportance.JOB_MESSAGE_BASIC: 3,
    MessageImportance.JOB_MESSAGE_WARNING: 4,
    MessageImportance.JOB_MESSAGE_ERROR: 5,
}


class ListFilter(enum.IntEnum):
    """``ListJobsRequest.Filter``."""

    UNKNOWN = 0
    ALL = 1
    TERMINATED = 2
    ACTIVE = 3


@dataclass(frozen=True)
class NewJob:
    """A job as a client asked for it, before the store gives it an id."""

    project_id: str
    location: str
    name: str
    type: JobType
    spec: bytes
    """The submitted ``google.dataflow.v1beta3.Job``, serialized, without the fields below."""
    labels: Mapping[str, str] = field(default_factory=dict)
    client_request_id: str = ""
    requested_state: JobState = JobState.JOB_STATE_RUNNING
    replace_job_id: str = ""
    created_from_snapshot_id: str = ""
    artifacts: Mapping[str, bytes] = field(default_factory=dict)
    """Files the job brings (``pipeline.pb``, a program), stored with it in the same transaction."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", _frozen(self.labels))
        object.__setattr__(self, "artifacts", MappingProxyType(dict(self.artifacts)))


@dataclass(frozen=True)
class Job:
    """A job as the store holds it."""

    id: str
    project_id: str
    location: str
    name: str
    type: JobType
    current_state: JobState
    current_state_time: datetime
    requested_state: JobState
    create_time: datetime
    start_time: datetime
    spec: bytes
    labels: Mapping[str, str]
    client_request_id: str
    replace_job_id: str
    replaced_by_job_id: str
    created_from_snapshot_id: str
    version: int
    """Bumped by every change; the store's compare-and-set checks it."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", _frozen(self.labels))


@dataclass(frozen=True)
class StateChange:
    """One row of a job's state history."""

    job_id: str
    source: JobState | None
    target: JobState
    actor: Actor
    time: datetime
    reason: str


@dataclass(frozen=True)
class JobMessage:
    """A ``google.dataflow.v1beta3.JobMessage``."""

    id: str
    job_id: str
    time: datetime
    importance: MessageImportance
    text: str


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing and the token of the next (empty on the last page)."""

    items: tuple[T, ...]
    next_page_token: str = ""


@dataclass(frozen=True)
class EngineRun:
    """Which engine runs a job, under whose lease, and what has been asked of it."""

    job_id: str
    engine: str
    ref: str
    """The engine's handle of the run ('' until it is launched)."""
    worker: str
    """The scheduler holding the lease ('' once the run is over)."""
    lease_until: datetime
    message_cursor: int
    actions: frozenset[str]
    """Requests already sent to the engine ("cancel", "drain"), so each is sent once."""
    log_cursor: str = ""
    """Where the engine's logs of the run were last read (the engine's own cursor)."""


@dataclass(frozen=True)
class LogLine:
    """One line a job's processes printed: ``source`` names the stream ("stdout", "stderr", "driver")."""

    source: str
    text: str


@dataclass(frozen=True)
class LogEntry:
    """A kept log line and its place in the job's log (``seq`` grows with every line)."""

    seq: int
    source: str
    text: str


@dataclass(frozen=True)
class SchedulerLease:
    """A scheduler that said it lives: its worker id, its process, and until when it holds its lease."""

    worker: str
    host: str
    pid: int
    started: str
    """The process's start time (clock ticks since boot), so that a reused pid is not taken for it."""
    lease_until: datetime


class SnapshotState(enum.IntEnum):
    """``google.dataflow.v1beta3.SnapshotState``."""

    UNKNOWN_SNAPSHOT_STATE = 0
    PENDING = 1
    RUNNING = 2
    READY = 3
    FAILED = 4
    DELETED = 5


@dataclass(frozen=True)
class Snapshot:
    """A snapshot of a streaming job's state (a Flink savepoint) and where it lies."""

    id: str
    project_id: str
    location: str
    source_job_id: str
    creation_time: datetime
    ttl: timedelta | None
    """How long it is kept (None: until it is deleted)."""
    state: SnapshotState
    description: str = ""
    disk_size_bytes: int = 0
    path: str = ""
    """The savepoint's location, as the engine gives it to a restore."""


@dataclass(frozen=True)
class MetricValue:
    """One metric: an element count of a PCollection, or a user counter of a step."""

    name: str
    step: str
    value: int | float
    origin: str = "user"  # "user" or "dataflow/v1b3"
    pcollection: str = ""
    namespace: str = ""
    """A user metric's namespace (Beam's ``Metrics.counter(namespace, name)``)."""


@dataclass(frozen=True)
class StageDetails:
    """One stage of a run, as its engine reports it (Dataflow's execution details)."""

    stage_id: str
    state: str
    start_time: datetime | None = None
    end_time: datetime | None = None
    steps: Sequence[str] = ()
