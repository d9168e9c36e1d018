"""Reading what a client staged for a job: Beam's ``pipeline.pb``, templates, programs.

Beam's DataflowRunner stages the pipeline into ``--temp_location`` (a local folder, or
``gs://…``) under a fixed name with no per-job folder, so the next submission
overwrites it: tidegate reads it when the job is created and keeps it with the job.
``gs://`` paths are read from a GCS emulator (``STORAGE_EMULATOR_HOST``).

A client names the file, so the server reads local files only inside its *staging
roots*: the data directory's ``staging`` folder and the folders it was told to trust
(``tidegate server --staging-root``). The path is resolved first (``..`` and every
symbolic link), and the file opened is checked again after opening; any other path is
refused with one message, whether or not something lies there, so that a refusal tells
nothing about the server's files. Only regular files are read (a FIFO or a device
would hang or never end).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote, urlparse

import httpx

from tidegate.errors import InvalidArgument

__all__ = ["MAX_STAGED_BYTES", "Staging"]

MAX_STAGED_BYTES = 256 * 1024 * 1024
_UNREADABLE = "STAGED_FILE_UNREADABLE"
_OUTSIDE = "STAGED_FILE_NOT_ALLOWED"


class Staging:
    """Where the server reads staged files from: its staging roots, and ``gs://`` through the emulator."""

    def __init__(self, roots: Iterable[Path | str] = ()) -> None:
        self.roots: tuple[Path, ...] = tuple(dict.fromkeys(Path(os.path.realpath(root)) for root in roots))
        """The folders (resolved) whose files a client may name; none: no local file may be named."""

    def allows(self, path: Path | str) -> bool:
        """Whether a local path lies in a staging root, once resolved (``..`` and symbolic links)."""
        real = Path(os.path.realpath(path))
        return any(real == root or real.is_relative_to(root) for root in self.roots)

    def local_path(self, url: str) -> Path | None:
        """The resolved local path a staging URL names (None for ``gs://``); refused outside the roots."""
        _no_nul(url)
        parsed = urlparse(url)
        if parsed.scheme == "gs":
            return None
        if parsed.scheme not in ("", "file") or (parsed.scheme == "file" and parsed.netloc not in ("", "localhost")):
            raise InvalidArgument(
                f"cannot read the staged file {url}: only local paths, file:// and gs:// (through a GCS emulator)"
                " are supported",
                reason=_UNREADABLE,
            )
        path = Path(parsed.path if parsed.scheme else url)
        real = Path(os.path.realpath(path))
        if not self.allows(real):
            raise self._outside(url)
        return real

    def read(self, url: str) -> bytes:
        """The bytes at a staging URL: a local path or ``file://…`` in a staging root, or ``gs://bucket/object``."""
        path = self.local_path(url)
        if path is None:
            parsed = urlparse(url)
            data = _read_gcs(parsed.netloc, parsed.path.lstrip("/"))
            assert data is not None  # only missing_ok reads give None
            return data
        return self._read_local(url, path)

    def read_if_present(self, url: str) -> bytes | None:
        """``read``, but None when nothing lies at the URL (a missing file, or a 404 from the emulator)."""
        path = self.local_path(url)
        if path is None:
            parsed = urlparse(url)
            return _read_gcs(parsed.netloc, parsed.path.lstrip("/"), missing_ok=True)
        if not path.exists():
            return None
        return self._read_local(url, path)

    def _read_local(self, url: str, path: Path) -> bytes:
        try:
            # O_NONBLOCK: opening a FIFO must not wait for a writer; O_NOFOLLOW: the resolved path has no link left.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
        except OSError as error:
            raise InvalidArgument(
                f"cannot read the staged file {url}: {error.strerror or error}", reason=_UNREADABLE
            ) from error
        try:
            opened = Path(f"/proc/self/fd/{fd}")
            # A folder on the way may have been swapped for a link since the check: check what was opened.
            if opened.exists() and not self.allows(os.readlink(opened)):
                raise self._outside(url)
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise InvalidArgument(f"cannot read the staged file {url}: not a regular file", reason=_UNREADABLE)
            if info.st_size > MAX_STAGED_BYTES:
                raise InvalidArgument(
                    f"the staged file {url} is larger than {MAX_STAGED_BYTES} bytes", reason=_UNREADABLE
                )
            os.set_blocking(fd, True)
            with os.fdopen(fd, "rb", closefd=False) as file:
                return file.read(MAX_STAGED_BYTES + 1)[:MAX_STAGED_BYTES]
        finally:
            os.close(fd)

    @staticmethod
    def _outside(url: str) -> InvalidArgument:
        # One message for every path outside the roots, whether or not it exists.
        return InvalidArgument(
            f"cannot read the staged file {url[:1000]}: this server reads staged files only from its staging"
            " roots (its data directory's staging folder and each --staging-root it was started with) and"
            " from gs:// through a GCS emulator",
            reason=_OUTSIDE,
        )


def _no_nul(url: str) -> None:
    if "\x00" in url:  # no file name holds one (Python's os calls raise ValueError on it)
        raise InvalidArgument(f"invalid staging URL {url[:200]!r}: it holds a NUL character", reason="INVALID_URL")


def _read_gcs(bucket: str, name: str, *, missing_ok: bool = False) -> bytes | None:
    host = os.environ.get("STORAGE_EMULATOR_HOST", "")
    if not host:
        raise InvalidArgument(
            f"cannot read gs://{bucket}/{name}: tidegate reads gs:// paths from a GCS emulator; "
            "set STORAGE_EMULATOR_HOST for the server (and the client)",
            reason=_UNREADABLE,
        )
    if not bucket or not name:
        raise InvalidArgument(f"cannot read gs://{bucket}/{name}: it names no object", reason=_UNREADABLE)
    base = host if host.startswith("http") else f"http://{host}"
    url = f"{base}/storage/v1/b/{quote(bucket, safe='')}/o/{quote(name, safe='')}?alt=media"
    try:
        response = httpx.get(url, timeout=30)
    except httpx.HTTPError as error:
        raise InvalidArgument(f"cannot read gs://{bucket}/{name}: {error}", reason=_UNREADABLE) from error
    if response.status_code == 404 and missing_ok:
        return None
    if response.status_code != 200:
        raise InvalidArgument(
            f"cannot read gs://{bucket}/{name}: the emulator answered {response.status_code}", reason=_UNREADABLE
        )
    if len(response.content) > MAX_STAGED_BYTES:
        raise InvalidArgument(f"the staged file gs://{bucket}/{name} is larger than {MAX_STAGED_BYTES} bytes")
    return response.content
