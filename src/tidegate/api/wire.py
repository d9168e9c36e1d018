"""Dataflow's wire messages (``google.cloud.dataflow_v1beta3``) to and from domain values.

Shared by the REST and gRPC adapters. Uses the raw protobuf classes behind the
client's proto-plus types: they parse and print Dataflow's JSON exactly (camelCase,
enums as names or numbers, int64 as strings, RFC 3339 times).
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from google.cloud import dataflow_v1beta3 as dataflow
from google.protobuf import json_format
from google.protobuf.message import Message

from tidegate.errors import InvalidArgument
from tidegate.jobspec import JobPb, job_from_pb, spec_of
from tidegate.model import AutoscalingEvent, Job, JobMessage, MetricValue, Snapshot, StageDetails, StateChange

__all__ = [
    "MAX_BODY_BYTES",
    "Encodings",
    "JobPb",
    "JobView",
    "SnapshotPb",
    "enum_value",
    "job_from_pb",  # re-exported: the API adapters call it as wire.job_from_pb
    "job_to_json_dict",
    "job_to_pb",
    "message_to_pb",
    "parse_json",
    "rfc3339",
    "snapshot_to_pb",
    "summary_dict",
    "to_json_dict",
]

MAX_BODY_BYTES = 20 * 1024 * 1024
"""Dataflow's own limit on a request (REST body and gRPC message alike)."""

JobMessagePb: Any = dataflow.JobMessage.pb()
M = TypeVar("M", bound=Message)

# What a JOB_VIEW_SUMMARY answer keeps of the spec.
_SUMMARY_SPEC_FIELDS = ("job_metadata",)


class JobView:
    UNKNOWN = 0
    SUMMARY = 1
    ALL = 2
    DESCRIPTION = 3


def parse_json(payload: bytes | str, message: M, what: str) -> M:
    """Parse Dataflow JSON into ``message``; anything but a JSON object of its fields is INVALID_ARGUMENT.

    Stricter than protobuf's own parser where that one is lenient: the payload must be
    an object (protobuf reads ``[]`` as an empty message and ``"ab"`` as fields ``a`` and
    ``b``), numbers must be finite (``NaN``, ``Infinity`` and ``1e999`` are not JSON, and
    a stored one could never be printed again), and an enum is a name or a whole number,
    never ``true`` or ``5.7`` (protobuf's parser truncates that to 5).
    """
    try:
        # Decoded as json.loads decodes bytes, once: the surrogate check below reads the same text.
        text = payload if isinstance(payload, str) else payload.decode(json.detect_encoding(payload), "surrogatepass")
        data = json.loads(
            text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant, parse_float=_finite_float
        )
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise _invalid_json(what, f"not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise _invalid_json(what, f"expected a JSON object, not {_json_kind(data)}")
    try:  # a \ud800 escape is JSON, but no text: no store, no protobuf message and no answer can hold it
        if _SURROGATE_ESCAPE.search(text):
            json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise _invalid_json(
            what, "a string holds an unpaired surrogate (\\ud800-\\udfff): it is not Unicode text"
        ) from None
    try:
        json_format.ParseDict(data, message)
    except json_format.ParseError as exc:
        # The first line: protobuf goes on to list every field of the message.
        raise _invalid_json(what, str(exc).split("\n", 1)[0].rstrip(".")) from exc
    except (ValueError, OverflowError, RecursionError) as exc:  # 1e400 written as an integer, say
        raise _invalid_json(what, f"a value is out of range ({exc})") from exc
    _strict_enums(data, message.DESCRIPTOR, message.DESCRIPTOR.name, what)
    return message


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]|[\ud800-\udfff]")
"""Where a lone surrogate can come from: an escape of one, or one in the text (``json.loads`` decodes bytes with
``surrogatepass``). A match (a pair, or an escaped backslash before ``ud8…``, too) sends the parsed payload to
the full check; no match, no surrogate."""


