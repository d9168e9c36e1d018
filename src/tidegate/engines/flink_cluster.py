"""Flink plumbing for the Flink engine: the distribution, a local standalone cluster, the REST client.

Flink lives in a virtual environment of its own (``scripts/setup-flink``): the
``apache-flink`` wheel ships a whole Flink distribution inside the ``pyflink`` package
(``bin/``, ``lib/*.jar``, ``conf/``). tidegate never imports PyFlink; it runs the
distribution's scripts and speaks REST.

``LocalFlinkCluster`` runs one JobManager and one TaskManager from that distribution,
each as ``bin/{jobmanager,taskmanager}.sh start-foreground`` in a session of its own,
with a configuration folder of its own (``FLINK_CONF_DIR``): nothing is written inside
the virtual environment, and the processes are ours to stop (no shared pid files).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from tidegate.engines.base import WorkerMessage
from tidegate.errors import FailedPrecondition, NotFound, TidegateError, Unavailable
from tidegate.model import MessageImportance, MetricValue, StageDetails

__all__ = [
    "FlinkRestClient",
    "LocalFlinkCluster",
    "find_flink_home",
    "flink_python",
    "root_cause",
    "stop_group",
    "write_config",
]

_MAIN_STATES = {"RUNNING", "FINISHED", "FAILED", "CANCELED"}
_DETAILED = MessageImportance.JOB_MESSAGE_DETAILED
_OPERATOR_METRIC = re.compile(r".+\.(numRecordsIn|numRecordsOut|currentOutputWatermark)$")
_NO_WATERMARK = -9.2e18  # Long.MIN_VALUE: no watermark yet
_LOG_FILES = ("log4j.properties", "log4j-cli.properties", "logback.xml", "logback-console.xml")


def flink_python(venv: Path) -> Path:
    """The Python interpreter of a Flink virtual environment."""
    return venv / "bin" / "python"


def find_flink_home(venv: Path) -> Path:
    """The Flink distribution inside a Flink virtual environment (the ``pyflink`` package folder)."""
    for candidate in sorted(venv.glob("lib/python3*/site-packages/pyflink")):
        if (candidate / "bin" / "flink").is_file() and (candidate / "lib").is_dir():
            return candidate
    raise FailedPrecondition(
        f"no Flink distribution in {venv}: run scripts/setup-flink (or set TIDEGATE_FLINK_VENV)",
        reason="FLINK_NOT_INSTALLED",
    )


def _java_opts(flink_home: Path) -> str:
    """The JVM options the distribution's own config.yaml sets (``--add-opens`` … needed on Java 17)."""
    try:
        text = (flink_home / "conf" / "config.yaml").read_text(encoding="utf-8")
    except OSError:
        return ""
    match = re.search(r"^\s+all:\s*(--add-\S.*)$", text, re.MULTILINE)
    return match.group(1).strip() if match else ""


