"""The Flink engine: PyFlink programs and Flink SQL scripts on a Flink cluster.

Flink lives in a virtual environment of its own (``scripts/setup-flink``; apache-flink
pins an old apache-beam). tidegate submits through the warm PyFlink submitters of that
environment kept ready (``flink_warm``), else with its ``flink`` CLI (``flink run
--detached --python ...``): the engine's submitting half is ``flink_submission``. It
controls jobs over REST: drain = stop with a
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
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from tidegate.engines.base import EngineState, Handle, LaunchRequest, RunStatus
from tidegate.engines.base import WorkerMessage as Message
from tidegate.engines.flink_cluster import (
    FlinkRestClient,
    find_flink_home,
    flink_python,
    job_graph,
)
from tidegate.engines.flink_local import LocalFlinkCluster, stop_group
from tidegate.engines.flink_prepared import PreparedLaunches
from tidegate.engines.flink_runs import (
    PERSISTED,
    FlinkRun,
    load_run,
    mark_python_mode,
    python_mode_of,
    request_from,
    request_record,
)
from tidegate.engines.flink_scaling import resource_requirements, target_workers
from tidegate.engines.flink_submission import _STARTING_POLL_SECONDS, FlinkSubmission
from tidegate.engines.flink_warm import WarmSubmitter, warm_job
from tidegate.engines.log_files import tail
from tidegate.errors import FailedPrecondition, InvalidArgument, NotFound, TidegateError, Unavailable
from tidegate.failures import root_cause
from tidegate.model import JobGraph, LogLine, MessageImportance, MetricValue, RuntimeParams, StageDetails
from tidegate.telemetry import ClusterHealth

log = logging.getLogger(__name__)

__all__ = ["CLIENT_JVM_OPTIONS", "FlinkEngine"]

_DRAIN_RETRY_SECONDS = 3.0
_DRAIN_CHECK_SECONDS = 1.0
CLIENT_JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"  # the CLI lives seconds: skip the optimizing JIT
_BASIC, _DETAILED = MessageImportance.JOB_MESSAGE_BASIC, MessageImportance.JOB_MESSAGE_DETAILED


class FlinkEngine(FlinkSubmission):
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
