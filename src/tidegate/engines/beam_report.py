"""What the pipeline process of a Beam run reports: job messages, metrics and stages.

The pipeline process (``beam_worker``) writes them into the run's workdir, each file
replaced atomically or appended a whole line at a time, and ``BeamEngine`` reads them:

- ``messages.jsonl``: one log record a line (time, importance, text);
- ``metrics.json``: element counts per PCollection and user metrics;
- ``stages.json``: execution details per fused stage.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tidegate.engines.beam import MESSAGES_FILE, METRICS_FILE, STAGES_FILE, write_json

if TYPE_CHECKING:
    from apache_beam.portability.api import beam_runner_api_pb2, metrics_pb2

__all__ = ["WORKER_LOGGER", "Names", "Progress", "now", "setup_logging"]

WORKER_LOGGER = "tidegate.engines.beam_worker"
"""The worker's own logger: its lines (started, finished) are the ones a user wants to see first."""
_FORWARDED_LOGGER = "apache_beam.runners.portability.local_job_service"
"""Where FnApiRunner re-logs the records that SDK worker processes send it, as ``'Worker: %s'``."""
_FORMATTER = logging.Formatter()
_WRITE_EVERY_S = 1.0
_ELEMENT_COUNT = "beam:metric:element_count:v1"


def now() -> str:
    return datetime.now(UTC).isoformat()


def _importance(record: logging.LogRecord) -> str:
    if record.levelno >= logging.ERROR:
        return "JOB_MESSAGE_ERROR"
    if record.levelno >= logging.WARNING:
        return "JOB_MESSAGE_WARNING"
    if record.levelno >= logging.INFO:
        # The worker's own lines (started, finished) are the ones a user wants to see first.
        return "JOB_MESSAGE_BASIC" if record.name == WORKER_LOGGER else "JOB_MESSAGE_DETAILED"
    return "JOB_MESSAGE_DEBUG"


def _forwarded(text: str) -> tuple[str, str | None]:
    """The message and time of a LogEntry that an SDK worker process sent over the Fn API."""
    from apache_beam.portability.api import beam_fn_api_pb2
    from google.protobuf import text_format

    entry = beam_fn_api_pb2.LogEntry()
    try:
        text_format.Parse(text, entry)
    except text_format.ParseError:
        return text, None
    message = entry.message + (f"\n{entry.trace}" if entry.trace else "")
    when = entry.timestamp.ToDatetime(tzinfo=UTC).isoformat() if entry.HasField("timestamp") else None
    return message, when


