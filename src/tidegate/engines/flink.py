"""The Flink engine: PyFlink programs and Flink SQL scripts on a Flink cluster.

Flink lives in a virtual environment of its own (``scripts/setup-flink``; apache-flink
pins an old apache-beam). tidegate submits through the warm PyFlink submitter of that
environment kept ready (``flink_warm``), else with its ``flink`` CLI (``flink run
--detached --python ...``), and controls jobs over REST: drain = stop with a
drain savepoint (FINISHED → DRAINED); cancel = ``PATCH ?mode=cancel``; snapshot = a
savepoint; update = ``stop_with_savepoint`` then a launch with ``restore_from`` (keyed
state carries over for operators with stable uids), the new job's program run up to its
graph during the stop (``prepare_launch``, ``flink_prepared``).

A handle's ``ref`` is the Flink job id, chosen before submitting (Flink's
``$internal.pipeline.job-id``), so ``launch`` returns at once while the submission (seconds)
runs in a thread, and ``poll`` says STARTING meanwhile. What the engine asked of a run (a
drain and a stop both end FINISHED in Flink), its launch and the process submitting it
are kept in its record (``flink_runs``, written before the submission) so an engine
started later maps it alike, and finishes a submission its predecessor left: it waits
for that process to end (nothing of it can arrive later), then adopts the job Flink has,
or submits it again under the same Flink job id.

Without ``rest_url`` the engine adopts the local standalone cluster an earlier server left
running (under ``state_dir/flink-cluster``), or starts one on the first launch; it outlives
the engine (``close`` leaves it running; ``stop_cluster`` ends it, a savepoint of each job
first). A run whose local cluster is gone (a reboot, or ``stop_cluster``) is resumed on
a new one from its latest retained checkpoint or savepoint, under the same Flink job id,
and fails only when it left no state. With ``rest_url`` it uses
that cluster, whose task managers must find PyFlink (``python.executable``, which
``flink_conf`` can set for the jobs). A ``.sql`` program runs through a small PyFlink
driver: SET, DDL and queries in order, every INSERT in one job.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import httpx

from tidegate import processes
from tidegate.engines.base import EngineState, Handle, LaunchRequest, RunStatus
from tidegate.engines.base import WorkerMessage as Message
from tidegate.engines.flink_cluster import (
    FlinkRestClient,
    find_flink_home,
    flink_python,
    job_graph,
    with_java,
    write_config,
)
from tidegate.engines.flink_local import LocalFlinkCluster, stop_group
from tidegate.engines.flink_prepared import Prepared, PreparedLaunches
from tidegate.engines.flink_runs import (
    PERSISTED,
    SQL_DRIVER,
    FlinkRun,
    load_run,
    mark_python_mode,
    python_mode_of,
    request_from,
    request_record,
)
from tidegate.engines.flink_scaling import resource_requirements, target_workers
from tidegate.engines.flink_uids import driver_command
from tidegate.engines.flink_warm import NotStarted, WarmSubmitter, submitter_env, warm_job
from tidegate.engines.log_files import tail
from tidegate.errors import FailedPrecondition, InvalidArgument, NotFound, TidegateError, Unavailable
from tidegate.failures import root_cause
from tidegate.model import JobGraph, LogLine, MessageImportance, MetricValue, RuntimeParams, StageDetails
from tidegate.telemetry import ClusterHealth

log = logging.getLogger(__name__)

__all__ = ["CLIENT_JVM_OPTIONS", "FlinkEngine"]

_JOB_ID_LINE = re.compile(r"JobID\s+([0-9a-f]{32})")
_DRAIN_RETRY_SECONDS = 3.0
_STARTING_POLL_SECONDS = 0.1
_DRAIN_CHECK_SECONDS = 1.0
_LATE_ACCEPT_WAITS = (0.0, 1.0, 2.0, 4.0)
"""After a submission that timed out, the pauses before asking again whether Flink has its job (7 s in all)."""
CLIENT_JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"  # the CLI lives seconds: skip the optimizing JIT
_PREPARED_NOTE = "Submitted by the warm PyFlink submitter (its graph built while the job it replaces stopped)"
_BASIC, _DETAILED = MessageImportance.JOB_MESSAGE_BASIC, MessageImportance.JOB_MESSAGE_DETAILED


class FlinkEngine:
    """The Engine seam over a Flink cluster: a local standalone one, or any given by its REST address."""

    name = "flink"

    def __init__(
        self,
        *,
        state_dir: Path,
        rest_url: str | None = None,
        flink_venv: Path | None = None,
        rest_port: int | None = None,
        rpc_port: int | None = None,
        task_slots: int = 4,
        checkpoint_interval: float = 10.0,
        python_mode: str = "",
        savepoint_dir: str | None = None,
        flink_conf: Mapping[str, str] | None = None,
        submit_timeout: float = 300.0,
        savepoint_timeout: float = 120.0,
        warm_submit: bool = True,
        warm_submitters: int = 2,
    ) -> None:
        self.state_dir = state_dir.absolute()
        self.flink_venv = (flink_venv or Path(os.environ.get("TIDEGATE_FLINK_VENV", ".flink-venv"))).absolute()
        self._flink_conf = {"env.java.opts.client": CLIENT_JVM_OPTIONS, **(flink_conf or {})}
        self._submit_timeout = submit_timeout
        self._savepoint_timeout = savepoint_timeout
        self._cluster: LocalFlinkCluster | None = None
        if rest_url is None:
            self._cluster = LocalFlinkCluster(
                self.state_dir / "flink-cluster",
                python=flink_python(self.flink_venv),
                rest_port=rest_port,
                rpc_port=rpc_port,
                task_slots=task_slots,
                checkpoint_interval=checkpoint_interval,
                python_mode=python_mode or "thread",
                settings=self._flink_conf,
            )
        self._python_mode_asked = python_mode  # for a cluster given by address (the local one has its own)
        self.rest_url = rest_url or f"http://localhost:{rest_port or 8081}"
        if self._cluster is not None and self._cluster.adopt():
            self.rest_url = self._cluster.rest_url
            log.info("adopted the local Flink cluster left running at %s", self.rest_url)
        self._savepoint_dir = (savepoint_dir or (self.state_dir / "flink-savepoints").as_uri()).rstrip("/")
        self._rest = FlinkRestClient(self.rest_url)
        self._runs: dict[str, FlinkRun] = {}
        self._lock = threading.Lock()
        self._cluster_lock = threading.Lock()
        submitters = self.state_dir / "flink-submitter"
        self._warm = WarmSubmitter(flink_python(self.flink_venv), self._submitter_env, submitters, warm_submitters)
        self._prepared = PreparedLaunches(self._warm, submit_timeout, keep_for=2 * savepoint_timeout)
        if not warm_submit:
            self._warm.close()
        elif rest_url is not None or (self._cluster is not None and self._cluster.running()):
            self._warm.start()  # the cluster is there already: the first job goes warm too

    def start_cluster(self) -> None:
        """Make sure the cluster can take jobs: start the local one if needed (blocks ~15 s)."""
        with self._cluster_lock:
            self._revive_taskmanager()
            if self._cluster is not None and not self._cluster.running():
                self._cluster.start(find_flink_home(self.flink_venv))
                log.info("local Flink cluster started; its web UI and REST API: %s", self._cluster.rest_url)
                if self._cluster.rest_url != self.rest_url:  # its default port was taken: it chose another
                    self.rest_url = self._cluster.rest_url
                    self._rest, stale = FlinkRestClient(self.rest_url), self._rest
                    stale.close()
        self._warm.start()  # not under the cluster lock: the submitter's configuration takes it (a remote cluster)

    def _revive_taskmanager(self) -> None:
        """The local cluster's TaskManager, started again if it ended itself (its jobs wait for its slots)."""
        if self._cluster is not None and self._cluster.revive_taskmanager():
            log.warning("the local Flink cluster's TaskManager had exited; started it again")

    def warm_submitter_ready(self, timeout: float = 0.0) -> bool:
        """Whether the next job would go through the warm submitter; waits up to ``timeout`` for one to be ready."""
        return self._warm.wait_ready(timeout)

    def cluster_health(self) -> ClusterHealth:
        """Whether the Flink cluster answers, its task managers and slots (``tidegate_engine_cluster_…``)."""
        return self._rest.health(self.name)

    def close(self) -> None:
        """Let go of the cluster: it runs on, with its jobs, for the next server (submissions in flight end alone)."""
        self._prepared.close()
        self._warm.close()
        self._rest.close()

    def stop_cluster(self, *, savepoints: bool = True) -> list[tuple[str, str]] | None:
        """Stop the local cluster on purpose: a savepoint of each running job first; ``(Flink job id, savepoint)``.

        None when no local cluster was running. The jobs are resumed from those savepoints
        when a server next finds the cluster gone.
        """
        if self._cluster is None or not self._cluster.adopt():
            return None
        taken = []
        for job in self._rest.get("/jobs/overview").get("jobs", []) if savepoints else []:
            if job.get("state") != "RUNNING":
                continue
            job_id = str(job["jid"])
            try:
                trigger = self._rest.trigger_savepoint(job_id, str(self._cluster.savepoints / job_id))
                location = self._rest.wait_savepoint(job_id, trigger, self._savepoint_timeout)
                mark_python_mode(location, self._run(Handle(self.name, job_id)).python_mode or "process")
                taken.append((job_id, location))
            except TidegateError as error:
                log.warning("no savepoint of Flink job %s before the cluster stops: %s", job_id, error)
        self._cluster.stop()
        return taken

    # -- the Engine protocol ---------------------------------------------------------------

    def launch(self, request: LaunchRequest) -> Handle:
        """Submit in a background thread; the returned handle's ref is the job's Flink id."""
        program = Path(request.program)
        if program.suffix not in (".py", ".sql") or not program.is_file():
            raise InvalidArgument(f"not a PyFlink program (.py) or Flink SQL script (.sql): {program}")
        tmp = request.workdir.absolute() / "flink"
        tmp.mkdir(parents=True, exist_ok=True)
        prepared = self._prepared.take(request) if request.restore_from else None
        job_id = prepared.job_id if prepared is not None else os.urandom(16).hex()
        run = FlinkRun(job_id=job_id, tmp=str(tmp), request=request_record(request), in_flight=True)
        run.python_mode = self._python_mode(request)
        if prepared is not None and prepared.python_mode != run.python_mode:  # built in a mode its state is not in
            prepared.drop()
            prepared = None
        self._save(run)  # before it is submitted: a server that restarts meanwhile finds the submission
        with self._lock:
            self._runs[run.job_id] = run
        self._note(run, _BASIC, f"Submitting {program.name} to Flink as job {run.job_id}")
        args = (run, request, prepared)
        threading.Thread(target=self._submit, args=args, name=f"flink-{run.job_id}", daemon=True).start()
        return Handle(engine=self.name, ref=run.job_id)

    def prepare_launch(self, request: LaunchRequest) -> None:
        """Run the program of an update's new job up to its graph now, while the old job stops (``flink_prepared``).

        ``launch`` of the same request with the old job's savepoint as ``restore_from``
        then only submits it. A ``.sql`` script submits through the Table API, which
        cannot wait for the savepoint: it is launched as any job.
        """
        program = Path(request.program)
        if program.suffix != ".py" or not program.is_file():
            return
        fresh = replace(request, restore_from="")
        self._prepared.prepare(fresh, os.urandom(16).hex(), self._python_mode(fresh), self._deferred_job)

    def forget_launch(self, job_id: str) -> None:
        """What ``prepare_launch`` made ready for the tidegate job ``job_id`` is not to be launched: dropped."""
        self._prepared.drop(job_id)

    def _deferred_job(self, request: LaunchRequest, job_id: str, python_mode: str) -> dict[str, object]:
        tmp = request.workdir.absolute() / "flink"
        tmp.mkdir(parents=True, exist_ok=True)
        home = find_flink_home(self.flink_venv)
        return warm_job(tmp, job_id, request, home, python_mode, ship_python_jar=self._ships_python_jar(), defer=True)

    def _ships_python_jar(self) -> bool:
        return self._cluster is None or not self._cluster.has_python_jar  # else the cluster has flink-python

    def _python_mode(self, request: LaunchRequest) -> str:
        """The mode a job's Python runs in: its state's when restored, else the local cluster's or the one asked.

        A savepoint with no mode beside it was taken before modes were written: in process
        mode. On a cluster given by its address and no mode asked, PyFlink's default
        (process) decides, and "" is kept.
        """
        default = self._cluster.python_mode if self._cluster is not None else self._python_mode_asked
        if request.restore_from and default:
            return python_mode_of(request.restore_from) or "process"
        return default

    def poll(self, handle: Handle) -> RunStatus:
        """Flink's job state as an EngineState; FAILED carries Flink's root exception."""
        run = self._run(handle)
        if run.final is not None:
            return run.final
        if self._cluster_lock.acquire(blocking=False):  # not while the cluster starts: that takes seconds
            try:
                self._revive_taskmanager()
            finally:
                self._cluster_lock.release()
        if not run.submitted:
            if not run.submit_error:
                return self._submission(run)
            ended = EngineState.CANCELLED if run.requested == "cancel" else EngineState.FAILED
            return self._finish(run, RunStatus(ended, run.submit_error))
        if self._cluster is not None and not self._cluster.running():
            return self._resume(run)  # its local cluster is gone: never ask whatever else answers on its port
        if not run.seen_running and time.monotonic() - run.asked_at < _STARTING_POLL_SECONDS:
            return RunStatus(EngineState.STARTING)  # the scheduler ticks fast while a job starts: spare Flink
        run.asked_at = time.monotonic()
        try:
            # Not GET /jobs/:id: Flink's REST cache serves that up to web.refresh-interval (3 s) late.
            state = self._rest.job_status(run.job_id)
            all_running = state == "RUNNING" and (run.seen_running or self._rest.tasks_running(run.job_id))
        except NotFound:
            if self._cluster is not None and run.cluster != self._cluster.cluster_id:
                return self._resume(run)  # submitted to a local cluster that is gone
            return self._finish(run, RunStatus(EngineState.FAILED, f"Flink does not know job {run.job_id}"))
        except Unavailable:
            if self._cluster is not None and not self._cluster.running():
                return self._resume(run)
            raise
        if state == "FINISHED":
            finished = {"drain": EngineState.DRAINED, "stop": EngineState.CANCELLED, "cancel": EngineState.CANCELLED}
            return self._finish(run, RunStatus(finished.get(run.requested, EngineState.SUCCEEDED)))
        if state == "CANCELED":
            return self._finish(run, RunStatus(EngineState.CANCELLED))
        if state == "FAILED":
            return self._finish(run, RunStatus(EngineState.FAILED, self._failure(run.job_id)))
        if all_running:
            if not run.seen_running:
                self._warm.start()  # the next job's submitter: now, not to slow down this job's start
            run.seen_running, run.resuming = True, False
            if run.requested == "drain":
                self._drive_drain(run)
        return RunStatus(EngineState.RUNNING if run.seen_running or run.resuming else EngineState.STARTING)

    def _resume(self, run: FlinkRun) -> RunStatus:
        """The run's local cluster is gone: launch it again on a new one from its latest state, if it left any."""
        if run.requested in ("cancel", "stop"):  # it was being stopped: nothing of it runs, nothing more is written
            return self._finish(run, RunStatus(EngineState.CANCELLED))
        location = self._latest_state(run.job_id)
        if location is None or not run.request:
            why = "it left no checkpoint or savepoint to resume from" if run.request else "its launch was not kept"
            return self._finish(
                run, RunStatus(EngineState.FAILED, f"the local Flink cluster this job ran on is gone, and {why}")
            )
        request = request_from(run.request, restore_from=location)
        run.python_mode = run.python_mode or "process"  # a run recorded before thread mode ran in process mode
        run.submitted, run.submit_error, run.seen_running, run.resuming = False, "", False, True
        run.in_flight = True
        self._note(
            run,
            MessageImportance.JOB_MESSAGE_WARNING,
            f"The local Flink cluster this job ran on is gone: resuming it from its latest state, {location}",
        )
        threading.Thread(target=self._submit, args=(run, request), name=f"flink-{run.job_id}", daemon=True).start()
        return RunStatus(EngineState.RUNNING)

    def _latest_state(self, job_id: str) -> str | None:
        """The newest retained checkpoint or savepoint of a Flink job in the local cluster's folder."""
        assert self._cluster is not None
        found = [
            *self._cluster.checkpoints.glob(f"{job_id}/chk-*/_metadata"),
            *self._cluster.savepoints.glob(f"{job_id}/*/_metadata"),
        ]
        if not found:
            return None
        return str(max(found, key=lambda path: path.stat().st_mtime).parent)

    def cancel(self, handle: Handle) -> None:
        """Cancel the Flink job (once submitted, if the submission is still in flight). Idempotent."""
        run = self._run(handle)
        if run.final is None:
            self._request(run, "cancel")
            if run.submitted and (self._cluster is None or self._cluster.running()):
                with contextlib.suppress(NotFound, FailedPrecondition):  # already ended
                    self._rest.cancel(run.job_id)

    def drain(self, handle: Handle) -> None:
        """Stop with a drain savepoint: sources stop, open windows fire, the job ends DRAINED."""
        run = self._run(handle)
        if run.final is None and run.requested != "cancel":
            self._request(run, "drain")
            if run.submitted:
                self._drive_drain(run)

    def snapshot(self, handle: Handle, target: Path) -> str:
        """Take a savepoint into ``target`` and wait for it (up to ``savepoint_timeout``); its location."""
        run = self._submitted(handle)
        trigger = self._rest.trigger_savepoint(run.job_id, str(target.absolute()))
        location = self._rest.wait_savepoint(run.job_id, trigger, self._savepoint_timeout)
        mark_python_mode(location, run.python_mode)
        self._note(run, _BASIC, f"Snapshot written to {location}")
        return location

    def stop_with_savepoint(self, handle: Handle, target: Path) -> str:
        """Stop the job with a savepoint, no drain (for an update); waits and returns the savepoint's location.

        The run then ends CANCELLED: nothing more is written, and its in-flight state
        (open windows included) is in the savepoint for the job that replaces it.
        """
        run = self._submitted(handle)
        self._request(run, "stop")
        try:
            trigger = self._rest.stop(run.job_id, drain=False, target=str(target.absolute()))
            location = self._rest.wait_savepoint(run.job_id, trigger, self._savepoint_timeout)
        except Exception:
            self._request(run, "")
            raise
        mark_python_mode(location, run.python_mode)
        self._note(run, _BASIC, f"Stopped with a savepoint at {location}")
        return location

    def messages(self, handle: Handle, after: int) -> tuple[list[Message], int]:
        """State changes, exceptions, checkpoints, savepoints and the engine's notes found since cursor ``after``.

        The cursor is the time (microseconds since the epoch) at which the engine found
        the last message it handed out: messages come in the order they are found, so one
        that Flink reports late is not skipped. An engine started later (a restarted
        server's) is first asked with its predecessor's cursor: what Flink reported up to
        then was handed out already, and is not again.
        """
        run = self._run(handle)
        found = [(f"note:{i}", _message(at * 1000, level, text)) for i, (at, level, text) in enumerate(run.notes)]
        if run.submitted:
            with contextlib.suppress(TidegateError):
                found += self._rest.job_messages(run.job_id)
        with self._lock:
            if run.floor is None:
                run.floor = after
            for key, message in sorted(found, key=lambda item: (item[1].time, item[0])):
                if key in run.logged:
                    continue
                run.logged.add(key)
                if not key.startswith("note:") and _micros(message.time) <= run.floor:
                    continue  # reported before this engine started, and handed out then
                last = run.log[-1][0] if run.log else run.floor
                run.log.append((max(_micros(datetime.now(UTC)), last + 1), message))
            fresh = [(stamp, message) for stamp, message in run.log if stamp > after]
            return [message for _, message in fresh], (fresh[-1][0] if fresh else after)

    def metrics(self, handle: Handle) -> list[MetricValue]:
        """Records in and out per operator and output watermarks (the last seen, once the job has ended)."""
        run = self._run(handle)
        if run.submitted and not (run.final is not None and run.last_metrics):
            with contextlib.suppress(TidegateError):
                found = self._rest.job_metrics(run.job_id)
                for _ in range(3 if run.seen_running and run.final is None and not run.last_metrics else 0):
                    if found:
                        break
                    # Flink fetches metrics when asked, in the background: a first request finds none yet.
                    time.sleep(0.3)
                    found = self._rest.job_metrics(run.job_id)
                run.last_metrics = found or run.last_metrics
        return list(run.last_metrics)

    def logs(self, handle: Handle, cursor: str) -> tuple[list[LogLine], str]:
        """What the job's driver (the program submitting it) printed, since ``cursor``.

        What the job's operators print goes to the TaskManagers' own output, shared by every job
        of the cluster, and is not handed out per job.
        """
        run = self._run(handle)
        if not run.tmp:
            return [], cursor
        ended = run.process is None or run.process.poll() is not None
        return tail({"driver": Path(run.tmp) / "submit.log"}, cursor, ended=ended)

    def stages(self, handle: Handle) -> list[StageDetails]:
        """One stage per Flink vertex (a chain of operators); its steps are the operators."""
        run = self._run(handle)
        with contextlib.suppress(TidegateError):
            return self._rest.job_stages(self._rest.job(run.job_id)) if run.submitted else []
        return []

    def plan(self, handle: Handle) -> JobGraph | None:
        """Flink's job plan: one node per vertex (a chain of operators), as ``stages`` lists them."""
        run = self._run(handle)
        if not run.submitted:
            return None
        with contextlib.suppress(TidegateError):
            return job_graph(self._rest.job(run.job_id))
        return None

    def workers(self, handle: Handle) -> int:
        """The job's parallelism (its widest vertex) while all its tasks run; 0 while it restarts."""
        run = self._submitted(handle)
        parallelism = self._rest.vertex_parallelism(run.job_id)
        if not parallelism or not self._rest.tasks_running(run.job_id):
            return 0
        return max(parallelism.values())

    def rescale(self, handle: Handle, params: RuntimeParams) -> tuple[int, int]:
        """``PUT /jobs/:id/resource-requirements`` with the bounds: the adaptive scheduler rescales in place.

        Flink restarts the job from its latest checkpoint at the new parallelism (Flink's
        default scheduler refuses: the cluster needs ``jobmanager.scheduler: adaptive``).
        """
        run = self._submitted(handle)
        parallelism = self._rest.vertex_parallelism(run.job_id)
        if not parallelism:
            raise FailedPrecondition(f"Flink job {run.job_id} has no vertices to rescale yet")
        current = max(parallelism.values())
        health = self._rest.health(self.name)
        room = current + health.slots_available if health.up else None
        self._rest.set_resource_requirements(run.job_id, resource_requirements(list(parallelism), params, current))
        target = target_workers(params, current, room)
        if run.request:  # a relaunch on a new cluster starts at the new parallelism
            run.request["num_workers"] = target
            self._save(run)
        self._note(run, _DETAILED, f"Asked Flink to run job {run.job_id} at {target} (now {current})")
        return current, target

    def release(self, handle: Handle) -> None:
        """End a submission still in flight and delete the run's temporary files (savepoints stay)."""
        run = self._run(handle)
        if run.process is not None and run.process.poll() is None:
            stop_group(run.process, 2.0)
        if not run.submitted and run.submit_error:  # Flink may have taken the job later still: none is left running
            with contextlib.suppress(TidegateError):
                self._rest.cancel(run.job_id)
        if run.tmp:
            shutil.rmtree(run.tmp, ignore_errors=True)
        self._record_path(run.job_id).unlink(missing_ok=True)
        with self._lock:
            self._runs.pop(run.job_id, None)

    # -- submission ----------------------------------------------------------------------------

    def _submission(self, run: FlinkRun) -> RunStatus:
        """A run on its way to Flink: submitted by this engine, or by one that stopped meanwhile (then adopted)."""
        waiting = RunStatus(EngineState.RUNNING if run.resuming else EngineState.STARTING)
        if run.in_flight or time.monotonic() - run.asked_at < _STARTING_POLL_SECONDS:
            return waiting
        run.asked_at = time.monotonic()
        pid, started = int(run.submitter.get("pid") or 0), str(run.submitter.get("started") or "")
        if processes.is_alive(pid, started):
            return waiting  # the earlier server's submission goes on without it: wait for its end, then look
        try:
            self._rest.job_status(run.job_id)
        except NotFound:
            if not run.request:
                return self._finish(run, RunStatus(EngineState.FAILED, "the engine submitting this job stopped"))
            # Its submission ended without Flink having the job: submit it again, under the same Flink job id.
            run.in_flight = run.resubmitted = True
            self._note(run, _DETAILED, f"Submitting job {run.job_id} again: the server stopped while it was submitted")
            args = (run, request_from(run.request))
            threading.Thread(target=self._submit, args=args, name=f"flink-{run.job_id}", daemon=True).start()
            return waiting
        except Unavailable:
            return waiting
        run.submitted, run.cluster = True, self._cluster.cluster_id if self._cluster is not None else ""
        self._save(run)
        self._note(run, _DETAILED, f"Flink accepted job {run.job_id}")
        self._asked_while_submitted(run)
        return waiting

    def _submit(self, run: FlinkRun, request: LaunchRequest, prepared: Prepared | None = None) -> None:
        try:
            self._submit_once(run, request, prepared)
        finally:
            run.in_flight = False

    def _submit_once(self, run: FlinkRun, request: LaunchRequest, prepared: Prepared | None = None) -> None:
        try:
            try:
                self.start_cluster()
                warm = self._submit_prepared(run, request, prepared) if prepared is not None else None
                warm = warm if warm is not None else self._submit_warm(run, request)
                output, code = warm if warm is not None else self._run_cli(run, request)
            except Unavailable as exc:  # e.g. the CLI timed out: Flink may have the job all the same
                warm, output, code = None, f"Flink submission failed: {exc}", 1
            accepted = [run.job_id] if warm is not None and code == 0 else _JOB_ID_LINE.findall(output)
            if (code != 0 or not accepted) and self._accepted_all_the_same(run, output):
                code, accepted = 0, [run.job_id]
            if code != 0 or not accepted:
                run.submit_error = "Flink did not accept the job: " + root_cause(output) + "\n\n" + output[-20000:]
            elif accepted != [run.job_id]:
                run.submit_error = f"Flink ran jobs {accepted}, not the one job {run.job_id} asked for"
                for job_id in accepted:
                    with contextlib.suppress(TidegateError):
                        self._rest.cancel(job_id)
            else:
                run.submitted = True
                run.cluster = self._cluster.cluster_id if self._cluster is not None else ""
                self._note(run, _DETAILED, f"Flink accepted job {run.job_id}")
            self._save(run)
            if run.submitted:
                self._asked_while_submitted(run)
        except Exception as exc:  # a thread has nobody to raise to: poll reports it
            run.submit_error = run.submit_error or f"Flink submission failed: {exc}"

    def _accepted_all_the_same(self, run: FlinkRun, output: str) -> bool:
        """Whether Flink has the run's job although its submission ended in an error.

        The job id is the run's own, so Flink having it means Flink took this submission (or
        an earlier one of the same run): a client that timed out waiting for Flink's answer
        (``AskTimeoutException`` on a busy machine), or a program that fails after it
        submitted. The job runs, and is reported as running, never as FAILED with an orphan
        left holding slots. A timeout is asked about again for a few seconds: Flink may
        still be taking the job in.
        """
        cause = root_cause(output)
        waits = _LATE_ACCEPT_WAITS if "imeout" in cause or "did not submit within" in cause else (0.0,)
        for wait in waits:
            time.sleep(wait)
            with contextlib.suppress(TidegateError):  # the cluster is not there: nothing of the job either
                if self._flink_has(run.job_id):
                    if not run.resubmitted:  # an earlier submission of the run getting there first is no error
                        self._note(
                            run,
                            MessageImportance.JOB_MESSAGE_WARNING,
                            f"The submission ended in an error, but Flink has job {run.job_id}, which runs: {cause}",
                        )
                    return True
        return False

    def _asked_while_submitted(self, run: FlinkRun) -> None:
        """A cancel or a drain asked while the job was on its way to Flink: sent now that Flink has it."""
        if run.requested == "cancel":
            with contextlib.suppress(NotFound, FailedPrecondition):
                self._rest.cancel(run.job_id)
        elif run.requested == "drain":
            self._drive_drain(run)

    def _run_cli(self, run: FlinkRun, request: LaunchRequest) -> tuple[str, int]:
        home, tmp = find_flink_home(self.flink_venv), Path(run.tmp)
        command = [str(home / "bin" / "flink"), "run", "--detached", f"-D$internal.pipeline.job-id={run.job_id}"]
        command += ["--parallelism", str(max(1, request.num_workers))]
        command += [f"-Dpython.execution-mode={run.python_mode}"] if run.python_mode else []
        if request.restore_from:
            command += ["--fromSavepoint", request.restore_from]
            if request.options.get("allowNonRestoredState"):
                command.append("--allowNonRestoredState")
        program = Path(request.program).absolute()
        if program.suffix == ".sql":
            driver = tmp / "sql_driver.py"
            driver.write_text(SQL_DRIVER, encoding="utf-8")
            command += ["--python", str(driver), str(program), "streaming" if request.streaming else "batch"]
        elif request.state_uids:  # operators renamed by updates run under the uids their state has
            command += driver_command(tmp, request.state_uids, program, request.args)
        else:
            command += ["--python", str(program), *request.args]
        env = dict(os.environ, FLINK_CONF_DIR=str(self._client_conf(home)), FLINK_LOG_DIR=str(tmp / "log"))
        env.pop("PYTHONPATH", None)
        env.pop("VIRTUAL_ENV", None)
        env["PATH"] = f"{self.flink_venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env = with_java(env, self.flink_venv)
        with open(tmp / "submit.log", "wb") as log:
            run.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=program.parent,
                start_new_session=True,  # its own group: stop_group ends the CLI and its Python client alike
            )
            self._note_submitter(run, run.process.pid)
            try:
                code = run.process.wait(self._submit_timeout)
            except subprocess.TimeoutExpired:
                stop_group(run.process, 2.0)
                raise Unavailable(f"the flink CLI did not submit within {self._submit_timeout:.0f} s") from None
        return (tmp / "submit.log").read_text(encoding="utf-8", errors="replace"), code

    def _submit_warm(self, run: FlinkRun, request: LaunchRequest) -> tuple[str, int] | None:
        """Submit through the ready PyFlink submitter: its output and 0 once Flink has the job; None: submit cold."""
        submitter = self._warm.take()
        if submitter is None:
            return None
        home = find_flink_home(self.flink_venv)
        job = warm_job(
            Path(run.tmp), run.job_id, request, home, run.python_mode, ship_python_jar=self._ships_python_jar()
        )
        self._note_submitter(run, submitter.process.pid)
        try:
            error = submitter.submit(job, self._submit_timeout)
        except NotStarted as why:
            log.warning("the warm PyFlink submitter did not take job %s (%s): submitting it cold", run.job_id, why)
            return None
        return self._warm_result(run, error, "Submitted by the warm PyFlink submitter")

    def _submit_prepared(self, run: FlinkRun, request: LaunchRequest, prepared: Prepared) -> tuple[str, int] | None:
        """Submit the graph ``prepare_launch`` built, from ``request.restore_from``; None: submit it as any job."""
        submitter = prepared.wait(self._submit_timeout)
        if submitter is None or not request.restore_from:
            prepared.drop()
            return None
        self._note_submitter(run, submitter.process.pid)
        allow = bool(request.options.get("allowNonRestoredState"))
        try:
            error = submitter.finish(request.restore_from, allow, self._submit_timeout)
        except NotStarted as why:
            log.warning("the prepared PyFlink submitter of job %s had ended (%s): submitting it anew", run.job_id, why)
            return None
        return self._warm_result(run, error, _PREPARED_NOTE)

    def _warm_result(self, run: FlinkRun, error: str, note: str) -> tuple[str, int]:
        """A warm submission's output and 0 once Flink has the job, else 1 (its error)."""
        output = (Path(run.tmp) / "submit.log").read_text(encoding="utf-8", errors="replace")
        submitted = self._flink_has(run.job_id)
        if submitted:  # even if the program failed afterwards: the job is Flink's (see _accepted_all_the_same)
            self._note(run, _DETAILED, note)
        elif not error:
            error = f"the program ended without submitting job {run.job_id} (did it call execute()?)"
        if error:
            self._warm.start()  # the next submitter may start: no job starts, or one whose program ended badly
            return f"{output}\n{error}\n", 1
        return output, 0

    def _note_submitter(self, run: FlinkRun, pid: int) -> None:
        """Keep in the run's record which process submits it: a server started meanwhile waits for its end."""
        run.submitter = {"pid": pid, "started": processes.started(pid)}
        self._save(run)

    def _flink_has(self, job_id: str) -> bool:
        try:
            self._rest.job_status(job_id)
        except NotFound:
            return False
        return True

    def _submitter_env(self) -> dict[str, str]:
        home = find_flink_home(self.flink_venv)
        jvm_options = self._flink_conf.get("env.java.opts.client", "")
        return submitter_env(self.flink_venv, self._client_conf(home), self.state_dir / "flink-submitter", jvm_options)

    def _client_conf(self, home: Path) -> Path:
        """The CLI's configuration folder: the local cluster's, or one pointing at ``rest_url``."""
        if self._cluster is not None:
            return self._cluster.conf_dir
        url, conf_dir = httpx.URL(self.rest_url), self.state_dir / "flink-client"
        settings = {
            "rest.address": url.host,
            "rest.port": str(url.port or (443 if url.scheme == "https" else 80)),
            "execution.target": "remote",
            "python.client.executable": str(flink_python(self.flink_venv)),
            **self._flink_conf,
        }
        with self._cluster_lock:
            write_config(conf_dir, settings, home)
        return conf_dir

    # -- helpers -------------------------------------------------------------------------------

    def _failure(self, job_id: str) -> str:
        with contextlib.suppress(TidegateError):
            entries = self._rest.get(f"/jobs/{job_id}/exceptions").get("exceptionHistory", {}).get("entries", [])
            if entries:
                traces = [entries[0], *entries[0].get("concurrentExceptions", [])]
                full = "\n".join(str(entry.get("stacktrace", "")) for entry in traces)
                return root_cause(full) + "\n\n" + full[:30000]
        return f"Flink job {job_id} failed (Flink kept no exception)"

    def _finish(self, run: FlinkRun, status: RunStatus) -> RunStatus:
        run.final = status
        self._warm.start()  # if the run ended before it was seen running
        return status

    def _drive_drain(self, run: FlinkRun) -> None:
        """Trigger the drain, and again while Flink refuses it (e.g. before all tasks run)."""
        if run.trigger is not None:
            trigger_id, at = run.trigger
            now = time.monotonic()
            if now - at < _DRAIN_RETRY_SECONDS or now - run.drain_checked < _DRAIN_CHECK_SECONDS:
                return  # not yet worth asking: spare Flink, which is busy draining
            run.drain_checked = now
            try:
                status, location, failure = self._rest.savepoint_status(run.job_id, trigger_id)
            except TidegateError:
                status, location, failure = "COMPLETED", "", "the drain request failed"
            if status != "COMPLETED" or location:
                return
            self._note(run, MessageImportance.JOB_MESSAGE_WARNING, f"Drain not taken, retrying: {failure[:500]}")
        trigger_id = ""  # a failed request is retried like a refused drain
        with contextlib.suppress(TidegateError):
            trigger_id = self._rest.stop(run.job_id, drain=True, target=f"{self._savepoint_dir}/{run.job_id}")
        run.trigger = (trigger_id, time.monotonic())

    def _request(self, run: FlinkRun, what: str) -> None:
        run.requested = what
        self._save(run)

    def _note(self, run: FlinkRun, importance: MessageImportance, text: str) -> None:
        run.notes.append((time.time(), importance, text))

    def _submitted(self, handle: Handle) -> FlinkRun:
        run = self._run(handle)
        if not run.submitted or run.final is not None:
            raise FailedPrecondition(f"Flink job {run.job_id} is not running")
        return run

    def _record_path(self, job_id: str) -> Path:
        return self.state_dir / "flink-runs" / f"{job_id}.json"

    def _save(self, run: FlinkRun) -> None:
        path = self._record_path(run.job_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{threading.get_ident()}")  # replaced whole: never read half-written
        tmp.write_text(json.dumps({name: getattr(run, name) for name in PERSISTED}), encoding="utf-8")
        os.replace(tmp, path)

    def _run(self, handle: Handle) -> FlinkRun:
        if handle.engine != self.name or not re.fullmatch(r"[0-9a-f]{32}", handle.ref):
            raise NotFound(f"not a Flink run: {handle}")
        with self._lock:
            if handle.ref not in self._runs:
                self._runs[handle.ref] = load_run(self._record_path(handle.ref), handle.ref)
            return self._runs[handle.ref]


def _micros(when: datetime) -> int:
    return int(when.timestamp() * 1_000_000)


def _message(ms: float, importance: MessageImportance, text: str) -> Message:
    return Message(time=datetime.fromtimestamp(ms / 1000, tz=UTC), importance=importance, text=text)
