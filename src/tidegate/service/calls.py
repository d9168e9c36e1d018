"""Where the API's calls into the service run, so that none holds up an API server's event loop.

Writes go to the store's committer (group commit: calls that arrive together share one
transaction and one commit; each is answered once it is committed). Reads of a SQLite
store run where they are asked: WAL readers never wait for a writer, and a read takes
microseconds, less than a hand-off to a thread would. Reads of PostgreSQL, a network
round trip each, run on a pool of threads, each with a connection of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from tidegate.store import Store
from tidegate.store.committer import Committer

__all__ = ["DEFAULT_POOL_SIZE", "Calls"]

T = TypeVar("T")

DEFAULT_POOL_SIZE = 4
"""PostgreSQL connections for the API's writes, and as many for its reads (``--database-pool-size``)."""


class Calls:
    """The API's ways into the service: ``write`` and ``read`` answer futures.

    ``reads_inline``: reads are better called directly (SQLite).
    """

    def __init__(self, store: Store, pool_size: int = DEFAULT_POOL_SIZE) -> None:
        self.store = store
        self.reads_inline = store.dialect == "sqlite"
        self._committer = Committer(store, 1 if store.dialect == "sqlite" else pool_size)
        self._pool_size = max(1, pool_size)
        self._readers: ThreadPoolExecutor | None = None

    def run_batch(self, calls: list[Callable[[], object]]) -> list[tuple[bool, object]]:
        """Run writing calls in one transaction here, in the caller's thread (``Database.run_batch``):
        SQLite's group commit on the event loop (``tidegate.api.offload``)."""
        return self.store.run_batch(calls)

    def write(self, call: Callable[[], T]) -> Future[T]:
        """Run a writing call in a batch of the committer's; answered once committed."""
        return self._committer.submit(call)

    def read(self, call: Callable[[], T]) -> Future[T]:
        """Run a reading call on a reader thread."""
        if self._readers is None:
            self._readers = ThreadPoolExecutor(self._pool_size, thread_name_prefix="tidegate-read")
        return self._readers.submit(call)

    def close(self) -> None:
        """Finish what is under way and stop the threads (before the store is closed)."""
        self._committer.close()
        if self._readers is not None:
            self._readers.shutdown(wait=True)
            self._readers = None