def _invalid_json(what: str, detail: str) -> InvalidArgument:
    return InvalidArgument(f"Invalid JSON payload received for {what}: {detail}", reason="INVALID_JSON")


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, list):
        return "an array"
    return "a string" if isinstance(value, str) else "a number"


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text} is out of range")
    return value


@functools.cache
def _fields(descriptor: Any) -> dict[str, Any]:
    """A message's fields by JSON name and by proto name, as protobuf's parser accepts them."""
    fields = {field.name: field for field in descriptor.fields}
    fields.update({field.json_name: field for field in descriptor.fields})
    return fields


def _strict_enums(data: Any, descriptor: Any, path: str, what: str) -> None:
    """Refuse ``true``/``false`` and fractions where an enum belongs (protobuf's parser takes them as 1, 0 and 5)."""
    if not isinstance(data, dict) or descriptor.full_name.startswith("google.protobuf."):
        return  # well-known types (Struct, Value, Timestamp, ...) hold what they hold
    for key, value in data.items():
        field = _fields(descriptor).get(key)
        if field is None:
            continue
        items: list[Any] = value if isinstance(value, list) else [value]
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            field = field.message_type.fields_by_name["value"]
            items = list(value.values()) if isinstance(value, dict) else []
        for item in items:
            if field.enum_type is not None and isinstance(item, bool | float):
                raise _invalid_json(
                    what, f"invalid value {json.dumps(item)} for enum {field.enum_type.full_name} at {path}.{key}"
                )
            if field.message_type is not None:
                _strict_enums(item, field.message_type, f"{path}.{key}", what)


def update_names(pb: Any) -> dict[str, str]:
    """The fields of an UpdateJob body that name the job (id, project, location, name): they must be the job's."""
    named = {"id": pb.id, "projectId": pb.project_id, "location": pb.location, "name": pb.name}
    return {field: value for field, value in named.items() if value}


def enum_value(enum_type: Any, value: str | int, what: str) -> int:
    """An enum given by name or number (as query parameters carry them)."""
    text = str(value).strip()
    members = {member.name: int(member) for member in enum_type}
    if text.lstrip("-").isascii() and text.lstrip("-").isdigit():  # not "²": str.isdigit takes it, int() does not
        if int(text) in members.values():
            return int(text)
    elif text in members:
        return members[text]
    raise InvalidArgument(f"invalid value {value!r} for {what}", reason="INVALID_ENUM_VALUE")


def _stamp(field: Any, value: datetime) -> None:
    field.FromDatetime(value)


def job_to_pb(job: Job, view: int = JobView.SUMMARY) -> Any:
    """The job as a ``google.dataflow.v1beta3.Job`` message, in the given view."""
    spec = spec_of(job) if job.spec else JobPb()
    if view in (JobView.SUMMARY, JobView.UNKNOWN):
        pb = JobPb()
        for name in _SUMMARY_SPEC_FIELDS:
            if spec.HasField(name):
                getattr(pb, name).CopyFrom(getattr(spec, name))
    else:
        pb = spec
    pb.id = job.id
    pb.project_id = job.project_id
    pb.name = job.name
    pb.type_ = int(job.type)
    pb.location = job.location
    pb.current_state = int(job.current_state)
    _stamp(pb.current_state_time, job.current_state_time)
    pb.requested_state = int(job.requested_state)
    _stamp(pb.create_time, job.create_time)
    _stamp(pb.start_time, job.start_time)
    pb.labels.update(job.labels)
    pb.client_request_id = job.client_request_id
    pb.replace_job_id = job.replace_job_id
    pb.replaced_by_job_id = job.replaced_by_job_id
    pb.created_from_snapshot_id = job.created_from_snapshot_id
    _runtime_params(pb, job)
    return pb