def write_config(conf_dir: Path, settings: Mapping[str, str], flink_home: Path) -> None:
    """Write a Flink configuration folder: config.yaml (flat keys; the distribution's JVM options) and log configs."""
    conf_dir.mkdir(parents=True, exist_ok=True)
    java_opts = _java_opts(flink_home)  # the CLI needs them as much as the cluster does
    settings = {"env.java.opts.all": java_opts, **settings} if java_opts else settings
    lines = ["# Written by tidegate; rewritten on every start."]
    lines += [f"{key}: {json.dumps(str(value))}" for key, value in settings.items()]
    (conf_dir / "config.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for name in _LOG_FILES:
        source = flink_home / "conf" / name
        if source.is_file():
            shutil.copyfile(source, conf_dir / name)
    # start-foreground logs through the *-console configs: log to the file only.
    if (flink_home / "conf" / "log4j.properties").is_file():
        shutil.copyfile(flink_home / "conf" / "log4j.properties", conf_dir / "log4j-console.properties")


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class FlinkRestClient:
    """A thin client of Flink's REST API (``/jobs/...``); raises ``Unavailable`` when Flink cannot be reached."""

    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def request(self, method: str, path: str, body: Mapping[str, object] | None = None) -> Any:
        """One call; the decoded JSON answer (``{}`` when empty)."""
        try:
            response = self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise Unavailable(f"Flink REST API at {self.base_url} is unreachable: {exc}") from exc
        if response.status_code == 404:
            raise NotFound(f"Flink: {method} {path} not found: {response.text[:500]}")
        if response.status_code >= 400:
            raise FailedPrecondition(f"Flink: {method} {path} answered {response.status_code}: {response.text[:2000]}")
        return response.json() if response.content else {}

    def get(self, path: str) -> Any:
        """GET ``path``."""
        return self.request("GET", path)

    def ready(self) -> bool:
        """Whether the cluster answers and has at least one TaskManager with free or used slots."""
        try:
            overview = self.get("/overview")
        except (TidegateError, ValueError):
            return False
        return int(overview.get("taskmanagers", 0)) > 0 and int(overview.get("slots-total", 0)) > 0

    def job(self, job_id: str) -> dict[str, Any]:
        """``GET /jobs/:id``: state, timestamps and vertices, as cached by Flink (``web.refresh-interval``)."""
        return dict(self.get(f"/jobs/{job_id}"))

    def job_status(self, job_id: str) -> str:
        """``GET /jobs/:id/status``: the job's state now (asked of the JobManager, not of the REST cache)."""
        try:
            return str(self.get(f"/jobs/{job_id}/status").get("status", ""))
        except FailedPrecondition as error:  # an unknown job is a 500 here, not a 404
            if "FlinkJobNotFoundException" in error.message:
                raise NotFound(f"Flink does not know job {job_id}") from None
            raise

    def tasks_running(self, job_id: str) -> bool:
        """Whether every task of the job runs (or has finished), from ``/jobs/overview`` (not cached either)."""
        for job in self.get("/jobs/overview").get("jobs", []):
            if job.get("jid") == job_id:
                tasks = job.get("tasks") or {}
                total = int(tasks.get("total", 0))
                return total > 0 and int(tasks.get("running", 0)) + int(tasks.get("finished", 0)) == total
        return False

    def cancel(self, job_id: str) -> None:
        """``PATCH /jobs/:id?mode=cancel``."""
        self.request("PATCH", f"/jobs/{job_id}?mode=cancel")

    def stop(self, job_id: str, *, drain: bool, target: str) -> str:
        """Stop with a savepoint (``drain``: fire open windows first); returns the trigger id."""
        body = {"drain": drain, "targetDirectory": target, "formatType": "CANONICAL"}
        return str(self.request("POST", f"/jobs/{job_id}/stop", body)["request-id"])

    def trigger_savepoint(self, job_id: str, target: str) -> str:
        """Take a savepoint and keep the job running; returns the trigger id."""
        body = {"cancel-job": False, "target-directory": target, "formatType": "CANONICAL"}
        return str(self.request("POST", f"/jobs/{job_id}/savepoints", body)["request-id"])

    def savepoint_status(self, job_id: str, trigger_id: str) -> tuple[str, str, str]:
        """(``IN_PROGRESS`` | ``COMPLETED``, location, failure) of a savepoint trigger."""
        answer = self.get(f"/jobs/{job_id}/savepoints/{trigger_id}")
        status = str(answer.get("status", {}).get("id", ""))
        operation = answer.get("operation") or {}
        failure = operation.get("failure-cause") or {}
        return status, str(operation.get("location") or ""), str(failure.get("stack-trace") or "")

    def wait_savepoint(self, job_id: str, trigger_id: str, timeout: float, interval: float = 0.05) -> str:
        """Wait for a savepoint trigger, asking every ``interval`` s; its location, or ``FailedPrecondition``."""
        deadline = time.monotonic() + timeout
        while True:
            status, location, failure = self.savepoint_status(job_id, trigger_id)
            if status == "COMPLETED":
                if location:
                    return location
                raise FailedPrecondition(f"Flink savepoint of job {job_id} failed: {failure[:4000]}")
            if time.monotonic() > deadline:
                raise Unavailable(f"Flink savepoint of job {job_id} did not finish within {timeout:.0f} s")
            time.sleep(interval)

    # -- reports: what the engine shows of a job ------------------------------------------

    def job_messages(self, job_id: str) -> list[tuple[str, WorkerMessage]]:
        """(key, message) for the job's state changes, exceptions, checkpoints and savepoints."""
        found: list[tuple[str, WorkerMessage]] = []
        for state, ms in self.job(job_id).get("timestamps", {}).items():
            if ms:
                level = MessageImportance.JOB_MESSAGE_BASIC if state in _MAIN_STATES else _DETAILED
                found.append((f"state:{state}:{ms}", _message(ms, level, f"Flink job is {state}")))
        exceptions = self.get(f"/jobs/{job_id}/exceptions").get("exceptionHistory", {}).get("entries", [])
        for entry in exceptions:
            ms, trace = int(entry.get("timestamp", 0)), str(entry.get("stacktrace", ""))
            where = entry.get("taskName") or "the job"
            text = f"Exception in {where}: {root_cause(trace)}\n\n{trace[:8000]}"
            found.append(
                (
                    f"exception:{ms}:{entry.get('exceptionName')}",
                    _message(ms, MessageImportance.JOB_MESSAGE_ERROR, text),
                )
            )
        try:
            history = self.get(f"/jobs/{job_id}/checkpoints").get("history", [])
        except FailedPrecondition:
            history = []  # a batch job has no checkpoint statistics
        for point in history:
            status, kind = str(point.get("status")), "Savepoint" if point.get("is_savepoint") else "Checkpoint"
            if status == "COMPLETED":
                where = f" at {point['external_path']}" if point.get("is_savepoint") else ""
                level = MessageImportance.JOB_MESSAGE_BASIC if point.get("is_savepoint") else _DETAILED
                text = f"{kind} {point.get('id')} completed{where} ({point.get('checkpoint_type')})"
                ms = int(point.get("latest_ack_timestamp") or point.get("trigger_timestamp") or 0)
            elif status == "FAILED":
                level = MessageImportance.JOB_MESSAGE_WARNING
                text = f"{kind} {point.get('id')} failed: {point.get('failure_message')}"
                ms = int(point.get("failure_timestamp") or point.get("trigger_timestamp") or 0)
            else:
                continue
            found.append((f"checkpoint:{point.get('id')}:{status}", _message(ms, level, text)))
        return found

    def job_metrics(self, job_id: str) -> list[MetricValue]:
        """Records in and out per operator (summed over subtasks) and each operator's output watermark (min)."""
        values: list[MetricValue] = []
        for vertex in self.job(job_id).get("vertices", []):
            base = f"/jobs/{job_id}/vertices/{vertex['id']}/subtasks/metrics"
            names = [str(m["id"]) for m in self.get(base) if _OPERATOR_METRIC.match(str(m["id"]))]
            if not names:
                continue
            for metric in self.get(f"{base}?get={quote(','.join(names), safe=',')}&agg=sum,min"):
                operator, name = str(metric["id"]).rsplit(".", 1)
                watermark = name == "currentOutputWatermark"
                value = metric.get("min") if watermark else metric.get("sum")
                if value is None or (watermark and float(value) <= _NO_WATERMARK):
                    continue
                values.append(MetricValue(name=name, step=operator, value=int(value), origin="dataflow/v1b3"))
        return values

    @staticmethod
    def job_stages(job: Mapping[str, Any]) -> list[StageDetails]:
        """One stage per vertex (a chain of operators); its steps are the chained operators."""
        return [
            StageDetails(
                stage_id=str(v.get("id")),
                state=str(v.get("status")),
                start_time=_time(v.get("start-time")),
                end_time=_time(v.get("end-time")),
                steps=tuple(str(v.get("name", "")).split(" -> ")),
            )
            for v in job.get("vertices", [])
        ]


def root_cause(text: str) -> str:
    """The most telling line of a Flink error: a Python exception line, else the innermost ``Caused by``."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.rstrip().endswith("Traceback (most recent call last):"):
            for candidate in lines[i + 1 :]:
                if candidate.strip() and not candidate.startswith((" ", "\t")):
                    if candidate.startswith("py4j.protocol.Py4JJavaError"):
                        break  # the Java side failed: its innermost cause tells why
                    return candidate.strip()
    # The CLI's own ProgramAbortException ("Python process exits with code: 1") says nothing: stop before it.
    end = next((i for i, line in enumerate(lines) if "ProgramAbortException" in line), len(lines))
    causes = [line.strip()[len("Caused by: ") :] for line in lines[:end] if line.strip().startswith("Caused by: ")]
    causes = causes or [line.strip()[len("Caused by: ") :] for line in lines if line.strip().startswith("Caused by: ")]
    if causes:
        return causes[-1]
    return next((line.strip() for line in lines if line.strip()), "unknown error")


def _message(ms: float, importance: MessageImportance, text: str) -> WorkerMessage:
    return WorkerMessage(time=datetime.fromtimestamp(ms / 1000, tz=UTC), importance=importance, text=text)


def _time(ms: object) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, tz=UTC) if isinstance(ms, int) and ms > 0 else None


_DEFAULT_REST_PORT, _DEFAULT_RPC_PORT = 8081, 6123
_DEFAULT_PORTS = (_DEFAULT_REST_PORT, _DEFAULT_RPC_PORT)


def _chosen_port(wanted: int | None, default: int) -> int:
    """``wanted`` if free (else Unavailable); with none wanted, ``default`` if free, else any free port."""
    if wanted is not None:
        if _port_in_use(wanted):
            raise Unavailable(
                f"cannot start a local Flink cluster: port {wanted} is in use "
                "(another Flink cluster? give its REST address instead, or choose other ports)"
            )
        return wanted
    if not _port_in_use(default):
        return default
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return int(probe.getsockname()[1])


class LocalFlinkCluster:
    """A standalone Flink cluster on this machine: one JobManager and one TaskManager.

    Its folder holds ``conf/`` (written on start), ``log/`` and the processes' output;
    ``start`` waits until the TaskManager has registered.
    """

    def __init__(
        self,
        folder: Path,
        *,
        python: Path,
        rest_port: int | None = None,
        rpc_port: int | None = None,
        task_slots: int = 4,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.flink_home = Path()  # set by start
        self.folder = folder
        self.python = python
        # None: Flink's default port when it is free, another free one when it is not (a
        # Flink cluster of the user's own may hold the defaults).
        self._ports = (rest_port, rpc_port)
        self.rest_port = rest_port or _DEFAULT_REST_PORT
        self.rpc_port = rpc_port or _DEFAULT_RPC_PORT
        self.task_slots = task_slots
        self.extra_settings = dict(settings or {})
        self._processes: list[subprocess.Popen[bytes]] = []

    @property
    def rest_url(self) -> str:
        """The cluster's REST address."""
        return f"http://localhost:{self.rest_port}"

    @property
    def conf_dir(self) -> Path:
        """The configuration folder (also the one the ``flink`` CLI uses to submit)."""
        return self.folder / "conf"

    def settings(self) -> dict[str, str]:
        """The cluster's configuration, as flat keys."""
        savepoints = self.folder / "savepoints"
        checkpoints = self.folder / "checkpoints"
        settings = {
            "env.log.dir": str(self.folder / "log"),
            "env.pid.dir": str(self.folder / "run"),
            "env.stdout-err.redirect-to-file": "true",
            "jobmanager.rpc.address": "localhost",
            "jobmanager.bind-host": "localhost",
            "jobmanager.rpc.port": str(self.rpc_port),
            "jobmanager.memory.process.size": "1024m",
            "taskmanager.host": "localhost",
            "taskmanager.bind-host": "localhost",
            "taskmanager.numberOfTaskSlots": str(self.task_slots),
            "taskmanager.memory.process.size": "2048m",
            # PyFlink's Beam/gRPC plumbing allocates direct memory per job; without room for it
            # a few jobs in, deployments fail with "OutOfMemoryError: Direct buffer memory".
            "taskmanager.memory.task.off-heap.size": "256m",
            "taskmanager.memory.jvm-metaspace.size": "384m",  # each PyFlink job loads ~25 MB of classes
            "parallelism.default": "1",
            "rest.address": "localhost",
            "rest.bind-address": "localhost",
            "rest.port": str(self.rest_port),
            "execution.target": "remote",
            "execution.checkpointing.dir": checkpoints.as_uri(),
            "execution.checkpointing.savepoint-dir": savepoints.as_uri(),
            # Without a bound, a job failing at start restarts forever and never reaches FAILED.
            "restart-strategy.type": "fixed-delay",
            "restart-strategy.fixed-delay.attempts": "3",
            "restart-strategy.fixed-delay.delay": "2 s",
            "metrics.fetcher.update-interval": "2000",
            "python.executable": str(self.python),
            "python.client.executable": str(self.python),
        }
        settings.update(self.extra_settings)
        return settings

    def running(self) -> bool:
        """Whether both processes are alive."""
        return bool(self._processes) and all(p.poll() is None for p in self._processes)

    def start(self, flink_home: Path, timeout: float = 180.0) -> None:
        """Write the configuration, start both processes from ``flink_home`` and wait until jobs can run."""
        if self.running():
            return
        self.stop()  # what is left of a cluster that died
        self.flink_home = flink_home
        self.rest_port, self.rpc_port = (
            _chosen_port(wanted, default) for wanted, default in zip(self._ports, _DEFAULT_PORTS, strict=True)
        )
        for sub in ("log", "run", "savepoints", "checkpoints"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        write_config(self.conf_dir, self.settings(), self.flink_home)
        self._processes = [self._spawn("jobmanager"), self._spawn("taskmanager")]
        client = FlinkRestClient(self.rest_url, timeout=2.0)
        try:
            deadline = time.monotonic() + timeout
            while not client.ready():
                if not self.running() or time.monotonic() > deadline:
                    self.stop()
                    raise Unavailable(
                        f"the local Flink cluster did not start within {timeout:.0f} s; "
                        f"see the logs in {self.folder / 'log'}"
                    )
                time.sleep(0.5)
        finally:
            client.close()

    def revive_taskmanager(self) -> bool:
        """Start the TaskManager again if it exited while the JobManager runs on; whether it did.

        PyFlink's TaskManager can end itself on a fatal error (a cancelled Python job's
        "Reference count must not be negative"). The JobManager keeps its jobs: those
        waiting for task slots get them once the new TaskManager registers.
        """
        if len(self._processes) != 2:
            return False
        jobmanager, taskmanager = self._processes
        if jobmanager.poll() is not None or taskmanager.poll() is None:
            return False
        stop_group(taskmanager, 1.0)  # reap it, and end whatever of its group is left
        self._processes[1] = self._spawn("taskmanager")
        return True

    def _spawn(self, role: str) -> subprocess.Popen[bytes]:
        env = dict(os.environ, FLINK_CONF_DIR=str(self.conf_dir))
        env.pop("PYTHONPATH", None)
        env["PATH"] = f"{self.python.parent}{os.pathsep}{env.get('PATH', '')}"
        with open(self.folder / "log" / f"{role}.console", "ab") as console:
            return subprocess.Popen(
                ["bash", str(self.flink_home / "bin" / f"{role}.sh"), "start-foreground"],
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.folder,
                start_new_session=True,
            )

    def stop(self, timeout: float = 15.0) -> None:
        """Stop both processes (and the Python workers they started): SIGTERM, then SIGKILL."""
        for process in self._processes:
            _signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self._processes:
            stop_group(process, max(0.1, deadline - time.monotonic()))
        self._processes = []


def stop_group(process: subprocess.Popen[bytes], grace: float) -> None:
    """End a child started with ``start_new_session`` and its whole group: SIGTERM, ``grace``, SIGKILL, reap."""
    _signal_group(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while True:
        # Wait without reaping: while the leader is unreaped its group id names our processes alone.
        try:
            if os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                break
        except ChildProcessError:
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    _signal_group(process.pid, signal.SIGKILL)
    process.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
