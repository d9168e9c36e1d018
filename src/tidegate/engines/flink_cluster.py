"""Flink plumbing for the Flink engine: the distribution, its configuration, the REST client.

Flink lives in a virtual environment of its own (``scripts/setup-flink``): the
``apache-flink`` wheel ships a whole Flink distribution inside the ``pyflink`` package
(``bin/``, ``lib/*.jar``, ``conf/``). tidegate never imports PyFlink; it runs the
distribution's scripts and speaks REST.

The local standalone cluster that runs from that distribution is ``flink_local``.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from tidegate.engines.base import WorkerMessage
from tidegate.errors import FailedPrecondition, NotFound, TidegateError, Unavailable
from tidegate.failures import root_cause
from tidegate.model import GraphEdge, GraphNode, JobGraph, MessageImportance, MetricValue, StageDetails
from tidegate.telemetry import ClusterHealth

__all__ = [
    "JAVA_HOME_FILE",
    "FlinkRestClient",
    "find_flink_home",
    "flink_python",
    "job_graph",
    "with_java",
    "write_config",
]

JAVA_HOME_FILE = ".tidegate-java-home"
"""In a Flink virtual environment: the home of the Java ``scripts/setup-flink`` provided where none was found."""

_MAIN_STATES = {"RUNNING", "FINISHED", "FAILED", "CANCELED"}
_DETAILED = MessageImportance.JOB_MESSAGE_DETAILED
_DEBUG = MessageImportance.JOB_MESSAGE_DEBUG
_OPERATOR_METRIC = re.compile(r".+\.(numRecordsIn|numRecordsOut|currentOutputWatermark)$")
_NO_WATERMARK = -9.2e18  # Long.MIN_VALUE: no watermark yet
_LOG_FILES = ("log4j.properties", "log4j-cli.properties", "logback.xml", "logback-console.xml")


def flink_python(venv: Path) -> Path:
    """The Python interpreter of a Flink virtual environment."""
    return venv / "bin" / "python"


def with_java(env: dict[str, str], venv: Path) -> dict[str, str]:
    """``env`` for a Flink process, with a Java: its own ``JAVA_HOME`` or ``java`` on its ``PATH`` when it
    has one, else the Java that ``scripts/setup-flink`` provided into the environment ``venv``."""
    home = env.get("JAVA_HOME", "")
    if (home and (Path(home) / "bin" / "java").is_file()) or shutil.which("java", path=env.get("PATH")):
        return env
    try:
        provided = (venv / JAVA_HOME_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        return env
    if provided and (Path(provided) / "bin" / "java").is_file():
        env["JAVA_HOME"] = provided
        env["PATH"] = f"{Path(provided) / 'bin'}:{env.get('PATH', '')}"
    return env


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

    def health(self, engine: str, timeout: float = 2.0) -> ClusterHealth:
        """The cluster's health from ``GET /overview`` (asked with a short timeout: a scrape waits for it)."""
        try:
            response = self._http.get("/overview", timeout=timeout)
            overview = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            overview = None
        if not isinstance(overview, dict):
            return ClusterHealth(engine, self.base_url, up=False)
        return ClusterHealth(
            engine,
            self.base_url,
            up=True,
            taskmanagers=int(overview.get("taskmanagers", 0)),
            slots_total=int(overview.get("slots-total", 0)),
            slots_available=int(overview.get("slots-available", 0)),
        )

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

    def resource_requirements(self, job_id: str) -> dict[str, Any]:
        """``GET /jobs/:id/resource-requirements``: each vertex's parallelism bounds (adaptive scheduler)."""
        return dict(self.get(f"/jobs/{job_id}/resource-requirements"))

    def set_resource_requirements(self, job_id: str, requirements: Mapping[str, object]) -> None:
        """``PUT /jobs/:id/resource-requirements``: the adaptive scheduler rescales the job in place to them.

        Flink answers only once it has taken the new bounds; the rescale itself follows
        (the job restarts from its latest state at the new parallelism).
        """
        self.request("PUT", f"/jobs/{job_id}/resource-requirements", requirements)

    def vertex_parallelism(self, job_id: str) -> dict[str, int]:
        """Each vertex's parallelism now, from ``GET /jobs/:id``."""
        return {str(v["id"]): int(v.get("parallelism", 0)) for v in self.job(job_id).get("vertices", [])}

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
                # Periodic checkpoints come every few seconds: shown only at the debug level.
                level = MessageImportance.JOB_MESSAGE_BASIC if point.get("is_savepoint") else _DEBUG
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


def job_graph(job: Mapping[str, Any]) -> JobGraph:
    """The job's plan (``GET /jobs/:id`` carries it): a node per vertex (a chain of operators), edges from inputs."""
    plan: Any = job.get("plan") or {}
    if isinstance(plan, str):  # some Flink versions send the plan as a JSON string
        try:
            plan = json.loads(plan)
        except ValueError:
            plan = {}
    names = {str(v.get("id")): str(v.get("name", "")) for v in job.get("vertices", [])}
    planned = [n for n in plan.get("nodes", []) if isinstance(n, Mapping)] if isinstance(plan, Mapping) else []
    nodes: list[GraphNode] = []
    edges: list[GraphEdge] = []
    for node in planned or [{"id": vid} for vid in names]:
        vid = str(node.get("id"))
        name = names.get(vid) or _plain(str(node.get("description") or node.get("operator") or vid))
        steps = tuple(name.split(" -> "))
        nodes.append(GraphNode(id=vid, name=name, kind=str(node.get("operator") or "Vertex"), steps=steps))
        for edge in node.get("inputs") or ():
            if isinstance(edge, Mapping) and edge.get("id") is not None:
                edges.append(
                    GraphEdge(source=str(edge["id"]), target=vid, collection=str(edge.get("ship_strategy", "")))
                )
    return JobGraph(origin="flink-plan", nodes=tuple(nodes), edges=tuple(edges))


def _plain(description: str) -> str:
    """A plan node's description without Flink's HTML (``<br/>``, entities)."""
    text = re.sub(r"<br\s*/?>", " ", description)
    return html.unescape(re.sub(r"<[^>]+>", "", text)).strip()


def _message(ms: float, importance: MessageImportance, text: str) -> WorkerMessage:
    return WorkerMessage(time=datetime.fromtimestamp(ms / 1000, tz=UTC), importance=importance, text=text)


def _time(ms: object) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, tz=UTC) if isinstance(ms, int) and ms > 0 else None