class _JobMessageHandler(logging.Handler):
    """Appends every log record to ``messages.jsonl`` as a job message."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._file = path.open("a", encoding="utf-8")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            when: str | None = None
            if record.name == _FORWARDED_LOGGER and record.msg == "Worker: %s" and isinstance(record.args, tuple):
                text, when = _forwarded(str(record.args[0]))
            else:
                text = record.getMessage()
                if record.exc_info:
                    text = f"{text}\n{_FORMATTER.formatException(record.exc_info)}"
            line = {
                "time": when or datetime.fromtimestamp(record.created, UTC).isoformat(),
                "importance": _importance(record),
                "text": text,
            }
            self._file.write(json.dumps(line) + "\n")
            self._file.flush()
        except Exception:
            self.handleError(record)


def setup_logging(workdir: Path, level_name: str) -> None:
    level = logging.getLevelNamesMapping().get(level_name.upper(), logging.INFO)
    root = logging.getLogger()
    root.setLevel(level)
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(stderr)
    root.addHandler(_JobMessageHandler(workdir / MESSAGES_FILE))


class Names:
    """User-facing names for the ids that monitoring infos carry."""

    def __init__(self, proto: beam_runner_api_pb2.Pipeline) -> None:
        transforms = proto.components.transforms
        self.transform = {tid: t.unique_name for tid, t in transforms.items()}
        self.user_steps = {t.unique_name for t in transforms.values() if not t.subtransforms}
        self.pcollection: dict[str, tuple[str, str]] = {}  # id -> (producing step, PCollection name)
        for t in transforms.values():
            if t.subtransforms:
                continue
            for tag, pid in t.outputs.items():
                self.pcollection[pid] = (t.unique_name, f"{t.unique_name}.{tag}")


def _metric_rows(
    names: Names, infos_by_stage: Mapping[str, Iterable[metrics_pb2.MonitoringInfo]]
) -> list[dict[str, Any]]:
    """Element counts (the largest any stage saw) and user metrics (summed) as ``MetricValue`` fields."""
    from apache_beam.metrics import monitoring_infos

    mi: Any = monitoring_infos  # its functions are untyped
    counts: dict[str, int] = {}
    user: dict[tuple[str, str, str], float] = {}
    for infos in infos_by_stage.values():
        for info in infos:
            if info.urn == _ELEMENT_COUNT:
                pid = info.labels.get(mi.PCOLLECTION_LABEL, "")
                if pid in names.pcollection:
                    counts[pid] = max(counts.get(pid, 0), mi.extract_counter_value(info))
            elif mi.is_user_monitoring_info(info):
                label = info.labels.get(mi.PTRANSFORM_LABEL, "")
                step = names.transform.get(label, label)
                name = info.labels.get(mi.NAME_LABEL, "")
                space = info.labels.get(mi.NAMESPACE_LABEL, "")
                if mi.is_counter(info):
                    key = (step, space, name)
                    user[key] = user.get(key, 0) + mi.extract_counter_value(info)
                elif mi.is_gauge(info):
                    user[(step, space, name)] = mi.extract_gauge_value(info)[1]
                elif mi.is_distribution(info):
                    count, total, low, high = mi.extract_distribution(info)
                    for suffix, value in (("_COUNT", count), ("_SUM", total), ("_MIN", low), ("_MAX", high)):
                        user[(step, space, name + suffix)] = value
    rows: list[dict[str, Any]] = []
    for pid, count in sorted(counts.items(), key=lambda kv: names.pcollection[kv[0]]):
        step, pcollection = names.pcollection[pid]
        row = {"name": "ElementCount", "step": step, "value": count, "pcollection": pcollection}
        rows.append(row | {"origin": "dataflow/v1b3"})
    for (step, space, name), value in sorted(user.items()):
        rows.append({"name": name, "step": step, "value": value, "origin": "user", "namespace": space})
    return rows


class Progress:
    """Stage states and per-stage monitoring infos, written to the workdir at most once a second."""

    def __init__(self, workdir: Path, names: Names) -> None:
        self._workdir = workdir
        self._names = names
        self._lock = threading.Lock()
        self._stages: dict[str, dict[str, Any]] = {}
        self._infos: dict[str, list[metrics_pb2.MonitoringInfo]] = {}
        self._written = 0.0

    def set_stages(self, stages: Iterable[tuple[str, list[str]]]) -> None:
        with self._lock:
            for index, (name, steps) in enumerate(stages, start=1):
                user_steps = [s for s in steps if s in self._names.user_steps] or steps
                self._stages[name] = {
                    "stage_id": f"S{index:02d}",
                    "state": "EXECUTION_STATE_NOT_STARTED",
                    "steps": user_steps,
                }
        self.write(force=True)

    def _mark(self, stage: str, state: str, *, start: bool = False) -> None:
        details = self._stages.setdefault(stage, {"stage_id": stage, "steps": []})
        details["state"] = state
        if start:
            details.setdefault("start_time", now())
            details.pop("end_time", None)
        else:
            details["end_time"] = now()

    def bundle_started(self, stage: str) -> None:
        with self._lock:
            was = self._stages.get(stage, {}).get("state")
            self._mark(stage, "EXECUTION_STATE_RUNNING", start=True)
        # A stage that starts is shown running at once (a bundle may run for minutes before the next write).
        self.write(force=was != "EXECUTION_STATE_RUNNING")

    def bundle_finished(self, stage: str, infos: Iterable[metrics_pb2.MonitoringInfo]) -> None:
        from apache_beam.metrics import monitoring_infos

        mi: Any = monitoring_infos
        with self._lock:
            self._infos[stage] = list(mi.consolidate([*infos, *self._infos.get(stage, [])]))
            self._mark(stage, "EXECUTION_STATE_SUCCEEDED")
        self.write()

    def finish(self, succeeded: bool) -> None:
        """Close every stage: all succeeded, or the running ones failed."""
        with self._lock:
            for details in self._stages.values():
                if succeeded:
                    details["state"] = "EXECUTION_STATE_SUCCEEDED"
                elif details["state"] == "EXECUTION_STATE_RUNNING":
                    details["state"] = "EXECUTION_STATE_FAILED"
                    details["end_time"] = now()
        self.write(force=True)

    def write(self, *, force: bool = False) -> None:
        with self._lock:
            if not force and time.monotonic() - self._written < _WRITE_EVERY_S:
                return
            self._written = time.monotonic()
            write_json(self._workdir / STAGES_FILE, list(self._stages.values()))
            write_json(self._workdir / METRICS_FILE, _metric_rows(self._names, self._infos))
