"""A local Google Cloud Storage emulator, for ``gs://`` paths without the cloud.

Beam's DataflowRunner stages ``pipeline.pb`` into ``--temp_location``; with a
``gs://bucket/…`` location and ``STORAGE_EMULATOR_HOST`` set, Beam's GCS file system
(google-cloud-storage) talks to an emulator instead of Google. tidegate serves one for
the user: ``tidegate gcs-emulator`` on its own, or ``tidegate server --gcs-emulator PORT``
beside the server (which then reads staged files from it and hands
``STORAGE_EMULATOR_HOST`` to its jobs).

The emulator is the ``gcp-storage-emulator`` package's request handler and storage
(buckets, media, multipart and resumable uploads, ranged downloads, listing, copy,
rewrite, compose, delete and batch requests: all that Beam's ``GcsIO`` does), served
here by one thread so that a port that is taken fails at once, and port 0 works. It
keeps its data in a folder, or in memory when given none. Its storage is not
thread-safe: it answers one request at a time, which a developer's machine can afford.

Beam retries a missing bucket for minutes before it gives up, so the buckets a user
names are created at start (``--bucket``), and ``tidegate run`` creates the bucket of
a ``gs://`` temp location (see ``ensure_bucket``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from functools import partial
from http.server import HTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

__all__ = ["DEFAULT_PORT", "EMULATOR_ENV", "EmulatorMissing", "GcsEmulator", "emulator_url", "ensure_bucket"]

DEFAULT_PORT = 9023
"""The port ``gcp-storage-emulator`` and Google's own tools use by default."""

EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
"""Where google-cloud-storage (and so Beam, and tidegate's staging reads) find the emulator."""


class EmulatorMissing(RuntimeError):
    """The ``gcp-storage-emulator`` package is not installed."""


def _package() -> tuple[Any, Any, Any]:
    """The package's request handler, storage and bucket creation (imported only when asked for)."""
    try:
        from gcp_storage_emulator.handlers import buckets  # type: ignore[import-untyped]
        from gcp_storage_emulator.server import RequestHandler  # type: ignore[import-untyped]
        from gcp_storage_emulator.storage import Storage  # type: ignore[import-untyped]
    except ImportError as error:
        raise EmulatorMissing(
            f"the GCS emulator needs the gcp-storage-emulator package ({error}); install tidegate with its dependencies"
        ) from error
    return RequestHandler, Storage, buckets.create_bucket


def emulator_url(host: str, port: int) -> str:
    """The URL clients use (``STORAGE_EMULATOR_HOST``): a wildcard bind address becomes the loopback one."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


class GcsEmulator:
    """A running GCS emulator: ``start()`` binds and serves in a daemon thread, ``stop()`` ends it.

    ``data_dir`` None keeps everything in memory; otherwise objects and metadata live under
    it (``data_dir/.cloudstorage``) and survive a restart. ``buckets`` are created at start
    when missing.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        data_dir: Path | None = None,
        buckets: Iterable[str] = (),
    ) -> None:
        self.host = host
        self.requested_port = port
        self.data_dir = data_dir
        self.buckets = tuple(buckets)
        self._httpd: HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the one asked for, or the one chosen for port 0)."""
        if self._httpd is None:
            return self.requested_port
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """The value for ``STORAGE_EMULATOR_HOST``."""
        return emulator_url(self.host, self.port)

    def start(self) -> GcsEmulator:
        """Open the storage, create the buckets, bind the port (OSError if taken) and serve."""
        handler, storage_class, create_bucket = _package()
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            storage = storage_class(use_memory_fs=False, data_dir=str(self.data_dir.resolve()))
        else:
            storage = storage_class(use_memory_fs=True, data_dir=str(Path.cwd().resolve()))
        for name in self.buckets:
            create_bucket(name, storage)
        self._httpd = HTTPServer((self.host, self.requested_port), partial(handler, storage))
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="gcs-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port (the data folder stays)."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> GcsEmulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


def ensure_bucket(emulator: str, bucket: str, project: str, timeout: float = 10.0) -> bool:
    """Create ``bucket`` in the emulator at ``emulator`` (``STORAGE_EMULATOR_HOST``) unless it exists.

    True when it was created, False when it was there. Raises ``httpx.HTTPError`` when the
    emulator cannot be reached or refuses.
    """
    base = emulator if emulator.startswith(("http://", "https://")) else f"http://{emulator}"
    base = base.rstrip("/")
    found = httpx.get(f"{base}/storage/v1/b/{quote(bucket, safe='')}", timeout=timeout)
    if found.status_code == 200:
        return False
    if found.status_code != 404:
        found.raise_for_status()
    created = httpx.post(f"{base}/storage/v1/b", params={"project": project}, json={"name": bucket}, timeout=timeout)
    if created.status_code == 409:  # created meanwhile by someone else
        return False
    created.raise_for_status()
    return True
