"""Real ``tidegate server`` processes for the acceptance tests.

``start_server("sqlite")`` or ``start_server("postgresql")`` runs ``tidegate server`` as a
subprocess on a free port (SQLite in a temporary data directory, or PostgreSQL in a
fresh schema of ``TIDEGATE_TEST_POSTGRES_URL``), waits for ``GET /healthz`` and hands
back a ``Server``. Servers live for one test module and are stopped (and checked to stop
cleanly) at its end; tests stay independent by using a project of their own.
"""

from __future__ import annotations

import os
import secrets
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tidegate.model import Job, JobMessage, MessageImportance, StateChange
from tidegate.store import Store

from ..certificates import Certificates
from ..conftest import POSTGRES_URL, _postgres_or_skip

TIDEGATE = Path(sys.executable).with_name("tidegate")
"""The ``tidegate`` command of the virtual environment that runs the tests."""

LOCATION = "us-central1"
START_TIMEOUT = 30.0

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = Path(__file__).resolve().parent / "beam_pipelines"
"""Pipeline scripts that Beam's own runners run from the Beam client environment."""
CLIENT_PYTHON = ROOT / ".beam-client-venv" / "bin" / "python"
TEXT = "the quick brown fox\njumps over the lazy dog\nthe dog sleeps\n"
"""The word counts' input: 12 words."""


