"""tidegate's values as Beam's Job API messages, and a Beam submission as a tidegate job.

Used by ``tidegate.api.beam_job_api``: job states onto ``JobState.Enum``, job messages
onto ``JobMessage``, metrics onto ``MonitoringInfo``\\ s (the form PortableRunner's
``result.metrics()`` reads); the options Struct PortableRunner sends
(``beam:option:NAME:v1`` keys, integers as strings) into the plain, typed options a
Dataflow job carries in ``environment.sdkPipelineOptions.options``; the job's name and
labels; and the staged files, embedded into the pipeline's environments.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from apache_beam.metrics import monitoring_infos
from apache_beam.metrics.cells import DistributionData
from apache_beam.options import pipeline_options as beam_options
from apache_beam.portability.api import beam_job_api_pb2, beam_runner_api_pb2
from google.protobuf import json_format, struct_pb2, timestamp_pb2

from tidegate.lifecycle import JobState
from tidegate.model import JobMessage, MessageImportance, MetricValue

__all__ = [
    "beam_state",
    "is_streaming",
    "job_name",
    "labels_option",
    "message_to_beam",
    "metrics_to_monitoring_infos",
    "options_struct",
    "pipeline_options",
    "timestamp",
]

log = logging.getLogger(__name__)
jobs_pb: Any = beam_job_api_pb2
runner_pb: Any = beam_runner_api_pb2
mi: Any = monitoring_infos  # untyped
PipelineOptions: Any = beam_options.PipelineOptions

_BEAM_STATE: dict[JobState, str] = {
    JobState.JOB_STATE_UNKNOWN: "UNSPECIFIED",
    JobState.JOB_STATE_STOPPED: "STOPPED",
    JobState.JOB_STATE_QUEUED: "STARTING",
    JobState.JOB_STATE_PENDING: "STARTING",
    JobState.JOB_STATE_RUNNING: "RUNNING",
    JobState.JOB_STATE_RESOURCE_CLEANING_UP: "RUNNING",  # succeeded, not ended: Beam's DONE would end the client's wait
    JobState.JOB_STATE_DONE: "DONE",
    JobState.JOB_STATE_FAILED: "FAILED",
    JobState.JOB_STATE_CANCELLING: "CANCELLING",
    JobState.JOB_STATE_CANCELLED: "CANCELLED",
    JobState.JOB_STATE_DRAINING: "DRAINING",
    JobState.JOB_STATE_DRAINED: "DRAINED",
    JobState.JOB_STATE_UPDATED: "UPDATED",
}
_IMPORTANCE: dict[MessageImportance, str] = {
    MessageImportance.JOB_MESSAGE_IMPORTANCE_UNKNOWN: "MESSAGE_IMPORTANCE_UNSPECIFIED",
    MessageImportance.JOB_MESSAGE_DEBUG: "JOB_MESSAGE_DEBUG",
    MessageImportance.JOB_MESSAGE_DETAILED: "JOB_MESSAGE_DETAILED",
    MessageImportance.JOB_MESSAGE_BASIC: "JOB_MESSAGE_BASIC",
    MessageImportance.JOB_MESSAGE_WARNING: "JOB_MESSAGE_WARNING",
    MessageImportance.JOB_MESSAGE_ERROR: "JOB_MESSAGE_ERROR",
}
_OPTION_KEY = re.compile(r"beam:option:(?P<name>.+):v1")
_DISTRIBUTION_PARTS = ("_COUNT", "_SUM", "_MIN", "_MAX")
_INVALID_NAME_CHARS = re.compile(r"[^-a-z0-9]+")


def beam_state(state: JobState) -> int:
    """The job state as Beam's ``JobState.Enum`` (QUEUED and PENDING are STARTING)."""
    return int(jobs_pb.JobState.Enum.Value(_BEAM_STATE.get(state, "UNSPECIFIED")))


def message_to_beam(message: JobMessage) -> Any:
    """A job message as Beam's ``JobMessage``."""
    return jobs_pb.JobMessage(
        message_id=message.id,
        time=message.time.isoformat(),
        importance=jobs_pb.JobMessage.MessageImportance.Value(_IMPORTANCE[message.importance]),
        message_text=message.text,
    )


