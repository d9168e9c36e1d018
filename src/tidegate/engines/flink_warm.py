"""Warm submission of PyFlink programs: submitter processes started ahead, waiting for the next jobs.

``flink run --python`` starts a JVM and a Python interpreter, imports PyFlink and starts
its Java gateway for every job: seconds before the program even runs. ``WarmSubmitter``
keeps ``flink_submitter`` processes ready instead (in the Flink environment, PyFlink
imported, its gateway up and warmed), each in a session and a process group of its own.
``take`` hands out a ready one (None while none is ready: the engine then submits
cold); ``Submitter.submit`` gives it one job and waits for its answer; the engine
``start``s the next once that job runs (or failed). Each process runs one job and
exits, so no program leaves anything behind for the next one.

A submitter that dies while idle is replaced at the next ``take``. One that dies before
it said it started the job submitted nothing (``NotStarted``: the engine submits cold).
An idle one ends when its stdin does (``close``, or the end of the engine's process),
and PyFlink's gateway with it; one handed a job finishes it even if the engine is gone,
as the ``flink`` CLI would.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tidegate.engines.base import LaunchRequest
from tidegate.engines.flink_cluster import with_java
from tidegate.engines.flink_local import stop_group
from tidegate.engines.flink_runs import SQL_DRIVER
from tidegate.engines.flink_uids import driver_command
from tidegate.errors import TidegateError, Unavailable

__all__ = [
    "SCRIPT",
    "NotStarted",
    "Submitter",
    "WarmSubmitter",
    "submitter_env",
    "warm_conf",
    "warm_job",
    "warm_program",
]

log = logging.getLogger(__name__)

SCRIPT = Path(__file__).with_name("flink_submitter.py")
"""The submitter's program, run as a file by the Flink environment's Python."""

_MAX_FAILURES = 3
"""Submitters in a row that died before they were ready: then warm submission stops (every job goes cold)."""

_READY_WITHIN = 120.0
"""Seconds from a submitter's start within which it gets ready, even on a busy machine; later, it is stuck."""


class NotStarted(Exception):
    """The submitter ended before it took the job: nothing was submitted."""


