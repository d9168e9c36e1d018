"""``tidegate server``: the store, the service and the API servers in one process."""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import ssl
import stat
import sys
import threading
import uuid
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn
import uvloop
from prometheus_client.core import Metric

from tidegate import telemetry
from tidegate.api.grpc_server import GrpcServer
from tidegate.api.rest.app import create_app
from tidegate.auth import Gate
from tidegate.config import Settings
from tidegate.engines.base import ClusterReporting, Engine
from tidegate.os_user import RunAs
from tidegate.scheduler.admission import Capacity
from tidegate.scheduler.loop import Scheduler, SchedulerSettings
from tidegate.service.jobs import JobService
from tidegate.service.staging import Staging
from tidegate.store import Store

if TYPE_CHECKING:
    from tidegate.api.beam_job.server import BeamJobServer
    from tidegate.gcs_emulator import GcsEmulator

__all__ = [
    "build_engines",
    "build_scheduler",
    "build_service",
    "check_access",
    "close_engines",
    "flink_venv",
    "secure_data_dir",
    "serve",
    "tls_files",
]

log = logging.getLogger(__name__)


def secure_data_dir(data_dir: Path, run_as: RunAs | None = None) -> None:
    """The data directory for this server's user alone: the folder 0700, what is in it owner-only.

    Sets this process's umask to 077 (new files 0600, new folders 0700; the jobs' processes
    inherit it) and takes the group's and others' bits off whatever an older tidegate left.
    With ``run_as``, the data directory, its ``runs`` and each run's folder are 0711: the
    jobs' user may pass through them to the run folder's ``out`` it owns, and list or read
    nothing else.
    """
    os.umask(0o077)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    data_dir.chmod(0o700)
    for folder, dirs, files in os.walk(data_dir):
        if Path(folder).parent == data_dir / "runs" and "out" in dirs:
            dirs.remove("out")  # a run's user's own (see the Beam engine): not walked as root
        for name in [*dirs, *files]:
            path = Path(folder) / name
            try:
                info = path.lstat()
                if not stat.S_ISLNK(info.st_mode) and info.st_mode & 0o077:
                    path.chmod(stat.S_IMODE(info.st_mode) & 0o700)
            except OSError:  # gone meanwhile (a run ending), or not ours: leave it
                continue
    if run_as is not None:
        runs = data_dir / "runs"
        runs.mkdir(exist_ok=True)
        for passage in (data_dir, runs, *(p for p in runs.iterdir() if p.is_dir() and not p.is_symlink())):
            passage.chmod(0o711)


def run_as_user(settings: Settings) -> RunAs | None:
    """The user of ``--run-as``, checked to be able to run the worker's Python; None without it."""
    if not settings.run_as:
        return None
    from tidegate.engines.beam import worker_env

    try:
        run_as = RunAs.named(settings.run_as)
        run_as.check(settings.worker_python or sys.executable, "tidegate.engines.beam_worker", worker_env())
    except (ValueError, RuntimeError) as error:
        raise SystemExit(f"tidegate: {error}") from None
    return run_as


def build_service(settings: Settings) -> JobService:
    """Open (and migrate) the store and build the service over it."""
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    settings.staging_dir.mkdir(exist_ok=True, mode=0o700)
    store = Store(settings.store_url)
    store.checkpoint_in_background()  # SQLite: no commit of the API's waits for a checkpoint
    store.migrate()
    staging = Staging([settings.staging_dir, *settings.staging_roots])
    service = JobService(
        store, default_location=settings.default_location, pool_size=settings.database_pool_size, staging=staging
    )
    if settings.launcher_python:
        service.launcher_python = settings.launcher_python
    scheme = "https" if settings.tls else "http"
    service.launcher_endpoint = f"{scheme}://localhost:{settings.port}"  # Beam stages locally for localhost only
    return service