def pipeline_options(struct: Any) -> dict[str, Any]:
    """PortableRunner's options Struct as plain options, typed as Beam parses them (``"2"`` becomes ``2``)."""
    raw: dict[str, Any] = {}
    for key, value in json_format.MessageToDict(struct).items():
        match = _OPTION_KEY.fullmatch(key)
        raw[match["name"] if match else key] = value
    try:
        parsed = PipelineOptions.from_dictionary(raw).get_all_options(retain_unknown_options=True)
    except (Exception, SystemExit):  # argparse exits on a value it cannot read: keep the strings
        log.debug("could not parse pipeline options %r", raw, exc_info=True)
        parsed = {}
    typed = {
        key: parsed[key] if isinstance(value, str) and parsed.get(key) not in (None, value) else value
        for key, value in raw.items()
    }
    result: dict[str, Any] = json.loads(json.dumps(typed, default=str))
    return result


def options_struct(options: Mapping[str, Any]) -> Any:
    """Options as Beam's Job API carries them: ``beam:option:NAME:v1`` keys."""
    struct = struct_pb2.Struct()
    struct.update(json.loads(json.dumps({f"beam:option:{k}:v1": v for k, v in options.items()}, default=str)))
    return struct


def metrics_to_monitoring_infos(metrics: Sequence[MetricValue]) -> list[Any]:
    """Element counts (labelled with their PCollection and producing step) and user metrics as MonitoringInfos.

    The engine reports a user distribution as four values (``NAME_COUNT``, ``_SUM``,
    ``_MIN``, ``_MAX``); they become one distribution again. Other user metrics are
    counters (Beam's int64 sums).
    """
    infos: list[Any] = []
    user: dict[tuple[str, str, str], int] = {}
    for metric in metrics:
        if metric.origin != "user":
            if metric.name == "ElementCount" and metric.pcollection:
                infos.append(
                    mi.int64_counter(
                        mi.ELEMENT_COUNT_URN, int(metric.value), ptransform=metric.step, pcollection=metric.pcollection
                    )
                )
            continue
        user[(metric.step, metric.namespace, metric.name)] = int(metric.value)
    for (step, space, name), value in sorted(user.items()):
        if name.endswith(_DISTRIBUTION_PARTS):
            base = name.rsplit("_", 1)[0]
            parts = [user.get((step, space, base + suffix)) for suffix in _DISTRIBUTION_PARTS]
            if all(part is not None for part in parts):
                if name == base + "_COUNT":
                    count, total, low, high = (int(part or 0) for part in parts)
                    data = DistributionData(total, count, low, high)
                    infos.append(mi.int64_user_distribution(space, base, data, ptransform=step))
                continue
        infos.append(mi.int64_user_counter(space or "user", name, value, ptransform=step))
    return infos


def job_name(prepared: str, options: Mapping[str, Any], now: datetime) -> str:
    """A Dataflow-valid name: the ``job_name`` option, else Prepare's name with the time (PortableRunner says 'job')."""
    explicit = str(options.get("job_name") or "")
    name = _INVALID_NAME_CHARS.sub("-", (explicit or prepared or "job").lower()).strip("-")
    if not name[:1].isalpha():
        name = f"beamapp-{name}".rstrip("-")
    if not explicit:  # PortableRunner names every job 'job': tell them apart, as Dataflow's 'beamapp-…' does
        name = f"{name}-{now:%m%d%H%M%S}-{secrets.token_hex(3)}"
    return name[:1000].rstrip("-")


def labels_option(value: Any) -> dict[str, str]:
    """Dataflow's ``--labels`` option (repeated ``key=value``, or a JSON object), as job labels."""
    labels: dict[str, str] = {}
    for item in value if isinstance(value, list) else [value] if value else []:
        text = str(item).strip()
        if text.startswith("{"):
            try:
                labels.update({str(k): str(v) for k, v in json.loads(text).items()})
                continue
            except (ValueError, AttributeError):
                pass
        key, _, val = text.partition("=")
        if key:
            labels[key] = val
    return labels


def is_streaming(pipeline: Any, options: Mapping[str, Any]) -> bool:
    """Whether the pipeline asks for streaming (``--streaming``) or reads an unbounded source."""
    unbounded = runner_pb.IsBounded.UNBOUNDED
    return options.get("streaming") in (True, "true") or any(
        pc.is_bounded == unbounded for pc in pipeline.components.pcollections.values()
    )


def timestamp(when: datetime) -> Any:
    """A ``google.protobuf.Timestamp``."""
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when)
    return stamp