def _runtime_params(pb: Any, job: Job) -> None:
    params, out = job.runtime_params, pb.runtime_updatable_params
    if params.max_num_workers is not None:
        out.max_num_workers = params.max_num_workers
    if params.min_num_workers is not None:
        out.min_num_workers = params.min_num_workers
    if params.worker_utilization_hint is not None:
        out.worker_utilization_hint = params.worker_utilization_hint


def runtime_body(pb: Any) -> dict[str, Any]:
    """An UpdateJob body's ``runtimeUpdatableParams`` as JSON (camelCase; the fields it sets)."""
    if not pb.HasField("runtime_updatable_params"):
        return {}
    body: dict[str, Any] = json_format.MessageToDict(pb.runtime_updatable_params)
    return body


AutoscalingEventPb: Any = dataflow.AutoscalingEvent.pb()


def autoscaling_event_to_pb(event: AutoscalingEvent) -> Any:
    """A ``google.dataflow.v1beta3.AutoscalingEvent``."""
    pb = AutoscalingEventPb()
    pb.current_num_workers = event.current_num_workers
    pb.target_num_workers = event.target_num_workers
    pb.event_type = int(event.event_type)
    pb.description.message_text = event.description
    pb.description.message_key = event.event_type.name
    _stamp(pb.time, event.time)
    pb.worker_pool = event.worker_pool
    return pb


@functools.lru_cache(maxsize=8192)
def rfc3339(value: datetime) -> str:
    """A UTC time as protobuf's JSON prints a Timestamp (0, 3 or 6 fraction digits).

    Cached: clients poll the same jobs, whose times rarely change.
    """
    micros = value.microsecond
    spec = "seconds" if micros == 0 else "milliseconds" if micros % 1000 == 0 else "microseconds"
    return value.isoformat(timespec=spec)[:-6] + "Z"


def summary_dict(job: Job, *, ints: bool) -> dict[str, Any]:
    """``to_json_dict(job_to_pb(job, SUMMARY))``, built directly: the hot path of GetJob and ListJobs.

    A test checks that both give the same JSON for any job.
    """
    out: dict[str, Any] = {"id": job.id, "projectId": job.project_id, "name": job.name}
    if job.type:
        out["type"] = int(job.type) if ints else job.type.name
    if job.current_state:
        out["currentState"] = int(job.current_state) if ints else job.current_state.name
    out["currentStateTime"] = rfc3339(job.current_state_time)
    if job.requested_state:
        out["requestedState"] = int(job.requested_state) if ints else job.requested_state.name
    out["createTime"] = rfc3339(job.create_time)
    if job.replace_job_id:
        out["replaceJobId"] = job.replace_job_id
    if job.client_request_id:
        out["clientRequestId"] = job.client_request_id
    if job.replaced_by_job_id:
        out["replacedByJobId"] = job.replaced_by_job_id
    if job.labels:
        out["labels"] = dict(job.labels)
    out["location"] = job.location
    if job.spec:
        spec = spec_of(job)
        if spec.HasField("job_metadata"):
            out["jobMetadata"] = json_format.MessageToDict(spec.job_metadata, use_integers_for_enums=ints)
    out["startTime"] = rfc3339(job.start_time)
    if job.created_from_snapshot_id:
        out["createdFromSnapshotId"] = job.created_from_snapshot_id
    if job.runtime_params.to_json():
        out["runtimeUpdatableParams"] = job.runtime_params.to_json()
    return out


class Encodings:
    """A job version's answers as bytes, each encoded once: a version names one content, and clients poll.

    Keyed by the job's id and version and what else shapes the answer (the view, the enum
    encoding); the oldest go past ``size``.
    """

    def __init__(self, size: int = 1024) -> None:
        self._kept: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self._size = size

    def get(self, job: Job, shape: tuple[Any, ...], encode: Callable[[], bytes]) -> bytes:
        key = (job.id, job.version, *shape)
        kept = self._kept.get(key)
        if kept is None:
            kept = self._kept[key] = encode()
            if len(self._kept) > self._size:
                self._kept.popitem(last=False)
        return kept


