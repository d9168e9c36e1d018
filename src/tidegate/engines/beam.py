"""The Beam engine: batch pipelines run by Beam's FnApiRunner, one process group per run.

``launch`` writes the runner-API pipeline into the run's workdir and starts
``python -m tidegate.engines.beam_worker WORKDIR`` in a new session: its process group
holds that supervisor, the pipeline process and every SDK worker process, and the
supervisor reaps them all as they die. Everything else only reads the files the
pipeline process writes into the workdir (named below) and looks at the process group:
no method waits for the pipeline. Beam has no cancel API, so ``cancel`` kills the whole
group: SIGTERM, a short grace, then SIGKILL.

A handle's ``ref`` is the absolute workdir; the worker's pid (the group's id) is kept
in it too, so an engine that did not launch a run (after a restart) can still poll,
cancel and release it.

Starting those processes cold costs two Python interpreters and an import of Beam, which
take seconds. So the engine keeps one run's processes started ahead (``beam_warm``): an
idle supervisor, already in its own session, whose pipeline process has imported Beam;
``launch`` hands the workdir to it, and falls back to the cold start when there is none.
Call ``close`` when done with the engine: it stops the idle processes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import tidegate
from tidegate.engines.base import EngineState, Handle, LaunchRequest, RunStatus, WorkerMessage
from tidegate.engines.beam_warm import WarmStart
from tidegate.engines.log_files import tail
from tidegate.errors import FailedPrecondition, InvalidArgument, NotFound, Unimplemented
from tidegate.model import LogLine, MessageImportance, MetricValue, StageDetails
from tidegate.os_user import RunAs, open_for_append, open_untrusted

__all__ = [
    "MESSAGES_FILE",
    "METRICS_FILE",
    "PIPELINE_FILE",
    "RUN_AS_ENV",
    "RUN_FILE",
    "STAGES_FILE",
    "STATUS_FILE",
    "STDERR_FILE",
    "STDOUT_FILE",
    "BeamEngine",
    "group_members",
    "outputs",
    "stderr_tail",
    "supervisor_spec",
    "worker_env",
    "write_json",
]

# The run's folder: the engine writes the first two, the pipeline process the rest.
PIPELINE_FILE = "pipeline.pb"
RUN_FILE = "run.json"
STATUS_FILE = "status.json"
MESSAGES_FILE = "messages.jsonl"
METRICS_FILE = "metrics.json"
STAGES_FILE = "stages.json"
STDOUT_FILE = "stdout.log"
STDERR_FILE = "stderr.log"
_PROCESS_FILE = "process.json"
_SUPERVISOR_FILE = "supervisor.json"
"""The supervisor's part of the run: the lease it keeps and the user the pipeline runs as (the server's alone)."""
_OUT_FOLDER = "out"
"""With ``run_as``, what the run's processes read and write is in this folder of the run's, the user's own."""
RUN_AS_ENV = "TIDEGATE_RUN_AS"
"""The user an idle supervisor starts its pipeline process as (JSON), for a warm start."""
_CANCELLED_FILE = "cancelled"
_GROUP_GONE_FILE = "group-gone"
"""Written once the process group is seen empty: its id may be reused, so it is never signalled again."""
_MESSAGES_BATCH = 1 << 20
_TERMINAL = {"succeeded": EngineState.SUCCEEDED, "failed": EngineState.FAILED}


def write_json(path: Path, value: object) -> None:
    """Replace ``path`` with ``value`` as JSON, atomically (readers never see half a file).

    The temporary file is made new (never written through a link someone left in its place).
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(value, default=str))
    os.replace(tmp, path)


def outputs(workdir: Path) -> Path:
    """Where a run's processes read and write: its folder, or that folder's ``out`` when they run as another user."""
    out = workdir / _OUT_FOLDER
    return out if out.is_dir() else workdir


def supervisor_spec(workdir: Path) -> dict[str, Any]:
    """The supervisor's part of a run: ``job_id``, ``lease`` (or None) and ``run_as`` (or None)."""
    spec = _read_json(workdir / _SUPERVISOR_FILE)
    if spec is None:  # a run launched before there was this file
        run = _read_json(workdir / RUN_FILE) or {}
        spec = {"job_id": run.get("job_id"), "lease": run.get("lease"), "run_as": None}
    return dict(spec)


