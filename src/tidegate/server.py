"""``tidegate server``: the store, the service and the API servers in one process."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from types import FrameType

import uvicorn

from tidegate.api.grpc_server import create_server
from tidegate.api.rest import create_app
from tidegate.config import Settings
from tidegate.service import JobService
from tidegate.store import Store

__all__ = ["build_service", "serve"]

log = logging.getLogger(__name__)


def build_service(settings: Settings) -> JobService:
    """Open (and migrate) the store and build the service over it."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(settings.store_url)
    store.migrate()
    return JobService(store, default_location=settings.default_location)


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
    print(f"tidegate: REST API on http://{settings.host}:{settings.port} (store: {where})", flush=True)
    if grpc_server is not None:
        print(f"tidegate: gRPC API on {settings.host}:{grpc_port}", flush=True)
    try:
        asyncio.run(_serve(settings, service))
    finally:
        if grpc_server is not None:
            grpc_server.stop(grace=5).wait()
        service.store.close()