def build_engines(names: tuple[str, ...], settings: Settings | None = None) -> dict[str, Engine]:
    """The engines by name; each engine's libraries load only when it is asked for."""
    engines: dict[str, Engine] = {}
    for name in names:
        if name == "beam":
            from tidegate.engines.beam import BeamEngine

            run_as = RunAs.named(settings.run_as) if settings and settings.run_as else None
            python = (settings.worker_python if settings else "") or None
            engines[name] = BeamEngine(python=python, run_as=run_as)
        elif name == "flink":
            from tidegate.engines.flink import FlinkEngine

            data_dir = (settings or Settings()).data_dir
            venv = flink_venv()
            if not (venv / "bin" / "python").exists():
                log.warning("no Flink environment at %s: Flink jobs will fail until scripts/setup-flink runs", venv)
            if settings and settings.run_as and not settings.flink_rest_url:
                log.warning(
                    "--run-as %s does not cover the flink engine: its local cluster, and the Flink jobs' code,"
                    " run as this server's user (put them on a cluster of another user's with --flink-rest-url)",
                    settings.run_as,
                )
            engines[name] = FlinkEngine(
                state_dir=data_dir / "flink",
                flink_venv=venv,
                rest_url=(settings.flink_rest_url if settings else "") or None,
                checkpoint_interval=settings.flink_checkpoint_interval_s if settings else 10.0,
                python_mode=settings.flink_python_mode if settings else "",
                warm_submit=settings.flink_warm_submit if settings else True,
                warm_submitters=settings.flink_warm_submitters if settings else 2,
            )
        else:
            raise SystemExit(f"tidegate: unknown engine {name!r} (known: beam, flink)")
    return engines


def flink_venv() -> Path:
    """Flink's own environment: ``$TIDEGATE_FLINK_VENV``, else ``.flink-venv`` at the project root."""
    if env := os.environ.get("TIDEGATE_FLINK_VENV"):
        return Path(env)
    return Path(__file__).resolve().parents[2] / ".flink-venv"


def close_engines(engines: Mapping[str, Engine]) -> None:
    """Close the engines that hold resources (the local Flink cluster runs on, for the next server)."""
    for name, engine in engines.items():
        close = getattr(engine, "close", None)
        if callable(close):
            try:
                close()
            except Exception:  # one engine's trouble must not keep the others open
                log.exception("could not close the %s engine", name)


def build_scheduler(settings: Settings, service: JobService) -> Scheduler | None:
    """The scheduler over the configured engines, or None for an API-only server."""
    engines = build_engines(settings.engines, settings)
    if not engines:
        return None
    capacity = Capacity(
        max_jobs=settings.max_jobs,
        max_jobs_per_project=settings.max_jobs_per_project,
        flex_window=timedelta(seconds=settings.flex_window_s),
    )
    scheduler_settings = SchedulerSettings(
        work_dir=settings.data_dir / "runs",
        capacity=capacity,
        cleanup=settings.resource_cleanup,
        worker_id=_worker_id(settings.data_dir),
    )
    return Scheduler(service, engines, scheduler_settings)


def _worker_id(data_dir: Path) -> str:
    """This server's worker name, kept in its data directory.

    A restarted server keeps its name, so it takes its running jobs back instead of
    letting their leases expire; two servers never share a data directory.
    """
    path = data_dir / "worker-id"
    if not path.exists():
        path.write_text(f"{socket.gethostname()}-{uuid.uuid4().hex[:12]}\n")
    return path.read_text().strip()


def tls_files(settings: Settings) -> tuple[bytes, bytes] | None:
    """The TLS private key and certificate chain (PEM), checked to be a pair; None without ``--tls-cert``."""
    if not settings.tls_cert and not settings.tls_key:
        return None
    if not (settings.tls_cert and settings.tls_key):
        raise SystemExit("tidegate: --tls-cert and --tls-key go together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
        return Path(settings.tls_key).read_bytes(), Path(settings.tls_cert).read_bytes()
    except (OSError, ssl.SSLError) as exc:
        message = f"tidegate: cannot use --tls-cert {settings.tls_cert} --tls-key {settings.tls_key}: {exc}"
        raise SystemExit(message) from exc


def _scrape(service: JobService, scheduler: Scheduler | None) -> Callable[[], list[Metric]]:
    """What ``/metrics`` reads at each scrape: the jobs by state and engine (a grouped COUNT), the clusters' health."""
    reporting = [e for e in (scheduler.engines.values() if scheduler else ()) if isinstance(e, ClusterReporting)]

    def collect() -> list[Metric]:
        counts = [
            telemetry.JobCount(state.name, engine or "none", count)
            for state, engine, count in service.store.count_jobs_by_state()
        ]
        families = [telemetry.jobs_family(counts)]
        if reporting:
            families += telemetry.cluster_families(engine.cluster_health() for engine in reporting)
        return families

    return collect


LOG_FORMATS = ("text", "json")


def configure_logging(log_format: str) -> None:
    """``json``: every record of the server's log (uvicorn's included) as one JSON object on a line of stderr.

    Its fields: ``time`` (RFC 3339, UTC), ``level``, ``logger``, ``message`` and, for an
    error with a traceback, ``exception``. ``text`` leaves the log as it is.
    """
    if log_format == "text":
        return
    from pythonjsonlogger.core import RESERVED_ATTRS
    from pythonjsonlogger.json import JsonFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger", "exc_info": "exception", "timestamp": "time"},
            timestamp=True,
            reserved_attrs=[*RESERVED_ATTRS, "color_message", "taskName"],  # uvicorn's message with colours
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.INFO)
    for chatty in ("httpx", "httpcore"):  # a line for every request to Flink's REST API
        logging.getLogger(chatty).setLevel(logging.WARNING)