def job_to_json_dict(job: Job, view: int, *, ints: bool) -> dict[str, Any]:
    """The job as Dataflow JSON in the given view."""
    if view in (JobView.SUMMARY, JobView.UNKNOWN):
        return summary_dict(job, ints=ints)
    return to_json_dict(job_to_pb(job, view), ints=ints)


def message_to_pb(message: JobMessage) -> Any:
    pb = JobMessagePb()
    pb.id = message.id
    _stamp(pb.time, message.time)
    pb.message_text = message.text
    pb.message_importance = int(message.importance)
    return pb


def state_change_to_dict(change: StateChange) -> dict[str, Any]:
    """A history row as JSON (tidegate's own endpoint; not part of Dataflow's API)."""
    return {
        "jobId": change.job_id,
        "fromState": change.source.name if change.source is not None else None,
        "toState": change.target.name,
        "actor": change.actor.value,
        "caller": change.caller,
        "time": change.time.isoformat().replace("+00:00", "Z"),
        "reason": change.reason,
    }


def to_json_dict(message: Any, *, ints: bool) -> dict[str, Any]:
    """A message as Dataflow JSON; enums as numbers when the client asked for ``enum-encoding=int``."""
    result: dict[str, Any] = json_format.MessageToDict(message, use_integers_for_enums=ints)
    return result


def labels_of(mapping: Mapping[str, str]) -> dict[str, str]:
    return dict(mapping)


JobMetricsPb: Any = dataflow.JobMetrics.pb()
JobExecutionDetailsPb: Any = dataflow.JobExecutionDetails.pb()
_EXECUTION_STATES: dict[str, int] = {state.name: int(state) for state in list(dataflow.ExecutionState)}


def metrics_to_pb(metrics: Sequence[MetricValue], now: datetime) -> Any:
    """``JobMetrics``: each metric twice, tentative and committed, as Beam's Dataflow client expects."""
    pb = JobMetricsPb()
    pb.metric_time.FromDatetime(now)
    for metric in metrics:
        for tentative in ("true", "false"):
            update = pb.metrics.add()
            update.name.origin = metric.origin
            update.name.name = metric.name
            update.name.context["step"] = metric.step
            update.name.context["tentative"] = tentative
            if metric.namespace:
                update.name.context["namespace"] = metric.namespace
            if metric.pcollection:
                update.name.context["output_user_name"] = metric.pcollection
            update.kind = "Sum"
            update.cumulative = True
            update.scalar.number_value = float(metric.value)
            update.update_time.FromDatetime(now)
    return pb


def stages_to_pb(stages: Sequence[StageDetails]) -> Any:
    """``JobExecutionDetails``: one summary per stage."""
    pb = JobExecutionDetailsPb()
    for stage in stages:
        summary = pb.stages.add()
        summary.stage_id = stage.stage_id
        summary.state = _EXECUTION_STATES.get(stage.state, 0)
        if stage.start_time:
            summary.start_time.FromDatetime(stage.start_time)
        if stage.end_time:
            summary.end_time.FromDatetime(stage.end_time)
    return pb


SnapshotPb: Any = dataflow.Snapshot.pb()
"""The raw protobuf class of ``google.dataflow.v1beta3.Snapshot``."""


def snapshot_to_pb(snapshot: Snapshot) -> Any:
    """A snapshot as ``google.dataflow.v1beta3.Snapshot``."""
    pb = SnapshotPb(
        id=snapshot.id,
        project_id=snapshot.project_id,
        source_job_id=snapshot.source_job_id,
        state=int(snapshot.state),
        description=snapshot.description,
        disk_size_bytes=snapshot.disk_size_bytes,
        region=snapshot.location,
    )
    pb.creation_time.FromDatetime(snapshot.creation_time)
    if snapshot.ttl is not None:
        pb.ttl.FromTimedelta(snapshot.ttl)
    return pb