def stderr_tail(workdir: Path, size: int = 4000) -> str:
    """The last ``size`` bytes of the run's stderr, where its processes print what they do not log."""
    try:
        with open_untrusted(outputs(workdir) / STDERR_FILE) as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - size))
            return f.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


def group_members(pgid: int) -> list[int]:
    """Every process whose process group is ``pgid``, zombies included (from /proc)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat", encoding="utf-8") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[2]) == pgid:
                found.append(int(entry.name))
    return found


def worker_env() -> dict[str, str]:
    """The environment of a run's processes: this one, with tidegate importable and output unbuffered."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    package_root = Path(tidegate.__file__).resolve().parent.parent
    if package_root.name not in ("site-packages", "dist-packages"):  # a source tree: the worker imports it too
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(package_root), env.get("PYTHONPATH", "")) if p)
    return env


def _read_json(path: Path) -> Any:
    try:
        with open_untrusted(path) as f:
            return json.loads(f.read())
    except (OSError, ValueError):
        return None


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks (field 22 of /proc/PID/stat), or None if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class BeamEngine:
    """Runs Beam batch pipelines (runner-API protos) with FnApiRunner in local processes."""

    name = "beam"
    supervises_runs = True
    """Every run has a supervisor process (``beam_worker``), which keeps the run's lease when given one."""

    def __init__(
        self,
        *,
        python: str | None = None,
        grace_s: float = 0.3,
        kill_wait_s: float = 0.6,
        warm: bool = True,
        run_as: RunAs | None = None,
    ) -> None:
        """``python`` runs the worker (default: this interpreter); cancel waits ``grace_s`` after SIGTERM.

        With ``warm``, one run's processes are started at once and after every launch, ready for the next.
        With ``run_as``, each run's pipeline process (and its SDK workers) runs as that user, which
        is given only the run's ``out`` folder; the supervisor stays this process's user.
        """
        self._python = python or sys.executable
        self._run_as = run_as
        self._grace_s = grace_s
        self._kill_wait_s = kill_wait_s
        self._lock = threading.Lock()
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._warm = WarmStart(self._python, self._idle_env) if warm else None
        # Stops the idle processes if the engine is dropped unclosed, or at exit.
        self._close: Callable[[], None] = weakref.finalize(self, self._warm.close) if self._warm else lambda: None

    def _idle_env(self) -> dict[str, str]:
        env = worker_env()
        if self._run_as is not None:
            env[RUN_AS_ENV] = json.dumps(self._run_as.to_json())
        return env

    def close(self) -> None:
        """Stop the idle processes kept for the next launch (runs go on); later launches start cold. Idempotent."""
        self._close()

    # -- the Engine protocol -------------------------------------------------------

    def launch(self, request: LaunchRequest) -> Handle:
        """Write the pipeline into the workdir and start the worker; returns at once."""
        if request.streaming:
            raise Unimplemented(
                "Beam streaming pipelines cannot run locally: no Python local runner runs unbounded sources",
                reason="STREAMING_NOT_SUPPORTED",
            )
        if not request.pipeline:
            raise InvalidArgument(
                "the job carries no Beam pipeline to run: submit Beam pipelines with Beam's DataflowRunner"
                " or PortableRunner, or with `tidegate run PIPELINE.py`",
                reason="NO_PIPELINE",
            )
        workdir = request.workdir.resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        out = workdir
        if self._run_as is not None:  # the user may enter the run's folder, and owns only its ``out``
            workdir.chmod(0o711)
            out = workdir / _OUT_FOLDER
            out.mkdir(exist_ok=True)
        for stale in (STATUS_FILE, MESSAGES_FILE, METRICS_FILE, STAGES_FILE):
            (out / stale).unlink(missing_ok=True)  # of an earlier launch into the same folder
        for stale in (_CANCELLED_FILE, _GROUP_GONE_FILE):
            (workdir / stale).unlink(missing_ok=True)
        (out / PIPELINE_FILE).unlink(missing_ok=True)
        with os.fdopen(os.open(out / PIPELINE_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as f:
            f.write(request.pipeline)
        run = {
            "job_id": request.job_id,
            "job_name": request.job_name,
            "num_workers": request.num_workers,
            "options": dict(request.options),
            "args": list(request.args),
        }
        write_json(out / RUN_FILE, run)
        write_json(
            workdir / _SUPERVISOR_FILE,
            {
                "job_id": request.job_id,
                "lease": dataclasses.asdict(request.lease) if request.lease else None,
                "run_as": self._run_as.to_json() if self._run_as else None,
            },
        )
        stdout, stderr = open_for_append(out / STDOUT_FILE), open_for_append(out / STDERR_FILE)
        try:
            if self._run_as is not None:
                self._run_as.give(out, *(out / name for name in (PIPELINE_FILE, RUN_FILE, STDOUT_FILE, STDERR_FILE)))
            env = worker_env()
            child = self._warm.take(workdir, env) if self._warm is not None else None
            if child is None:  # none ready (closed, or broken): start cold
                child = subprocess.Popen(
                    [self._python, "-m", "tidegate.engines.beam_worker", str(workdir)],
                    cwd=workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=stdout,
                    stderr=stderr,
                    start_new_session=True,
                )
        finally:
            os.close(stdout)
            os.close(stderr)
        write_json(workdir / _PROCESS_FILE, {"pid": child.pid, "start_ticks": _start_ticks(child.pid)})
        ref = str(workdir)
        with self._lock:
            self._children[ref] = child
        return Handle(engine=self.name, ref=ref)

    def poll(self, handle: Handle) -> RunStatus:
        """The run's state, from its status file and whether its worker process lives."""
        workdir = self._workdir(handle)
        if (workdir / _CANCELLED_FILE).exists():
            self._leader_alive(handle)  # reaps it
            return RunStatus(EngineState.CANCELLED)
        alive = self._leader_alive(handle)  # before reading the status: a final status is written before exit
        status = _read_json(outputs(workdir) / STATUS_FILE) or {}
        state = status.get("state")
        if state in _TERMINAL:
            if not alive:
                self._kill_group(handle)  # nothing should be left; make sure
            return RunStatus(_TERMINAL[state], error=str(status.get("error", "")))
        if alive:
            return RunStatus(EngineState.RUNNING if state == "running" else EngineState.STARTING)
        self._kill_group(handle)  # SDK workers left behind by a worker that died
        return RunStatus(EngineState.FAILED, error=self._death_notice(handle))

    def cancel(self, handle: Handle) -> None:
        """Kill the run's whole process group (SIGTERM, short grace, SIGKILL); a no-op once it ended."""
        workdir = self._workdir(handle)
        status = _read_json(outputs(workdir) / STATUS_FILE) or {}
        if status.get("state") not in _TERMINAL:
            (workdir / _CANCELLED_FILE).touch()
        self._kill_group(handle)

    def drain(self, handle: Handle) -> None:
        """Batch runs cannot be drained."""
        raise FailedPrecondition("a Beam batch job cannot be drained", reason="BATCH_JOB_NOT_DRAINABLE")

    def snapshot(self, handle: Handle, target: Path) -> str:
        """Beam's local runner keeps no state that could be captured."""
        raise Unimplemented("snapshots of Beam batch jobs are not supported", reason="SNAPSHOT_NOT_SUPPORTED")

    def messages(self, handle: Handle, after: int) -> tuple[list[WorkerMessage], int]:
        """Messages after byte offset ``after`` of the run's message file, and the offset to ask next."""
        path = outputs(self._workdir(handle)) / MESSAGES_FILE
        found: list[WorkerMessage] = []
        cursor = max(0, after)
        try:
            with open_untrusted(path) as f:
                f.seek(cursor)
                while cursor - after < _MESSAGES_BATCH:
                    line = f.readline()
                    if not line.endswith(b"\n"):  # none, or one still being written: next call
                        break
                    cursor += len(line)
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        record = json.loads(line)
                        found.append(
                            WorkerMessage(
                                time=datetime.fromisoformat(record["time"]),
                                importance=MessageImportance[record["importance"]],
                                text=str(record["text"]),
                            )
                        )
        except OSError:
            pass
        return found, cursor

    def logs(self, handle: Handle, cursor: str) -> tuple[list[LogLine], str]:
        """What the run's processes printed to their stdout and stderr since ``cursor``."""
        out = outputs(self._workdir(handle))
        ended = self.poll(handle).state in (EngineState.SUCCEEDED, EngineState.FAILED, EngineState.CANCELLED)
        return tail({"stdout": out / STDOUT_FILE, "stderr": out / STDERR_FILE}, cursor, ended=ended)

    def metrics(self, handle: Handle) -> list[MetricValue]:
        """Element counts per PCollection and user metrics, as last written by the worker."""
        rows = _read_json(outputs(self._workdir(handle)) / METRICS_FILE) or []
        return [MetricValue(**row) for row in rows]

    def stages(self, handle: Handle) -> list[StageDetails]:
        """Fused stages (``S01``, ``S02`` … in execution order) with their state, times and steps."""
        rows = _read_json(outputs(self._workdir(handle)) / STAGES_FILE) or []
        ended = self.poll(handle).state
        replace = {EngineState.CANCELLED: "EXECUTION_STATE_CANCELLED", EngineState.FAILED: "EXECUTION_STATE_FAILED"}
        result = []
        for row in rows:
            state = row.get("state", "EXECUTION_STATE_UNKNOWN")
            if ended in replace and state == "EXECUTION_STATE_RUNNING":
                state = replace[ended]
            result.append(
                StageDetails(
                    stage_id=row["stage_id"],
                    state=state,
                    start_time=datetime.fromisoformat(row["start_time"]) if row.get("start_time") else None,
                    end_time=datetime.fromisoformat(row["end_time"]) if row.get("end_time") else None,
                    steps=tuple(row.get("steps", ())),
                )
            )
        return result

    def release(self, handle: Handle) -> None:
        """Kill whatever is left of the run's processes and delete its workdir; idempotent."""
        try:
            workdir = self._workdir(handle)
        except NotFound:
            return
        self._kill_group(handle)
        with self._lock:
            self._children.pop(handle.ref, None)
        shutil.rmtree(workdir, ignore_errors=True)

    # -- processes -----------------------------------------------------------------

    def _workdir(self, handle: Handle) -> Path:
        workdir = Path(handle.ref)
        if handle.engine != self.name or not (workdir / _PROCESS_FILE).exists():
            raise NotFound(f"no Beam run at {handle.ref!r} (released, or never launched here)")
        return workdir

    def _pid(self, handle: Handle) -> int:
        return int(_read_json(Path(handle.ref) / _PROCESS_FILE)["pid"])

    def _leader_alive(self, handle: Handle) -> bool:
        """Whether the worker process (the group's leader) runs; reaps it if this engine started it."""
        with self._lock:
            child = self._children.get(handle.ref)
        if child is not None:
            return child.poll() is None
        recorded = _read_json(Path(handle.ref) / _PROCESS_FILE) or {}
        ticks = _start_ticks(int(recorded.get("pid", 0)))
        return ticks is not None and ticks == recorded.get("start_ticks")

    def _kill_group(self, handle: Handle) -> None:
        """SIGTERM the group; after the grace SIGKILL all but its leader, which reaps them; then the leader."""
        gone_marker = Path(handle.ref) / _GROUP_GONE_FILE
        if gone_marker.exists():
            return
        pgid = self._pid(handle)
        self._leader_alive(handle)  # reap an exited leader: a zombie still counts as a group member
        if _group_alive(pgid):
            _signal_group(pgid, signal.SIGTERM)
            if not self._wait_group_gone(handle, pgid, self._grace_s):
                for pid in group_members(pgid):
                    if pid != pgid:
                        with contextlib.suppress(OSError):
                            os.kill(pid, signal.SIGKILL)
                if not self._wait_group_gone(handle, pgid, self._kill_wait_s / 2):
                    _signal_group(pgid, signal.SIGKILL)
                    if not self._wait_group_gone(handle, pgid, self._kill_wait_s / 2):
                        return
        gone_marker.touch()

    def _wait_group_gone(self, handle: Handle, pgid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while True:
            self._leader_alive(handle)
            if not _group_alive(pgid):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    def _death_notice(self, handle: Handle) -> str:
        """Why a worker that wrote no final status ended: its exit code or signal, and its stderr's tail."""
        with self._lock:
            child = self._children.get(handle.ref)
        code = child.returncode if child is not None else None
        if code is None:
            how = "the Beam worker process ended without reporting a result"
        elif code < 0:
            how = f"the Beam worker process was killed by {signal.Signals(-code).name}"
        else:
            how = f"the Beam worker process exited with code {code} without reporting a result"
        tail = stderr_tail(Path(handle.ref))
        return f"{how}; stderr ends with:\n{tail}" if tail else how