def _announce(settings: Settings, text: str) -> None:
    """A line of the server's own at start: on stdout as text, or an INFO record of the JSON log."""
    if settings.log_format == "json":
        log.info(text)
    else:
        print(f"tidegate: {text}", flush=True)


async def _serve(settings: Settings, service: JobService, gate: Gate) -> None:
    json_log = settings.log_format == "json"
    config = uvicorn.Config(
        create_app(service, gate),
        host=settings.host,
        port=settings.port,
        log_level="info" if settings.access_log else "warning",
        access_log=settings.access_log,
        log_config=None if json_log else uvicorn.config.LOGGING_CONFIG,  # json: its loggers go to the root's
        lifespan="off",
        ssl_certfile=settings.tls_cert or None,
        ssl_keyfile=settings.tls_key or None,
    )
    server = uvicorn.Server(config)
    await server.serve()


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def check_access(settings: Settings, gate: Gate) -> str:
    """How calls are let in, for the start-up banner; refuses (SystemExit) to serve open beyond loopback.

    With no credential ever created, the server runs open: fine on loopback, where only this
    machine reaches it; elsewhere only when told so (``--insecure``), with a warning.
    """
    if gate.required:
        return "every call needs a credential (a service account or an API token)"
    if settings.loopback:
        return "open (no credential created yet; loopback only)"
    if not settings.insecure:
        gate.store.close()
        raise SystemExit(
            f"tidegate: refusing to serve on {settings.host} without authentication: no credential exists yet."
            " Create one first (tidegate tokens create NAME --project PROJECT --role admin, on the same"
            " --data-dir or --database-url), serve on 127.0.0.1, or pass --insecure to let anyone who can reach"
            f" {settings.host} do anything"
        )
    print(
        f"tidegate: WARNING: --insecure: serving on {settings.host} with no authentication; anyone who can reach"
        " it can run, cancel and read every job (create a credential to close it)",
        file=sys.stderr,
        flush=True,
    )
    return f"OPEN TO ANYONE WHO CAN REACH {settings.host} (--insecure)"


def _start_job_api(settings: Settings, service: JobService, gate: Gate) -> BeamJobServer | None:
    """Beam's Job API (PortableRunner's ``--job_endpoint``), started; None when ``job_port`` is 0."""
    if not settings.job_port:
        return None
    from tidegate.api.beam_job.server import BeamJobServer  # imports Beam: only when it is asked for

    staging = settings.data_dir / "beam-artifacts"
    server = BeamJobServer(service, settings.host, settings.job_port, staging, gate=gate)
    server.start()
    return server


def _start_gcs_emulator(settings: Settings) -> GcsEmulator | None:
    """The GCS emulator beside the server (``--gcs-emulator PORT``), started; None when not asked for.

    Its address goes into this process's ``STORAGE_EMULATOR_HOST``: the server reads staged
    ``gs://`` files from it, and the jobs' processes inherit it.
    """
    if not settings.gcs_emulator_port:
        return None
    from tidegate.gcs_emulator import EMULATOR_ENV, GcsEmulator

    emulator = GcsEmulator(settings.host, settings.gcs_emulator_port, settings.data_dir / "gcs", settings.gcs_buckets)
    emulator.start()
    if os.environ.get(EMULATOR_ENV, emulator.url) != emulator.url:
        log.warning(
            "%s was %s; the server uses its own emulator at %s", EMULATOR_ENV, os.environ[EMULATOR_ENV], emulator.url
        )
    os.environ[EMULATOR_ENV] = emulator.url
    return emulator


