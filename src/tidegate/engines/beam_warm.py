"""Warm starts of Beam runs: one run's processes, started before the run, wait for it.

A cold start of a run costs two fresh Python interpreters and an import of Beam: seconds.
``WarmStart`` keeps idle supervisors ready (``beam_worker --warm``; two by default), each
a session and a process group of its own, and under it the run's pipeline process, Beam
imported, both waiting on a pipe. ``take`` writes a workdir (and the environment the run would have
had) into it; from then on the two are what a cold launch would have started (see
``beam_worker``), and the next idle supervisor starts.

An idle supervisor dies with the engine and is never left behind: ``close`` stops each
(SIGTERM: it kills and reaps its pipeline process, then exits); the end of the engine
process ends it too (``PR_SET_PDEATHSIG``, and the end of its stdin), and its pipeline
process dies with it in turn. Once handed a run, both drop the parent-death signal: a
run outlives the engine, as a cold-started one does.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import queue
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

__all__ = ["WarmStart"]

log = logging.getLogger(__name__)

_MAX_FAILURES = 3
"""Idle supervisors in a row found dead when wanted: then warm starts stop (every launch starts cold)."""
_STOP_WAIT_S = 2.0


class _Spawner:
    """The one thread of this process that starts idle supervisors, alive as long as the process.

    A parent-death signal is bound to the thread that started the child, not to its process:
    started by a thread that ends (a scheduler's, or one an engine had until ``close``), an
    idle supervisor would be killed then, even one just handed a run.
    """

    def __init__(self) -> None:
        self._tasks: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, task: Callable[[], None]) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="tidegate-beam-warm", daemon=True)
                self._thread.start()
        self._tasks.put(task)

    def _serve(self) -> None:
        while True:
            task = self._tasks.get()
            try:
                task()
            except Exception:  # one engine's trouble must not stop the others' warm starts
                log.exception("could not start an idle Beam supervisor")


_SPAWNER = _Spawner()


class WarmStart:
    """Keeps ``size`` idle supervisors of Beam runs ready, and hands the oldest the next run.

    Two by default: a job that follows another at once then finds one that has had time to
    import Beam, not one that started as the previous run did.
    """

    def __init__(self, python: str, env: Callable[[], dict[str, str]], size: int = 2) -> None:
        """Idle supervisors run ``python`` with the environment ``env()`` gives when each starts."""
        self._python = python
        self._env = env
        self._size = size
        self._ready = threading.Condition()
        self._idle: collections.deque[subprocess.Popen[bytes]] = collections.deque()
        self._starting = 0
        self._failures = 0
        self._closed = False
        self._refill()

    @property
    def idle_pid(self) -> int | None:
        """The pid of the idle supervisor the next run goes to (its process group's id too), if there is one now."""
        with self._ready:
            return self._idle[0].pid if self._idle else None

    def take(self, workdir: Path, env: Mapping[str, str]) -> subprocess.Popen[bytes] | None:
        """Hand the run in ``workdir`` to the idle supervisor and return it; None when there is none to hand it to.

        The supervisor takes it even while its pipeline process is still importing Beam: the
        run then starts once that is done, still sooner than a cold start would.
        """
        try:
            return self._hand(workdir, env)
        finally:
            self._refill()  # the next one starts as this run does

    def _hand(self, workdir: Path, env: Mapping[str, str]) -> subprocess.Popen[bytes] | None:
        while True:
            with self._ready:
                if not self._idle:
                    return None
                idle = self._idle.popleft()
            if self._hand_to(idle, workdir, env):
                return idle

    def _hand_to(self, idle: subprocess.Popen[bytes], workdir: Path, env: Mapping[str, str]) -> bool:
        message = json.dumps({"workdir": str(workdir), "env": dict(env)}).encode() + b"\n"
        try:
            if idle.poll() is not None:
                raise BrokenPipeError(f"the idle supervisor exited with {idle.returncode}")
            assert idle.stdin is not None
            idle.stdin.write(message)
            idle.stdin.close()
        except OSError as error:
            log.warning("the idle Beam supervisor (pid %d) is gone: %s", idle.pid, error)
            _stop(idle)
            with self._ready:
                self._failures += 1
                if self._failures == _MAX_FAILURES:
                    log.warning("%d idle Beam supervisors died unused: Beam runs start cold from now on", _MAX_FAILURES)
            return False
        with self._ready:
            self._failures = 0
        return True

    def close(self) -> None:
        """Stop the idle supervisor and its pipeline process, and start no more; idempotent.

        Returns once they are gone (and reaped), one being started included.
        """
        with self._ready:
            self._closed = True
            self._ready.wait_for(lambda: not self._starting, timeout=_STOP_WAIT_S * 3)
            idle, self._idle = list(self._idle), collections.deque()
        for one in idle:
            _stop(one)

    def _refill(self) -> None:
        with self._ready:
            if self._closed or self._failures >= _MAX_FAILURES:
                return
            missing = self._size - len(self._idle) - self._starting
            self._starting += max(0, missing)
        for _ in range(missing):
            _SPAWNER.submit(self._start)

    def _start(self) -> None:
        """On the spawner's thread: start an idle supervisor (or none, if closed since)."""
        idle = None
        try:
            with self._ready:
                closed = self._closed
            if not closed:
                idle = self._spawn()
        except OSError:
            log.exception("could not start an idle Beam supervisor")
            with self._ready:
                self._failures += 1
        finally:
            with self._ready:
                keep = idle is not None and not self._closed
                if idle is not None and keep:
                    self._idle.append(idle)
            if idle is not None and not keep:
                _stop(idle)  # closed while it started
            with self._ready:
                self._starting -= 1
                self._ready.notify_all()

    def _spawn(self) -> subprocess.Popen[bytes]:
        # Until it has a run, what it prints (import-time warnings) goes to a file of its own;
        # its pipeline process copies it into the run's stderr.
        with tempfile.TemporaryFile() as early:
            return subprocess.Popen(
                [self._python, "-m", "tidegate.engines.beam_worker", "--warm", str(os.getpid())],
                cwd="/",
                env=self._env(),
                stdin=subprocess.PIPE,
                stdout=early,
                stderr=early,
                start_new_session=True,
            )


def _stop(idle: subprocess.Popen[bytes]) -> None:
    """Stop an idle supervisor: it kills and reaps its pipeline process, then exits; SIGKILL if it does not."""
    if idle.poll() is None:
        with contextlib.suppress(OSError):
            idle.send_signal(signal.SIGTERM)
        try:
            idle.wait(timeout=_STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(idle.pid, signal.SIGKILL)  # not yet reaped: the id is still its group's
            idle.wait()
    if idle.stdin is not None:
        with contextlib.suppress(OSError):
            idle.stdin.close()
