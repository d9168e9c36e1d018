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
    "ANONYMOUS",
    "AutoscalingEvent",
    "AutoscalingEventType",
    "Credential",
    "CredentialKind",
    "EngineRun",
    "GraphEdge",
    "GraphNode",
    "Job",
    "JobGraph",
    "JobMessage",
    "ListFilter",
    "LogEntry",
    "LogLine",
    "MessageImportance",
    "MetricValue",
    "NewJob",
    "Page",
    "Role",
    "RuntimeParams",
    "SchedulerLease",
    "Snapshot",
    "SnapshotState",
    "StageDetails",
    "StateChange",
]


T = TypeVar("T")


def _frozen(labels: Mapping[str, str]) -> Mapping[str, str]:
    if type(labels) is MappingProxyType:  # read-only already (the store's, shared by the jobs it reads)
        return labels
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
    caller: str = ""
    """Who asked for it (a service account's email, a token's name, ``anonymous``), for its history."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", _frozen(self.labels))
        object.__setattr__(self, "artifacts", MappingProxyType(dict(self.artifacts)))


@dataclass(frozen=True)
class RuntimeParams:
    """A job's ``runtimeUpdatableParams``; ``None`` for a field that is not set."""

    max_num_workers: int | None = None
    min_num_workers: int | None = None
    worker_utilization_hint: float | None = None

    def to_json(self) -> dict[str, int | float]:
        """The Job resource's ``runtimeUpdatableParams`` (camelCase, set fields only)."""
        out: dict[str, int | float] = {}
        if self.max_num_workers is not None:
            out["maxNumWorkers"] = self.max_num_workers
        if self.min_num_workers is not None:
            out["minNumWorkers"] = self.min_num_workers
        if self.worker_utilization_hint is not None:
            out["workerUtilizationHint"] = self.worker_utilization_hint
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, int | float]) -> RuntimeParams:
        """What ``to_json`` gave."""
        high, low, hint = data.get("maxNumWorkers"), data.get("minNumWorkers"), data.get("workerUtilizationHint")
        return cls(
            max_num_workers=None if high is None else int(high),
            min_num_workers=None if low is None else int(low),
            worker_utilization_hint=None if hint is None else float(hint),
        )


NO_RUNTIME_PARAMS = RuntimeParams()


class AutoscalingEventType(enum.IntEnum):
    """``google.dataflow.v1beta3.AutoscalingEvent.AutoscalingEventType``."""

    TYPE_UNKNOWN = 0
    TARGET_NUM_WORKERS_CHANGED = 1
    CURRENT_NUM_WORKERS_CHANGED = 2
    ACTUATION_FAILURE = 3
    NO_CHANGE = 4


@dataclass(frozen=True)
class AutoscalingEvent:
    """A ``google.dataflow.v1beta3.AutoscalingEvent``: a change (or a failed change) of a job's workers."""

    job_id: str
    time: datetime
    event_type: AutoscalingEventType
    current_num_workers: int
    target_num_workers: int
    description: str = ""
    worker_pool: str = ""


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
    runtime_params: RuntimeParams = NO_RUNTIME_PARAMS
    """What UpdateJob last set under ``runtime_updatable_params`` (nothing until then)."""

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
    caller: str = ""
    """Who asked for it, when a user did (a service account's email, a token's name, ``anonymous``)."""


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


@dataclass(frozen=True)
class GraphNode:
    """One step of a job's pipeline graph, as its pipeline or its engine's plan names it."""

    id: str
    name: str
    kind: str = ""
    steps: Sequence[str] = ()
    """The engine's own step names inside it (a composite's leaf transforms, a chain's operators):
    how stages (``StageDetails.steps``) and metrics (``MetricValue.step``) name it."""
    outputs: Sequence[str] = ()
    """The collections it writes, as element counts name them (``MetricValue.pcollection``)."""


@dataclass(frozen=True)
class GraphEdge:
    """Data flowing from one step to another through a collection."""

    source: str
    target: str
    collection: str = ""


@dataclass(frozen=True)
class JobGraph:
    """A job's pipeline graph and where it was read from ("pipeline", "steps" or "flink-plan")."""

    origin: str
    nodes: Sequence[GraphNode] = ()
    edges: Sequence[GraphEdge] = ()


ANONYMOUS = "anonymous"
"""The caller of a tidegate that runs open (no credential created, on a loopback address)."""


class Role(enum.IntEnum):
    """A caller's role in a project, after Dataflow's IAM roles; each holds every permission of those below."""

    VIEWER = 1
    """Read jobs, messages, metrics, execution details, snapshots and templates."""
    DEVELOPER = 2
    """Also create, update, cancel, drain and snapshot jobs, delete snapshots, launch templates."""
    ADMIN = 3
    """Also manage the project's service accounts and API tokens."""

    @property
    def label(self) -> str:
        """The role's name as people write it: ``viewer``, ``developer``, ``admin``."""
        return self.name.lower()


class CredentialKind(enum.Enum):
    """A service account (a key pair; its key file holds the private half) or an API token."""

    SERVICE_ACCOUNT = "service_account"
    TOKEN = "token"


@dataclass(frozen=True)
class Credential:
    """A service account or an API token, as the store keeps it (its secret apart: a public key, a hash)."""

    id: str
    """A service account's key id (the key file's ``private_key_id``, the JWT's ``kid``); a token's own id."""
    kind: CredentialKind
    name: str
    project_id: str
    role: Role
    create_time: datetime
    disabled: bool = False
    created_by: str = ""

    @property
    def email(self) -> str:
        """A service account's ``client_email`` (``NAME@PROJECT.iam.tidegate``); '' for a token."""
        if self.kind is not CredentialKind.SERVICE_ACCOUNT:
            return ""
        return f"{self.name}@{self.project_id}.iam.tidegate"

    @property
    def caller(self) -> str:
        """How requests made with it are recorded: a service account's email, a token's name."""
        return self.email or self.name
