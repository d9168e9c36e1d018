"""Group commit: writes that arrive together share one transaction and one commit.

The API hands its writing calls (a create, an update) to a ``Committer`` instead of
running them on the event loop. Each of its threads takes every call waiting, runs them
in one transaction (``Database.run_batch``), and answers each once the commit is done:
an answered write is on disk, whatever is killed after. Each call keeps its own atomic
compare-and-set: a call sees the writes of the calls before it in the batch, as if they
had run one after the other, and a failing call sends the whole batch back to run call
by call.

SQLite takes one writer at a time, so it gets one thread; PostgreSQL gets as many as the
connection pool is large, each with a connection of its own.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from tidegate.store.db import Database

__all__ = ["Committer"]

T = TypeVar("T")

_MAX_BATCH = 64


class Committer:
    """Threads that run writing calls in batches, one transaction (and one commit) a batch."""

    def __init__(self, db: Database, threads: int, *, name: str = "tidegate-commit") -> None:
        self.db = db
        self.threads = max(1, threads)
        self._name = name
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, call: Callable[[], T]) -> Future[T]:
        """Run ``call`` in a batch; its future is answered once its transaction has committed."""
        future: Future[T] = Future()
        if not self._workers:
            self._start()
        if self._closed:
            raise RuntimeError("the committer is closed")
        self._queue.put((call, future))
        return future

    def _start(self) -> None:
        with self._lock:
            if self._workers or self._closed:
                return
            for i in range(self.threads):
                worker = threading.Thread(target=self._work, name=f"{self._name}-{i}", daemon=True)
                worker.start()
                self._workers.append(worker)

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < _MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # for another worker; this one ends after the batch
                    break
                batch.append(item)
            live = [(call, future) for call, future in batch if future.set_running_or_notify_cancel()]
            outcomes = self.db.run_batch([call for call, _ in live])
            for (_, future), (ok, value) in zip(live, outcomes, strict=True):
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    def close(self) -> None:
        """Answer what is queued, then stop the threads."""
        with self._lock:
            self._closed = True
            workers, self._workers = self._workers, []
        for _ in workers:
            self._queue.put(None)
        for worker in workers:
            worker.join()
