"""What the scheduler reads of a submitted job: its engine, its options, how it wants to start.

The spec is the submitted ``google.dataflow.v1beta3.Job`` (as the store keeps it).
tidegate's own settings ride in the pipeline options under the key ``tidegate``
(``{"engine": "flink", "program": "job.py", "args": [...], "uids": [...]}``), which
Dataflow's clients carry through unchanged. ``program`` is read when the job is created
and kept with it; ``uids`` names the program's stateful operators (their Flink uids),
which an update checks (see ``tidegate.service_updates``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from google.cloud import dataflow_v1beta3 as dataflow
from google.protobuf import json_format
from google.protobuf.message import DecodeError

from tidegate.errors import InvalidArgument
from tidegate.lifecycle import JobState, JobType
from tidegate.model import Job, NewJob

__all__ = [
    "CLEANUP_OPTION",
    "COLUMN_FIELDS",
    "ENGINES",
    "PIPELINE_ARTIFACT",
    "PROGRAM_ARTIFACT",
    "TIDEGATE_FIELDS",
    "JobPb",
    "JobSpec",
    "check_tidegate_section",
    "decode_spec",
    "job_from_pb",
    "parse_spec",
    "read_spec",
    "spec_of",
]

JobPb: Any = dataflow.Job.pb()
"""The raw protobuf class of ``google.dataflow.v1beta3.Job``: what a job's spec holds."""

PIPELINE_ARTIFACT = "pipeline.pb"
"""The artifact name of a Beam job's runner-API pipeline."""

PROGRAM_ARTIFACT = "program"
"""The artifact name prefix of a Flink job's program (``program.py`` or ``program.sql``)."""

CLEANUP_OPTION = "tidegate_resource_cleanup"
"""The per-job switch for RESOURCE_CLEANING_UP, as a Dataflow service option or an experiment."""

_FLEXRS_COST_OPTIMIZED = 2

ENGINES = ("beam", "flink")
"""The engines a job can name (``tidegate.engine``)."""
TIDEGATE_FIELDS = ("engine", "program", "args", "uids", "num_workers")
"""The fields of a job's own ``tidegate`` section of its pipeline options."""


def _ints(value: Any) -> Any:
    """Struct numbers arrive as floats: give whole ones back as ints."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints(v) for v in value]
    return value


@dataclass(frozen=True)
class JobSpec:
    engine: str
    streaming: bool
    flexible: bool
    cleanup: bool
    num_workers: int
    options: Mapping[str, Any] = field(default_factory=dict)
    """The pipeline options (``sdkPipelineOptions.options``), numbers fixed."""
    tidegate: Mapping[str, Any] = field(default_factory=dict)

    @property
    def pipeline_url(self) -> str:
        """Where Beam's DataflowRunner staged the pipeline (``pipelineUrl``), if it did."""
        return str(self.options.get("pipelineUrl") or self.options.get("pipeline_url") or "")

    @property
    def program(self) -> str:
        """The program the job runs (``tidegate.program``: a PyFlink program or Flink SQL script), if any."""
        return str(self.tidegate.get("program") or "")

    @property
    def program_artifact(self) -> str:
        """The artifact name the program is kept under: ``program`` with the program's suffix."""
        suffix = self.program.rsplit(".", 1)[-1] if "." in self.program.rsplit("/", 1)[-1] else ""
        return f"{PROGRAM_ARTIFACT}.{suffix}" if suffix else PROGRAM_ARTIFACT


def check_tidegate_section(spec: JobSpec) -> None:
    """Refuse (INVALID_ARGUMENT) a ``tidegate`` section a job could not run by: a typo there fails at create."""
    own = spec.tidegate
    unknown = sorted(set(own) - set(TIDEGATE_FIELDS))
    if unknown:
        raise InvalidArgument(
            f"unknown field(s) {', '.join(map(repr, unknown))} in the job's tidegate options"
            f" (known: {', '.join(TIDEGATE_FIELDS)})",
            reason="INVALID_TIDEGATE_OPTIONS",
        )
    if spec.engine not in ENGINES:
        raise InvalidArgument(
            f"unknown engine {spec.engine!r} in tidegate.engine (known: {', '.join(ENGINES)})",
            reason="INVALID_TIDEGATE_OPTIONS",
        )
    for name in ("args", "uids"):
        value = own.get(name)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise InvalidArgument(f"tidegate.{name} must be a list of strings", reason="INVALID_TIDEGATE_OPTIONS")
    if "program" in own and not isinstance(own["program"], str):
        raise InvalidArgument("tidegate.program must be a path", reason="INVALID_TIDEGATE_OPTIONS")
    if spec.engine == "flink" and not spec.program:
        raise InvalidArgument(
            "a Flink job names its program: tidegate.program, a PyFlink program (.py) or a Flink SQL script (.sql)",
            reason="INVALID_PROGRAM",
        )


