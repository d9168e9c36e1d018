"""How the Flink engine gets a run to Flink: a prepared graph, a warm submitter, or ``flink run``.

``FlinkSubmission`` is the submitting half of ``FlinkEngine`` (``flink``), which it is
mixed into: ``_submit`` runs in a thread per launch and tries, in order, the graph
``prepare_launch`` built during an update's stop (``flink_prepared``), a ready warm
submitter (``flink_warm``) and the ``flink`` CLI. A submission that ended in an error while
Flink has the run's job id is taken as accepted (``_accepted_all_the_same``). A run whose
submitting server stopped is finished by the next one (``_submission``): it waits for
the submitting process to end, then adopts the job Flink has, or submits it again under
the same Flink job id.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from tidegate import processes
from tidegate.engines.base import EngineState, LaunchRequest, RunStatus
from tidegate.engines.flink_cluster import FlinkRestClient, find_flink_home, flink_python, with_java, write_config
from tidegate.engines.flink_local import LocalFlinkCluster, stop_group
from tidegate.engines.flink_prepared import Prepared
from tidegate.engines.flink_runs import SQL_DRIVER, FlinkRun, request_from
from tidegate.engines.flink_uids import driver_command
from tidegate.engines.flink_warm import NotStarted, WarmSubmitter, submitter_env, warm_job
from tidegate.errors import FailedPrecondition, NotFound, TidegateError, Unavailable
from tidegate.failures import root_cause
from tidegate.model import MessageImportance

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["FlinkSubmission"]

log = logging.getLogger(__name__)

_JOB_ID_LINE = re.compile(r"JobID\s+([0-9a-f]{32})")
_STARTING_POLL_SECONDS = 0.1
_LATE_ACCEPT_WAITS = (0.0, 1.0, 2.0, 4.0)
"""After a submission that timed out, the pauses before asking again whether Flink has its job (7 s in all)."""
_PREPARED_NOTE = "Submitted by the warm PyFlink submitter (its graph built while the job it replaces stopped)"
_DETAILED = MessageImportance.JOB_MESSAGE_DETAILED


class FlinkSubmission:
    """The submitting half of ``FlinkEngine``; the engine sets these attributes and has these methods."""

    flink_venv: Path
    state_dir: Path
    rest_url: str
    _rest: FlinkRestClient
    _cluster: LocalFlinkCluster | None
    _warm: WarmSubmitter
    _flink_conf: Mapping[str, str]
    _submit_timeout: float
    _cluster_lock: threading.Lock

    def start_cluster(self) -> None:
        raise NotImplementedError

    def _save(self, run: FlinkRun) -> None:
        raise NotImplementedError

    def _note(self, run: FlinkRun, importance: MessageImportance, text: str) -> None:
        raise NotImplementedError

    def _finish(self, run: FlinkRun, status: RunStatus) -> RunStatus:
        raise NotImplementedError

    def _drive_drain(self, run: FlinkRun) -> None:
        raise NotImplementedError

    def _ships_python_jar(self) -> bool:
        return self._cluster is None or not self._cluster.has_python_jar  # else the cluster has flink-python

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
