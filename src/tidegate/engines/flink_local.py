"""The local standalone Flink cluster: one JobManager and one TaskManager, which outlive the server.

Each runs as ``bin/{jobmanager,taskmanager}.sh start-foreground`` from the distribution
in the Flink virtual environment, in a session of its own, with a configuration folder
of its own (``FLINK_CONF_DIR``): nothing is written inside the virtual environment.

The cluster is not the server's: a server that stops, gracefully or by kill -9, leaves
it running with its jobs, and the next server on the same data directory adopts it
(``adopt``) from ``cluster.json``, which records its ports and its processes (pid and
start time, so that a reused pid is never taken for them); it never starts a second one.
``stop`` ends it on purpose. Jobs checkpoint every ``checkpoint_interval`` seconds (0: never) into
``checkpoints/`` and keep their checkpoints when cancelled, so that a job whose cluster
was lost (a reboot) can be resumed from its latest one.

Jobs run their Python functions in ``python_mode``: ``thread`` (the default) inside the
TaskManager's JVM (PemJa), which starts a job's Python operators in well under a second and
has no Python worker processes to start, connect or release (a cancel under load could end
the TaskManager in process mode: "Reference count must not be negative"); or ``process``,
PyFlink's Python worker processes (Beam's fn harness), which isolate each job's Python.
Thread mode shares one interpreter, and its GIL, among every job of the TaskManager.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tidegate import processes
from tidegate.config import FLINK_PYTHON_MODES
from tidegate.engines.flink_cluster import FlinkRestClient, with_java, write_config
from tidegate.errors import Unavailable

__all__ = ["LocalFlinkCluster", "stop_group"]

_DEFAULT_REST_PORT, _DEFAULT_RPC_PORT = 8081, 6123
_DEFAULT_PORTS = (_DEFAULT_REST_PORT, _DEFAULT_RPC_PORT)
_STATE_FILE = "cluster.json"


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


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


@dataclass
class _Member:
    """One process of the cluster: started by this server (``popen``), or adopted from an earlier one."""

    role: str
    pid: int
    started: str
    popen: subprocess.Popen[bytes] | None = None

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return processes.is_alive(self.pid, self.started)

    def stop(self, grace: float) -> None:
        """SIGTERM its session, ``grace``, SIGKILL; an adopted process only while it is still the one recorded."""
        if self.popen is not None:
            stop_group(self.popen, grace)
            return
        if not self.alive():
            return
        _signal_group(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.alive():
            _signal_group(self.pid, signal.SIGKILL)


class LocalFlinkCluster:
    """A standalone Flink cluster on this machine: one JobManager and one TaskManager.

    Its folder holds ``conf/`` (written on start), ``log/``, ``checkpoints/``,
    ``savepoints/`` and ``cluster.json``; ``start`` waits until the TaskManager has registered.
    """

    def __init__(
        self,
        folder: Path,
        *,
        python: Path,
        rest_port: int | None = None,
        rpc_port: int | None = None,
        task_slots: int = 4,
        checkpoint_interval: float = 10.0,
        python_mode: str = "thread",
        settings: Mapping[str, str] | None = None,
    ) -> None:
        if python_mode not in FLINK_PYTHON_MODES:
            raise ValueError(f"unknown Python execution mode {python_mode!r} (known: {', '.join(FLINK_PYTHON_MODES)})")
        self.flink_home = Path()  # set by start
        self.folder = folder
        self.python = python
        # None: Flink's default port when it is free, another free one when it is not (a
        # Flink cluster of the user's own may hold the defaults).
        self._ports = (rest_port, rpc_port)
        self.rest_port = rest_port or _DEFAULT_REST_PORT
        self.rpc_port = rpc_port or _DEFAULT_RPC_PORT
        self.task_slots = task_slots
        self.checkpoint_interval = checkpoint_interval
        self.python_mode = python_mode
        self.extra_settings = dict(settings or {})
        self.cluster_id = ""
        """Names this cluster's life: a new one for every start (a job of another life is gone with it)."""
        self._members: list[_Member] = []

    @property
    def rest_url(self) -> str:
        """The cluster's REST address."""
        return f"http://localhost:{self.rest_port}"

    @property
    def conf_dir(self) -> Path:
        """The configuration folder (also the one the ``flink`` CLI uses to submit)."""
        return self.folder / "conf"

    @property
    def checkpoints(self) -> Path:
        return self.folder / "checkpoints"

    @property
    def savepoints(self) -> Path:
        return self.folder / "savepoints"

    @property
    def has_python_jar(self) -> bool:
        """Whether ``flink-python`` is on the cluster's own classpath (thread mode): a job need not ship it."""
        return self.python_mode == "thread"

    @property
    def lib_dir(self) -> Path:
        """The cluster's classpath: Flink's ``lib/`` and, for thread mode, ``flink-python`` (written on start)."""
        return self.folder / "lib"

    def settings(self) -> dict[str, str]:
        """The cluster's configuration, as flat keys."""
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
            # The adaptive scheduler rescales a running job in place (PUT /jobs/:id/resource-requirements:
            # UpdateJob's runtimeUpdatableParams); the default scheduler cannot.
            "jobmanager.scheduler": "adaptive",
            "rest.address": "localhost",
            "rest.bind-address": "localhost",
            "rest.port": str(self.rest_port),
            "execution.target": "remote",
            "execution.checkpointing.dir": self.checkpoints.as_uri(),
            "execution.checkpointing.savepoint-dir": self.savepoints.as_uri(),
            # A job restarts (from its latest checkpoint) when a task fails or its TaskManager dies,
            # as often as that happens; one that fails 3 times within a minute (a job failing at
            # start) ends FAILED instead of restarting forever.
            "restart-strategy.type": "failure-rate",
            "restart-strategy.failure-rate.max-failures-per-interval": "3",
            "restart-strategy.failure-rate.failure-rate-interval": "1 min",
            "restart-strategy.failure-rate.delay": "2 s",
            "metrics.fetcher.update-interval": "2000",
            "python.executable": str(self.python),
            "python.client.executable": str(self.python),
            # Jobs are built (by the submitting client, which reads this configuration) to run
            # their Python functions in this mode; a program may set another for itself.
            "python.execution-mode": self.python_mode,
        }
        if self.python_mode == "thread":
            # Thread mode runs Python inside the TaskManager (PemJa). PemJa's classes must be
            # loaded once, by the cluster's class loader (flink-python in its lib/): loaded again
            # by each job's class loader, every job after the first fails on Java 17
            # ("NoSuchFieldException: loadedLibraryNames").
            settings["classloader.parent-first-patterns.additional"] = "pemja."
        if self.checkpoint_interval > 0:
            # Periodic checkpoints, kept when a job is cancelled or its cluster lost: a job is
            # resumed from its latest one when the cluster it ran on is gone.
            settings["execution.checkpointing.interval"] = f"{self.checkpoint_interval:g} s"
            settings["execution.checkpointing.externalized-checkpoint-retention"] = "RETAIN_ON_CANCELLATION"
            settings["execution.checkpointing.num-retained"] = "2"
        settings.update(self.extra_settings)
        return settings

    def running(self) -> bool:
        """Whether its JobManager lives (its TaskManager is started again by ``revive_taskmanager``)."""
        return bool(self._members) and self._members[0].alive()

    def adopt(self) -> bool:
        """Take on the cluster an earlier server left running in this folder; whether there was one."""
        if self.running():
            return True
        recorded = self._recorded()
        if recorded is None or not recorded[1][0].alive():
            return False
        state, members = recorded
        self.rest_port, self.rpc_port = int(state["rest_port"]), int(state["rpc_port"])
        self.flink_home = Path(state["flink_home"])
        self.cluster_id = str(state.get("cluster_id", ""))
        # It runs in the mode it was started with (one started before modes were recorded: process).
        self.python_mode = str(state.get("python_mode") or "process")
        self._members = members
        return True

    def _recorded(self) -> tuple[dict[str, Any], list[_Member]] | None:
        try:
            state = json.loads((self.folder / _STATE_FILE).read_text(encoding="utf-8"))
            return state, [_Member(role, int(state[role]["pid"]), str(state[role]["started"])) for role in _ROLES]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def start(self, flink_home: Path, timeout: float = 180.0) -> None:
        """Adopt the cluster left running here, or start one from ``flink_home``; wait until jobs can run."""
        if self.adopt():
            return
        if not self._members and (recorded := self._recorded()) is not None:
            self._members = recorded[1]  # what is left of a cluster whose JobManager died: stopped next
        self.stop()
        self.flink_home = flink_home
        self.rest_port, self.rpc_port = (
            _chosen_port(wanted, default) for wanted, default in zip(self._ports, _DEFAULT_PORTS, strict=True)
        )
        for sub in ("log", "run", "savepoints", "checkpoints"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        self._write_lib()
        write_config(self.conf_dir, self.settings(), self.flink_home)
        self.cluster_id = uuid.uuid4().hex
        self._members = [self._spawn(role) for role in _ROLES]
        self._record()
        client = FlinkRestClient(self.rest_url, timeout=2.0)
        try:
            deadline = time.monotonic() + timeout
            while not client.ready():
                if not all(m.alive() for m in self._members) or time.monotonic() > deadline:
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
        if len(self._members) != 2 or not self._members[0].alive() or self._members[1].alive():
            return False
        self._members[1].stop(1.0)  # reap it, and end whatever of its group is left
        self._members[1] = self._spawn("taskmanager")
        self._record()
        return True

    def stop(self, timeout: float = 15.0) -> None:
        """Stop both processes (and the Python workers they started): SIGTERM, then SIGKILL."""
        for member in self._members:
            if member.alive():
                _signal_group(member.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for member in self._members:
            member.stop(max(0.1, deadline - time.monotonic()))
        self._members = []
        (self.folder / _STATE_FILE).unlink(missing_ok=True)

    def _write_lib(self) -> None:
        """Links to the jars of Flink's ``lib/``, and to ``opt/flink-python`` in thread mode."""
        shutil.rmtree(self.lib_dir, ignore_errors=True)
        self.lib_dir.mkdir(parents=True)
        jars = sorted((self.flink_home / "lib").glob("*.jar"))
        if self.has_python_jar:
            jars += sorted((self.flink_home / "opt").glob("flink-python*.jar"))
        for jar in jars:
            (self.lib_dir / jar.name).symlink_to(jar.resolve())

    def _spawn(self, role: str) -> _Member:
        if not self.lib_dir.is_dir():  # a TaskManager started again in a cluster from before lib/ was written
            self._write_lib()
        env = dict(os.environ, FLINK_CONF_DIR=str(self.conf_dir), FLINK_LIB_DIR=str(self.lib_dir))
        env.pop("PYTHONPATH", None)
        env["PATH"] = f"{self.python.parent}{os.pathsep}{env.get('PATH', '')}"
        env = with_java(env, self.python.parent.parent)
        with open(self.folder / "log" / f"{role}.console", "ab") as console:
            popen = subprocess.Popen(
                ["bash", str(self.flink_home / "bin" / f"{role}.sh"), "start-foreground"],
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.folder,
                start_new_session=True,
            )
        return _Member(role, popen.pid, processes.started(popen.pid), popen)

    def _record(self) -> None:
        state = {
            "cluster_id": self.cluster_id,
            "rest_port": self.rest_port,
            "rpc_port": self.rpc_port,
            "flink_home": str(self.flink_home),
            "python_mode": self.python_mode,
            **{m.role: {"pid": m.pid, "started": m.started} for m in self._members},
        }
        path = self.folder / _STATE_FILE
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(state), encoding="utf-8")
        os.replace(tmp, path)


_ROLES = ("jobmanager", "taskmanager")


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