def serve(settings: Settings) -> None:
    """Run until interrupted (SIGINT or SIGTERM); then stop every API server and close the store."""
    # The committer's and the readers' threads give the interpreter back at every SQL call and
    # want it back at once; the event loop holds it while it parses requests. At the default
    # switch interval (5 ms) each of their statements may wait that long: a thousand writes a
    # second at most. 0.5 ms lets them in between the loop's requests.
    sys.setswitchinterval(float(os.environ.get("TIDEGATE_SWITCH_INTERVAL", "0.0005")))
    # Each request makes and drops thousands of objects (JSON, protobuf, rows): at Python's
    # default thresholds (700, 10, 10) the cyclic collector ran every few requests and its full
    # collections, over every object of the server, took tens of milliseconds: the p99 of a
    # write at 32 clients was 48 ms; with these, 15 ms (benchmarks/bench_control_plane.py).
    gc.set_threshold(100_000, 50, 1000)
    if threading.current_thread() is threading.main_thread():
        # uvicorn shuts down on SIGTERM and then re-raises it to the previous handler: the
        # default one would kill the process before the gRPC server and the store are closed.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    configure_logging(settings.log_format)
    tls = tls_files(settings)
    run_as = run_as_user(settings)
    secure_data_dir(settings.data_dir, run_as)
    service = build_service(settings)
    service.run_as = run_as
    gate = Gate(service.store)
    access = check_access(settings, gate)
    where = settings.database_url.split("@")[-1] if settings.database_url else str(settings.data_dir)
    grpc_server = None
    if settings.grpc_port:
        try:
            grpc_server = GrpcServer(service, settings.host, settings.grpc_port, gate=gate, tls=tls)
        except OSError as exc:
            service.close()
            service.store.close()
            raise SystemExit(f"tidegate: {exc} (choose another --grpc-port, or 0 for no gRPC)") from exc
        grpc_server.start()
    try:
        job_server = _start_job_api(settings, service, gate)
    except OSError as exc:
        if grpc_server is not None:
            grpc_server.stop(grace=0)
        service.close()
        service.store.close()
        raise SystemExit(f"tidegate: {exc} (choose another --job-port, or 0 for no Beam Job API)") from exc
    try:
        gcs_emulator = _start_gcs_emulator(settings)
    except (OSError, RuntimeError) as exc:
        if grpc_server is not None:
            grpc_server.stop(grace=0)
        if job_server is not None:
            job_server.stop(grace=0)
        service.close()
        service.store.close()
        hint = " (choose another --gcs-emulator port)" if isinstance(exc, OSError) else ""
        raise SystemExit(f"tidegate: GCS emulator: {exc}{hint}") from exc
    scheduler = build_scheduler(settings, service)
    scheme = "https" if tls else "http"
    _announce(settings, f"REST API on {scheme}://{settings.host}:{settings.port} (store: {where})")
    _announce(settings, f"access: {access}")
    if grpc_server is not None:
        _announce(settings, f"gRPC API on {settings.host}:{grpc_server.port}{' (TLS)' if tls else ''}")
    if job_server is not None:
        _announce(settings, f"Beam Job API on {settings.host}:{job_server.port}")
    if gcs_emulator is not None:
        _announce(settings, f"GCS emulator on {gcs_emulator.url} (STORAGE_EMULATOR_HOST for clients)")
    if scheduler is None:
        _announce(settings, "no engines: API only, jobs wait in JOB_STATE_STOPPED")
    else:
        _announce(settings, f"engines: {', '.join(sorted(scheduler.engines))}")
        scheduler.start()
    stop_scraping = telemetry.register_scrape(_scrape(service, scheduler))
    try:
        gc.freeze()  # what start-up made lives as long as the server: no collection looks at it again
        uvloop.run(_serve(settings, service, gate))  # libuv's loop, as uvicorn.run would pick: a third less CPU a call
    finally:
        stop_scraping()
        # Running jobs go on; a restarted server (same data directory) takes them back.
        if scheduler is not None:
            scheduler.stop()
            close_engines(scheduler.engines)
        if grpc_server is not None:
            grpc_server.stop(grace=5)
        if job_server is not None:
            job_server.stop(grace=5)
        if gcs_emulator is not None:
            gcs_emulator.stop()
        service.close()
        service.store.close()
