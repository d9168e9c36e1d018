"""``tidegate server``: the store, the service and the API servers in one process."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
import uuid
from datetime import timedelta
from pathlib import Path
from types import FrameType

import uvicorn

from tidegate.admission import Capacity
from tidegate.api.grpc_server import create_server
from tidegate.api.rest import create_app
from tidegate.config import Settings
from tidegate.engines.base import Engine
from tidegate.scheduler import Scheduler, SchedulerSettings
from tidegate.service import JobService
from tidegate.store import Store

__all__ = ["build_engines", "build_scheduler", "build_service", "serve"]

log = logging.getLogger(__name__)


def build_service(settings: Settings) -> JobService:
    """Open (and migrate) the store and build the service over it."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(settings.store_url)
    store.migrate()
    return JobService(store, default_location=settings.default_location)


def build_engines(names: tuple[str, ...]) -> dict[str, Engine]:
    """The engines by name; each engine's libraries load only when it is asked for."""
    engines: dict[str, Engine] = {}
    for name in names:
        if name == "beam":
            from tidegate.engines.beam import BeamEngine

            engines[name] = BeamEngine()
        else:
            raise SystemExit(f"tidegate: unknown engine {name!r} (known: beam)")
    return engines


def build_scheduler(settings: Settings, service: JobService) -> Scheduler | None:
    """The scheduler over the configured engines, or None for an API-only server."""
    engines = build_engines(settings.engines)
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


async def _serve(settings: Settings, service: JobService) -> None:
    config = uvicorn.Config(
        create_app(service),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    await server.serve()


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def serve(settings: Settings) -> None:
    """Run until interrupted (SIGINT or SIGTERM); then stop every API server and close the store."""
    if threading.current_thread() is threading.main_thread():
        # uvicorn shuts down on SIGTERM and then re-raises it to the previous handler: the
        # default one would kill the process before the gRPC server and the store are closed.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    service = build_service(settings)
    where = settings.database_url.split("@")[-1] if settings.database_url else str(settings.data_dir)
    grpc_server = None
    if settings.grpc_port:
        try:
            grpc_server, grpc_port = create_server(service, settings.host, settings.grpc_port)
        except OSError as exc:
            service.store.close()
            raise SystemExit(f"tidegate: {exc} (choose another --grpc-port, or 0 for no gRPC)") from exc
        grpc_server.start()
    scheduler = build_scheduler(settings, service)
    print(f"tidegate: REST API on http://{settings.host}:{settings.port} (store: {where})", flush=True)
    if grpc_server is not None:
        print(f"tidegate: gRPC API on {settings.host}:{grpc_port}", flush=True)
    if scheduler is None:
        print("tidegate: no engines: API only, jobs wait in JOB_STATE_STOPPED", flush=True)
    else:
        print(f"tidegate: engines: {', '.join(sorted(scheduler.engines))}", flush=True)
        scheduler.start()
    try:
        asyncio.run(_serve(settings, service))
    finally:
        # Running jobs go on; a restarted server (same data directory) takes them back.
        if scheduler is not None:
            scheduler.stop()
        if grpc_server is not None:
            grpc_server.stop(grace=5).wait()
        service.store.close()
