"""The API servers' calls into the service, off their event loop (``tidegate.service.calls``)."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import TypeVar

from starlette.concurrency import run_in_threadpool

from tidegate.model import Job, NewJob
from tidegate.service.jobs import JobService

__all__ = ["read", "submit", "write"]

T = TypeVar("T")


class _LoopBatches:
    """SQLite's group commit, on the event loop: the writes asked for in one turn of the loop, one transaction.

    A write is queued, and the first of a turn schedules the flush at the end of it
    (``call_soon``): every request the loop parsed meanwhile joins the batch, which then runs
    here at once (``Calls.run_batch``) and answers each. Measured against the committer's
    thread (``benchmarks/bench_control_plane.py``, 32 clients): SQLite's calls hold the
    interpreter for most of their time and its thread waited for it behind the loop at every
    statement (2,203 transitions/s, p99 66 ms), where this gives 3,200/s. PostgreSQL's calls
    wait on the network, without the interpreter: they go to the committer's threads.
    """

    def __init__(self) -> None:
        self._queued: list[tuple[Callable[[], object], asyncio.Future[object]]] = []

    def add(self, service: JobService, call: Callable[[], object]) -> asyncio.Future[object]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[object] = loop.create_future()
        if not self._queued:
            loop.call_soon(self._flush, service)
        self._queued.append((call, future))
        return future

    def _flush(self, service: JobService) -> None:
        batch, self._queued = self._queued, []
        outcomes = service.calls.run_batch([call for call, _ in batch])
        for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
            if future.cancelled():  # its client went away; the write stands, as it would have
                continue
            if ok:
                future.set_result(value)
            else:
                assert isinstance(value, BaseException)
                future.set_exception(value)


_batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopBatches] = weakref.WeakKeyDictionary()


async def write(service: JobService, call: Callable[[], T]) -> T:
    """A writing call, group-committed; answered once it is on disk."""
    if service.calls.reads_inline:  # SQLite: on the loop, in a batch
        loop = asyncio.get_running_loop()
        batches = _batches.get(loop)
        if batches is None:
            batches = _batches[loop] = _LoopBatches()
        result: T = await batches.add(service, call)  # type: ignore[assignment]
        return result
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
    elif service.calls.reads_inline:
        prepared = service.prepare_job(new)
    else:  # PostgreSQL: its checks and the insert in one call of a committer's batch, one trip to a thread
        checked = service.checked_request(new)  # bad input here, not as a failed call that reruns a batch
        return (await write(service, lambda: service.submit_job(checked)))[0]
    if isinstance(prepared, tuple):
        return prepared[0]
    job, _ = await write(service, lambda: service.store_job(prepared))
    return job