def staging_roots(roots: Sequence[str] | None = None) -> list[str]:
    """``--staging-root`` flags for a test server: ``roots``, by default the system's temporary folder
    (pytest's ``tmp_path``, where tests stage files) and the test suite's own programs and pipelines."""
    if roots is None:
        roots = [tempfile.gettempdir(), str(ROOT / "tests")]
    return [flag for root in roots for flag in ("--staging-root", root)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def closed_port() -> int:
    """A port nothing listens on (bound and released: nothing else takes it at once)."""
    return free_port()


@dataclass(frozen=True)
class Snapshot:
    """Everything a bad request must leave as it was."""

    job_count: int
    job: Job | None
    history: tuple[StateChange, ...]
    messages: tuple[JobMessage, ...]


@dataclass
class Server:
    """A running ``tidegate server``."""

    dialect: str
    port: int
    store_url: str
    log: Path
    grpc_port: int = 0
    """The gRPC API's port (0: not served; ``start_server(..., grpc=True)`` serves it)."""
    job_port: int = 0
    """Beam's Job API port (0: not served; ``start_server(..., job_api=True)`` serves it)."""
    data_dir: Path | None = None
    ca: Path | None = None
    """The CA certificate (PEM) that signed the server's own: it serves over TLS (``start_server(..., tls=…)``)."""
    _store: Store | None = field(default=None, repr=False)

    @property
    def base(self) -> str:
        """The REST endpoint as the official client wants it (``localhost``, with the scheme)."""
        return f"{'https' if self.ca else 'http'}://localhost:{self.port}"

    @property
    def store(self) -> Store:
        """The server's database, read from the test process (to see what the API does not show)."""
        if self._store is None:
            self._store = Store(self.store_url)
        return self._store

    def snapshot(self, job_id: str | None = None) -> Snapshot:
        """The number of jobs, and one job as stored: its row (state, version, labels), history and messages."""
        store = self.store
        if job_id is None:
            return Snapshot(store.count_jobs(), None, (), ())
        messages = store.list_messages(job_id, MessageImportance.JOB_MESSAGE_IMPORTANCE_UNKNOWN, None, None, 10_000)
        return Snapshot(store.count_jobs(), store.get_job(job_id), tuple(store.history(job_id)), messages.items)

    def close_store(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


def stop_local_flink(data_dir: Path) -> None:
    """Stop the local Flink cluster a server left running in its data directory (it outlives every server)."""
    from tidegate.engines.flink_local import LocalFlinkCluster

    cluster = LocalFlinkCluster(data_dir / "flink" / "flink-cluster", python=Path(sys.executable))
    if cluster.adopt():
        cluster.stop()


def flink_stop(data_dir: Path) -> subprocess.CompletedProcess[str]:
    """``tidegate flink stop --data-dir DATA_DIR``, as a user runs it."""
    return subprocess.run(
        [str(TIDEGATE), "flink", "stop", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(),
        cwd=ROOT,
    )


NO_CONFIG = "/nonexistent/tidegate/config.toml"
"""``TIDEGATE_CONFIG`` for the tests: no user's config file (``tidegate config set`` there fails)."""


def clean_env() -> dict[str, str]:
    """The test's environment without TIDEGATE_* settings or a config file: the command line says it all."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["TIDEGATE_CONFIG"] = NO_CONFIG
    return env


def _wait_healthy(proc: subprocess.Popen[bytes], base: str, log: Path, ca: Path | None = None) -> bool:
    """True once /healthz answers; False when the process died of a taken port (try another)."""
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca)) if ca else True
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = log.read_text(errors="replace")
            if "address already in use" in text.lower() or "cannot listen" in text:
                return False
            pytest.fail(f"tidegate server exited with {proc.returncode}:\n{text}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1, verify=verify).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    pytest.fail(f"tidegate server did not answer /healthz within {START_TIMEOUT} s:\n{log.read_text()}")


def _stop(proc: subprocess.Popen[bytes]) -> int | None:
    if proc.poll() is None:
        proc.terminate()
    try:
        return proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


@pytest.fixture(scope="module")
def start_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Server]]:
    """A factory of running servers, ``start_server("sqlite" | "postgresql", engines="none", *flags)``.

    They are stopped after the module. ``engines="none"`` is an API-only server (jobs wait in
    STOPPED); ``engines="beam"`` runs jobs. ``grpc=True`` and ``job_api=True`` also serve the
    gRPC API and Beam's Job API, each on a free port of its own (``Server.grpc_port``, ``job_port``).
    ``tls=make_certificates(folder)`` serves REST and gRPC over TLS with that certificate;
    ``roots=[…]`` are its staging roots besides its data directory's (default: ``staging_roots()``).
    """
    running: list[tuple[subprocess.Popen[bytes], Server, Any]] = []
    schemas: list[str] = []

    def start(
        dialect: str,
        engines: str = "none",
        *flags: str,
        grpc: bool = False,
        job_api: bool = False,
        tls: Certificates | None = None,
        roots: Sequence[str] | None = None,
    ) -> Server:
        data_dir = tmp_path_factory.mktemp(f"tidegate-{dialect}")
        extra: list[str] = ["--tls-cert", str(tls.cert), "--tls-key", str(tls.key)] if tls else []
        store_url = f"sqlite:///{(data_dir / 'tidegate.db').resolve()}"
        if dialect == "postgresql":
            base = _postgres_or_skip()
            import psycopg

            schema = f"tg_accept_{secrets.token_hex(6)}"
            with psycopg.connect(base, autocommit=True) as conn:
                conn.execute(f"CREATE SCHEMA {schema}")
            schemas.append(schema)
            store_url = f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
            extra += ["--database-url", store_url]
        for attempt in range(3):
            port = free_port()
            grpc_port, job_port = (free_port() if grpc else 0), (free_port() if job_api else 0)
            log_path = data_dir / f"server-{attempt}.log"
            command = [str(TIDEGATE), "server", "--port", str(port)]
            command += ["--grpc-port", str(grpc_port), "--job-port", str(job_port)]
            command += ["--engines", engines]
            command += ["--data-dir", str(data_dir), *staging_roots(roots), *flags]
            log = log_path.open("wb")
            proc = subprocess.Popen(
                [*command, *extra], stdout=log, stderr=subprocess.STDOUT, env=clean_env(), cwd=data_dir
            )
            server = Server(
                dialect,
                port,
                store_url,
                log_path,
                grpc_port=grpc_port,
                job_port=job_port,
                data_dir=data_dir,
                ca=tls.ca if tls else None,
            )
            running.append((proc, server, log))
            if _wait_healthy(proc, server.base, log_path, server.ca):
                return server
        pytest.fail(f"no free port for tidegate server after 3 attempts:\n{log_path.read_text()}")

    yield start

    failures = []
    for proc, server, log in running:
        server.close_store()
        was_running = proc.poll() is None
        code = _stop(proc)
        log.close()
        if server.data_dir is not None:
            stop_local_flink(server.data_dir)
        if was_running and code != 0:
            failures.append(f"the {server.dialect} server did not stop cleanly ({code}):\n{server.log.read_text()}")
    if schemas:
        import psycopg

        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            for schema in schemas:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")
    assert not failures, "\n".join(failures)


@pytest.fixture(scope="module")
def server(start_server: Callable[..., Server]) -> Server:
    """One SQLite-backed server for the whole module."""
    return start_server("sqlite")


@pytest.fixture
def project() -> str:
    """A project of the test's own, so tests sharing a server never see each other's jobs."""
    return f"t-{secrets.token_hex(5)}"


@pytest.fixture(scope="module")
def client_python() -> Path:
    """The Python of Beam's client side (``apache-beam[gcp]``, as a Dataflow user has it), set up if missing."""
    subprocess.run(["bash", str(ROOT / "scripts" / "setup-beam-client")], check=True)
    return CLIENT_PYTHON


AIRFLOW_PYTHON = ROOT / ".airflow-venv" / "bin" / "python"


@pytest.fixture(scope="module")
def airflow_python() -> Path:
    """The Python of an Airflow installation with the Google provider (``scripts/setup-airflow``), set up if missing."""
    subprocess.run(["bash", str(ROOT / "scripts" / "setup-airflow")], check=True)
    return AIRFLOW_PYTHON


def dataflow_args(server: Server, project: str, staging: Path) -> list[str]:
    """DataflowRunner's options for a job in ``project`` on ``server``, staging into a local folder."""
    staging.mkdir(parents=True, exist_ok=True)
    return [
        "--runner=DataflowRunner",
        f"--dataflow_endpoint=http://localhost:{server.port}",
        "--no_auth",
        f"--project={project}",
        f"--region={LOCATION}",
        f"--temp_location={staging}",
    ]


def portable_args(job_port: int, project: str, *extra: str) -> list[str]:
    """PortableRunner's options for a job in ``project``; Beam's default environment is DOCKER."""
    return ["--runner=PortableRunner", f"--job_endpoint=localhost:{job_port}", f"--project={project}", *extra]


@dataclass
class ServerProcess:
    """A ``tidegate server`` process that a test kills and starts again (``server_processes``)."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    data_dir: Path

    @property
    def base(self) -> str:
        return f"http://localhost:{self.port}"

    def kill(self) -> None:
        """SIGKILL: nothing of the server runs its shutdown."""
        self.proc.kill()
        self.proc.wait()

    def terminate(self) -> None:
        """SIGTERM: the server stops as it would at a user's Ctrl-C."""
        assert _stop(self.proc) == 0, self.log.read_text()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store for servers to share (``server_processes(…, store_url)``): a SQLite file, or a fresh schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'shared' / 'tidegate.db'}"
        return
    base = _postgres_or_skip()
    import psycopg

    schema = f"tg_shared_{secrets.token_hex(6)}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    yield f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def server_processes() -> Iterator[Callable[..., ServerProcess]]:
    """``start(data_dir, store_url="", engines="beam", *flags, port=0)``: a server, its REST API up.

    ``port``: the REST port (0: a free one), to start a server where the one before it was.

    Every one still running is stopped after the test, and so is any local Flink cluster
    left in their data directories.
    """
    started: list[ServerProcess] = []

    def start(data_dir: Path, store_url: str = "", engines: str = "beam", *flags: str, port: int = 0) -> ServerProcess:
        data_dir.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        log = data_dir / f"server-{len(started)}.log"
        command = [str(TIDEGATE), "server", "--port", str(port), "--grpc-port", "0", "--job-port", "0"]
        command += ["--engines", engines, "--data-dir", str(data_dir), *staging_roots(), *flags]
        command += ["--database-url", store_url] if store_url else []
        with log.open("ab") as out:
            proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=clean_env(), cwd=data_dir)
        process = ServerProcess(proc, port, log, data_dir)
        started.append(process)
        if not _wait_healthy(proc, process.base, log):
            pytest.fail(f"the server could not listen on port {port}:\n{log.read_text()}")
        return process

    yield start
    for process in started:
        if process.proc.poll() is None:
            _stop(process.proc)
    for data_dir in {process.data_dir for process in started}:
        stop_local_flink(data_dir)
