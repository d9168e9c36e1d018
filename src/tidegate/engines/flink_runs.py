"""What the Flink engine keeps of a run: its record (which survives the server), the launch to repeat, the SQL driver.

A run's record (``state_dir/flink-runs/JOB.json``) holds what Flink does not: what the
engine asked of it (a drain and a stop both end FINISHED in Flink), whether Flink
accepted it, the launch request (to launch it again on a new cluster when its cluster
is lost, or when the server stopped while submitting it), the process submitting it
(the ``flink`` CLI or the warm submitter: a restarted server waits for it to end before
it looks whether Flink has the job) and the local cluster it went to. It is written
before the submission starts.

A job's Python state is kept differently in thread and process mode, so a job restored
from another's state must run in the mode that state was written in (else its Python
operators start from empty state, and Flink says nothing): the engine writes the mode
beside each savepoint it takes (``mark_python_mode``) and reads it back at a restore
(``python_mode_of``); a run resumed from its own checkpoints keeps its record's mode.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from tidegate.engines.base import LaunchRequest, RunStatus
from tidegate.engines.base import WorkerMessage as Message
from tidegate.model import MessageImportance, MetricValue

__all__ = [
    "PERSISTED",
    "SQL_DRIVER",
    "FlinkRun",
    "load_run",
    "mark_python_mode",
    "python_mode_of",
    "request_from",
    "request_record",
]

PERSISTED = ("tmp", "submitted", "submit_error", "requested", "request", "cluster", "submitter", "python_mode")
"""The fields of a run its record keeps."""

SQL_DRIVER = '''"""tidegate's Flink SQL driver: python driver.py SCRIPT streaming|batch."""
import re, sys
from pyflink.table import EnvironmentSettings, TableEnvironment

TOKEN = re.compile(r"'(?:[^']|'')*'|\\"[^\\"]*\\"|`[^`]*`|--[^\\n]*|/\\*.*?\\*/|;|[^'\\"`;/-]+|.", re.S)
statements, current = [], ""
for token in TOKEN.findall(open(sys.argv[1]).read()) + [";"]:
    if token == ";":
        statements += [current.strip()] if current.strip() else []
        current = ""
    elif not token.startswith(("--", "/*")):
        current += token
mode = EnvironmentSettings.in_streaming_mode() if sys.argv[2] == "streaming" else EnvironmentSettings.in_batch_mode()
t_env = TableEnvironment.create(mode)
inserts = t_env.create_statement_set()
for statement in statements:
    setting = re.fullmatch(r"SET\\s+'([^']+)'\\s*=\\s*'([^']*)'", statement, re.I)
    if setting:
        t_env.get_config().set(setting.group(1), setting.group(2))
    elif re.match(r"INSERT\\s", statement, re.I):
        inserts.add_insert_sql(statement)
    else:
        t_env.execute_sql(statement)
inserts.execute()
'''


@dataclass
class FlinkRun:
    """What the engine knows of one run beyond what Flink reports (the ``PERSISTED`` fields survive a restart)."""

    job_id: str
    tmp: str = ""
    submitted: bool = False
    submit_error: str = ""
    requested: str = ""  # "", "cancel", "drain" or "stop"
    request: dict[str, Any] = field(default_factory=dict)
    """The launch request, to launch the run again (on a new cluster, from its latest state)."""
    cluster: str = ""
    """The ``cluster_id`` of the local cluster the run was submitted to."""
    python_mode: str = ""
    """``thread`` or ``process``: how its Python functions run (set by the engine; empty: the cluster's own)."""
    submitter: dict[str, Any] = field(default_factory=dict)
    """The process submitting the run (``pid``, ``started``): it may outlive the engine that started it."""
    in_flight: bool = False
    """Whether this engine is submitting the run (a thread of its own)."""
    resubmitted: bool = False
    """Submitted again after a restart: Flink may have the job already, from the earlier submission."""
    resuming: bool = False
    process: subprocess.Popen[bytes] | None = None
    trigger: tuple[str, float] | None = None  # the drain's savepoint trigger and when it was made
    drain_checked: float = 0.0  # when the drain's trigger was last checked (monotonic)
    seen_running: bool = False
    asked_at: float = 0.0  # when Flink was last asked for the job's state (monotonic)
    final: RunStatus | None = None
    notes: list[tuple[float, MessageImportance, str]] = field(default_factory=list)
    log: list[tuple[int, Message]] = field(default_factory=list)
    """Messages as this engine found them, each with the time it found it (microseconds, increasing)."""
    logged: set[str] = field(default_factory=set)
    floor: int | None = None
    """The cursor an earlier engine left (the first ``after`` this one was asked with): Flink's messages up to
    that time were handed out by it."""
    last_metrics: list[MetricValue] = field(default_factory=list)


def load_run(path: Path, job_id: str) -> FlinkRun:
    """A run this engine did not launch: from its record, or one that Flink alone knows."""
    try:
        record: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return FlinkRun(job_id=job_id, submitted=True)
    return FlinkRun(job_id=job_id, **{name: record[name] for name in PERSISTED if name in record})


_MODE_FILE = "tidegate-python-mode"


def _local(location: str) -> Path | None:
    """The folder of a savepoint on this machine's file system (``file:`` or a plain path), else None."""
    parsed = urlparse(location)
    if parsed.scheme not in ("", "file"):
        return None
    folder = Path(unquote(parsed.path))
    return folder if folder.is_dir() else None


def mark_python_mode(location: str, mode: str) -> None:
    """Write beside a savepoint the Python execution mode of the job it was taken of."""
    folder = _local(location)
    if folder is not None and mode:
        (folder / _MODE_FILE).write_text(mode, encoding="utf-8")


def python_mode_of(location: str) -> str | None:
    """The Python execution mode written beside a savepoint, or None (not on this machine, or none written)."""
    folder = _local(location)
    try:
        mode = (folder / _MODE_FILE).read_text(encoding="utf-8").strip() if folder is not None else ""
    except OSError:
        return None
    return mode or None


def request_record(request: LaunchRequest) -> dict[str, Any]:
    """A launch request as the run's record keeps it (JSON), for launching the run again."""
    return {
        "job_id": request.job_id,
        "job_name": request.job_name,
        "streaming": request.streaming,
        "workdir": str(request.workdir.absolute()),
        "program": str(Path(request.program).absolute()),
        "options": dict(request.options),
        "args": list(request.args),
        "num_workers": request.num_workers,
        "state_uids": dict(request.state_uids),
        "restore_from": request.restore_from,
    }


def request_from(record: Mapping[str, Any], *, restore_from: str | None = None) -> LaunchRequest:
    """The launch request a record keeps; ``restore_from`` (when given) instead of the one it had."""
    return LaunchRequest(
        job_id=str(record["job_id"]),
        job_name=str(record["job_name"]),
        streaming=bool(record["streaming"]),
        workdir=Path(record["workdir"]),
        program=str(record["program"]),
        options=dict(record.get("options") or {}),
        args=tuple(str(a) for a in record.get("args") or ()),
        num_workers=int(record.get("num_workers") or 1),
        restore_from=str(record.get("restore_from") or "") if restore_from is None else restore_from,
        state_uids={str(k): str(v) for k, v in (record.get("state_uids") or {}).items()},
    )