class Submitter:
    """One submitter process and the lines it says (read by a thread of its own)."""

    def __init__(
        self,
        command: list[str],
        env: Mapping[str, str],
        cwd: Path,
        console: Path,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        self.started_at = time.monotonic()
        self._on_ready = on_ready
        self.lines: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        with open(console, "ab") as out:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=out,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,  # its own group: stop_group ends it and PyFlink's gateway alike
            )
        self.ready = threading.Event()
        self.ended = threading.Event()
        threading.Thread(target=self._read, name=f"flink-submitter-{self.process.pid}", daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout as replies:
            for raw in replies:
                try:
                    said = json.loads(raw)
                except ValueError:
                    continue
                if said.get("ready"):
                    self.ready.set()
                    if self._on_ready is not None:
                        self._on_ready()
                else:
                    self.lines.put(said)
        self.ended.set()
        self.lines.put(None)

    def alive(self) -> bool:
        return self.process.poll() is None and not self.ended.is_set()

    def submit(self, job: Mapping[str, Any], timeout: float) -> str:
        """Run one job: "" once the program ended well (its job submitted), else its error.

        Raises NotStarted when the submitter ended before taking the job (nothing submitted),
        Unavailable when it did not answer within ``timeout`` (it is stopped then).
        """
        self._send(job, last=True)
        return str(self._answer(timeout))

    def prepare(self, job: Mapping[str, Any], timeout: float) -> str | None:
        """Run a deferred job's program until its graph is built: None then (``finish`` submits it), else its end.

        What the program's end says ("" or its error) when it ended without building a graph
        the deferred way (it submitted by another: see ``flink_submitter``; nothing reached
        Flink then). NotStarted and Unavailable as for ``submit``.
        """
        self._send(job, last=False)
        return self._answer(timeout, built=True)

    def finish(self, restore_from: str, allow_non_restored: bool, timeout: float) -> str:
        """Submit the job ``prepare`` built, from ``restore_from``: as ``submit`` answers (NotStarted: it had ended)."""
        self._send({"restore_from": restore_from, "allow_non_restored": allow_non_restored}, last=True)
        return str(self._answer(timeout, took=True))

    def _send(self, line: Mapping[str, Any], *, last: bool) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write((json.dumps(dict(line)) + "\n").encode())
            self.process.stdin.flush()
            if last:
                self.process.stdin.close()
        except OSError as error:
            self.stop()
            raise NotStarted(f"the submitter had ended: {error}") from None

    def _answer(self, timeout: float, *, built: bool = False, took: bool = False) -> str | None:
        """What the submitter says next that ends the wait: its end ("" or the error), None once built (``built``)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                said = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                raise Unavailable(f"the PyFlink submitter did not submit within {timeout:.0f} s") from None
            if said is None:
                self.stop()
                if not took:
                    raise NotStarted("the submitter ended before it took the job")
                return "the PyFlink submitter ended while it ran the program (see the driver's log)"
            if said.get("started"):
                took = True
            elif said.get("built") and built:
                return None
            elif "ok" in said:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(5.0)
                if self.process.poll() is None:
                    self.stop()
                return "" if said["ok"] else str(said.get("error") or "the program failed")

    def stop(self) -> None:
        """End it and its gateway (its whole group)."""
        with contextlib.suppress(OSError):
            if self.process.stdin is not None:
                self.process.stdin.close()
        if self.process.returncode is None:
            stop_group(self.process, 1.0)
        self.ended.set()


class WarmSubmitter:
    """PyFlink submitters kept ready (``size`` of them), each used for one job, replaced after it and when it dies.

    They start one at a time: the next once the one before is ready, so that two JVMs do
    not start at once on a small machine. With more than one, a job that comes right after
    another (an update of a job just started, a burst of submissions) finds one ready
    while the replacement of the last one used is still starting.
    """

    def __init__(self, python: Path, env: Callable[[], dict[str, str]], folder: Path, size: int = 1) -> None:
        self._python = python
        self._env = env
        self._folder = folder
        self._size = max(1, size)
        self._pool: list[Submitter] = []
        """Started and not handed out: ready, or getting ready (at most one)."""
        self._lock = threading.Lock()
        self._failures = 0
        self._closed = False
        self._spawned = 0

    @property
    def idle(self) -> list[Submitter]:
        """The submitters kept: ready, or getting ready."""
        with self._lock:
            return list(self._pool)

    def start(self) -> None:
        """Start a submitter if fewer than ``size`` are kept and none is getting ready (in the background: seconds)."""
        with self._lock:
            self._start_locked()

    def _start_locked(self) -> None:
        if self._closed:
            return
        for gone in [s for s in self._pool if not s.alive()]:
            self._pool.remove(gone)
            if not gone.ready.is_set() and self._failures < _MAX_FAILURES:
                self._failures += 1
                log.warning("a PyFlink submitter ended before it was ready (see %s)", self._folder)
                if self._failures >= _MAX_FAILURES:
                    log.warning("warm Flink submission is off: submitters keep dying; jobs are submitted cold")
            gone.stop()
        if self._failures >= _MAX_FAILURES or len(self._pool) >= self._size:
            return
        if any(not s.ready.is_set() for s in self._pool):
            return  # one gets ready: the next starts when it is (on_ready)
        self._folder.mkdir(parents=True, exist_ok=True)
        self._spawned += 1
        console = self._folder / f"submitter-{self._spawned % 10}.log"
        console.write_bytes(b"")
        try:
            command = [str(self._python), str(SCRIPT)]
            self._pool.append(Submitter(command, self._env(), self._folder, console, on_ready=self.start))
        except (OSError, TidegateError) as error:
            log.warning("cannot start a PyFlink submitter: %s", error)
            self._failures += 1

    def take(self) -> Submitter | None:
        """A ready submitter; None: submit cold (and one starts, if none is on its way).

        When none is ready, the one getting ready is waited for: what it has left to do
        (its JVM, PyFlink's import, the warm-up) is what a cold ``flink run`` would do from
        the start, so it is never slower. One that is not ready ``_READY_WITHIN`` seconds
        after its start is stuck: it is replaced, and the job goes cold. The replacement of
        the one handed out is not started here: ``start`` it once the job runs, so that its
        start (seconds of CPU) does not compete with the job's own.
        """
        with self._lock:
            for stuck in [s for s in self._pool if not s.ready.is_set() and s.alive()]:
                if time.monotonic() - stuck.started_at > _READY_WITHIN:
                    log.warning("a PyFlink submitter was not ready %.0f s after its start: replaced", _READY_WITHIN)
                    stuck.stop()
                    self._pool.remove(stuck)
                    self._failures += 1
            ready = [s for s in self._pool if s.ready.is_set() and s.alive()]
            if ready:
                self._pool.remove(ready[0])
                self._failures = 0
                return ready[0]
            coming = [s for s in self._pool if s.alive()]
            if not coming:
                self._start_locked()
                return None
            idle = coming[0]
        if not idle.ready.wait(max(0.0, idle.started_at + _READY_WITHIN - time.monotonic())):
            return None
        with self._lock:
            if idle not in self._pool or not idle.alive():  # another job took it, or it died meanwhile
                self._start_locked()
                return None
            self._pool.remove(idle)
            self._failures = 0
            return idle

    def wait_ready(self, timeout: float) -> bool:
        """Wait until a submitter is ready (starting one if none is), up to ``timeout`` seconds; whether one is."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                self._start_locked()
                pool = list(self._pool)
            if not pool:
                return False
            if any(s.ready.is_set() and s.alive() for s in pool):
                return True
            coming = next((s for s in pool if not s.ready.is_set()), pool[0])
            coming.ready.wait(min(0.5, max(0.0, deadline - time.monotonic())))
            if time.monotonic() >= deadline:
                return any(s.ready.is_set() and s.alive() for s in pool)

    def close(self) -> None:
        """Stop the kept submitters; none starts again."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, []
        for each in pool:
            each.stop()


def warm_program(tmp: Path, request: LaunchRequest) -> list[str]:
    """The Python file the submitter runs for ``request``, and its arguments (what ``flink run --python`` gets)."""
    program = Path(request.program).absolute()
    if program.suffix == ".sql":
        driver = tmp / "sql_driver.py"
        driver.write_text(SQL_DRIVER, encoding="utf-8")
        return [str(driver), str(program), "streaming" if request.streaming else "batch"]
    if request.state_uids:  # operators renamed by updates run under the uids their state has
        return driver_command(tmp, request.state_uids, program, request.args)[1:]
    return [str(program), *request.args]


def warm_conf(
    job_id: str, request: LaunchRequest, flink_home: Path, python_mode: str = "", *, ship_python_jar: bool = True
) -> dict[str, str]:
    """The job's settings over the client configuration: what ``flink run --detached`` makes of its options.

    The CLI ships ``flink-python`` (42 MB) with every Python program; a cluster that has
    it on its own classpath (the local one in thread mode) needs none (``ship_python_jar``).
    """
    jars = sorted((flink_home / "opt").glob("flink-python*.jar")) if ship_python_jar else []
    conf = {
        "$internal.pipeline.job-id": job_id,
        "execution.attached": "false",
        "parallelism.default": str(max(1, request.num_workers)),
    }
    if jars:
        conf["pipeline.jars"] = jars[0].as_uri()
    if python_mode:
        conf["python.execution-mode"] = python_mode
    if request.restore_from:
        conf["execution.state-recovery.path"] = request.restore_from
        if request.options.get("allowNonRestoredState"):
            conf["execution.state-recovery.ignore-unclaimed-state"] = "true"
    return conf


def warm_job(
    tmp: Path,
    job_id: str,
    request: LaunchRequest,
    flink_home: Path,
    python_mode: str = "",
    *,
    ship_python_jar: bool = True,
    defer: bool = False,
) -> dict[str, Any]:
    """The job line a submitter runs for ``request``; what the program prints goes to ``tmp/submit.log`` (emptied).

    ``defer``: the state to start from is given later (``Submitter.prepare``, then ``finish``).
    """
    python, *args = warm_program(tmp, request)
    log_file = tmp / "submit.log"
    log_file.write_bytes(b"")
    job: dict[str, Any] = {
        "python": python,
        "args": args,
        "cwd": str(Path(request.program).absolute().parent),
        "log": str(log_file),
        "conf": warm_conf(job_id, request, flink_home, python_mode, ship_python_jar=ship_python_jar),
    }
    if defer:
        job["defer"] = True
    return job


def submitter_env(venv: Path, conf_dir: Path, folder: Path, jvm_options: str) -> dict[str, str]:
    """A submitter's environment: the ``flink`` CLI's (its configuration, its Java), Flink's logs in ``folder``."""
    env = dict(os.environ, FLINK_CONF_DIR=str(conf_dir), FLINK_LOG_DIR=str(folder / "log"), JVM_ARGS=jvm_options)
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return with_java(env, venv)
