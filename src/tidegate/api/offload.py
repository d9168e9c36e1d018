"""The API servers' calls into the service, off their event loop (``tidegate.service.calls``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from starlette.concurrency import run_in_threadpool

from tidegate.model import Job, NewJob
from tidegate.service.jobs import JobService

__all__ = ["read", "submit", "write"]

T = TypeVar("T")


async def write(service: JobService, call: Callable[[], T]) -> T:
    """A writing call, group-committed; answered once it is on disk."""
    return await asyncio.wrap_future(service.calls.write(call))


async def read(service: JobService, call: Callable[[], T]) -> T:
    """A reading call: at once on SQLite, on a reader thread on PostgreSQL."""
    if service.calls.reads_inline:
        return call()
    return await asyncio.wrap_future(service.calls.read(call))


async def submit(service: JobService, new: NewJob) -> Job:
    """CreateJob (``JobService.create_job``): staged files read on a thread, the job stored in a batch."""
    if service.reads_files(new):
        prepared = await run_in_threadpool(service.prepare_job, new)
    else:
        prepared = await read(service, lambda: service.prepare_job(new))
    if isinstance(prepared, tuple):
        return prepared[0]
    job, _ = await write(service, lambda: service.store_job(prepared))
    return job