def decode_spec(spec: bytes) -> Any:
    """A stored spec as a ``google.dataflow.v1beta3.Job`` message (empty if unreadable)."""
    pb = JobPb()
    try:
        pb.ParseFromString(spec)
    except DecodeError:  # never written by tidegate; keep the job readable all the same
        pb.Clear()
    return pb


def spec_of(job: Job) -> Any:
    """The job's stored spec as a ``google.dataflow.v1beta3.Job`` message."""
    return decode_spec(job.spec)


def read_spec(job: Job, default_engine: str = "beam") -> JobSpec:
    """The parts of a job's spec that decide how it runs."""
    return parse_spec(job.spec, job.type, default_engine)


_REMEMBERED_SPEC = 64 * 1024
"""Specs up to this size are parsed once: a create reads its spec three times, the scheduler a job's at each turn."""


def parse_spec(spec: bytes, job_type: JobType, default_engine: str = "beam") -> JobSpec:
    """``read_spec`` for a job not stored yet."""
    if len(spec) <= _REMEMBERED_SPEC:
        return _remembered(spec, job_type, default_engine)
    return _parse_spec(spec, job_type, default_engine)


def _parse_spec(spec: bytes, job_type: JobType, default_engine: str) -> JobSpec:
    pb = decode_spec(spec)
    environment = pb.environment
    pipeline_options: dict[str, Any] = {}
    if environment.HasField("sdk_pipeline_options"):
        try:
            pipeline_options = _ints(json_format.MessageToDict(environment.sdk_pipeline_options))
        except ValueError as error:  # NaN or Infinity in a Struct: JSON has no such numbers
            raise InvalidArgument(
                f"invalid environment.sdkPipelineOptions: {error}", reason="INVALID_PIPELINE_OPTIONS"
            ) from error
    options = pipeline_options.get("options", {}) if isinstance(pipeline_options.get("options"), dict) else {}
    own = options.get("tidegate", {}) if isinstance(options.get("tidegate"), dict) else {}
    switches = set(environment.service_options) | set(environment.experiments) | set(options.get("experiments") or [])
    workers = own.get("num_workers") or options.get("num_workers") or options.get("numWorkers") or 1
    if environment.worker_pools and environment.worker_pools[0].num_workers:
        workers = environment.worker_pools[0].num_workers
    return JobSpec(
        engine=str(own.get("engine") or default_engine),
        streaming=job_type is JobType.JOB_TYPE_STREAMING,
        flexible=environment.flex_resource_scheduling_goal == _FLEXRS_COST_OPTIMIZED,
        cleanup=CLEANUP_OPTION in switches,
        num_workers=max(1, int(workers)),
        options=options,
        tidegate=own,
    )


_remembered = functools.lru_cache(maxsize=256)(_parse_spec)
"""The last specs parsed (256 of at most ``_REMEMBERED_SPEC``, 16 MB); a JobSpec is immutable, read only."""


# Fields the store keeps in columns; everything else of a submitted job is its spec.
COLUMN_FIELDS = (
    "id",
    "project_id",
    "name",
    "type_",
    "current_state",
    "current_state_time",
    "requested_state",
    "create_time",
    "start_time",
    "labels",
    "location",
    "client_request_id",
    "replace_job_id",
    "replaced_by_job_id",
    "created_from_snapshot_id",
)


def job_from_pb(pb: Any, project_id: str, location: str, caller: str = "") -> NewJob:
    """A create request's job as a ``NewJob``: the columns, and the rest as its spec; ``caller`` made it."""
    if pb.project_id and pb.project_id != project_id:
        raise InvalidArgument(
            f"the job's projectId {pb.project_id!r} differs from the project in the path ({project_id!r})",
            reason="PROJECT_MISMATCH",
        )
    if pb.location and pb.location != location:
        raise InvalidArgument(
            f"the job's location {pb.location!r} differs from the location in the path ({location!r})",
            reason="LOCATION_MISMATCH",
        )
    try:
        job_type = JobType(pb.type_)
        requested = JobState(pb.requested_state)
    except ValueError as exc:
        raise InvalidArgument(f"invalid enum value in the job: {exc}", reason="INVALID_ENUM_VALUE") from exc
    spec = JobPb()
    spec.CopyFrom(pb)
    for name in COLUMN_FIELDS:
        spec.ClearField(name)
    return NewJob(
        project_id=project_id,
        location=location,
        name=pb.name,
        type=job_type,
        spec=spec.SerializeToString(deterministic=True),
        labels=dict(pb.labels),
        client_request_id=pb.client_request_id,
        requested_state=requested,
        replace_job_id=pb.replace_job_id,
        created_from_snapshot_id=pb.created_from_snapshot_id,
        caller=caller,
    )
