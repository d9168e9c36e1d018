"""``tidegate server``: the store, the service and the API servers in one process."""

from __future__ import annotations

import asyncio
import logging

import uvicorn

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


def serve(settings: Settings) -> None:
    """Run until interrupted."""
    service = build_service(settings)
    where = settings.database_url.split("@")[-1] if settings.database_url else str(settings.data_dir)
    print(f"tidegate: REST API on http://{settings.host}:{settings.port} (store: {where})", flush=True)
    try:
        asyncio.run(_serve(settings, service))
    finally:
        service.store.close()
