"""Reading what a client staged for a job: Beam's ``pipeline.pb`` and friends.

Beam's DataflowRunner stages the pipeline into ``--temp_location`` (a local folder, or
``gs://…``) under a fixed name with no per-job folder, so the next submission
overwrites it: tidegate reads it when the job is created and keeps it with the job.
``gs://`` paths are read from a GCS emulator (``STORAGE_EMULATOR_HOST``).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote, urlparse

import httpx

from tidegate.errors import InvalidArgument

__all__ = ["MAX_STAGED_BYTES", "read_staged", "read_staged_if_present"]

MAX_STAGED_BYTES = 256 * 1024 * 1024


def read_staged(url: str) -> bytes:
    """The bytes at a staging URL: a local path, ``file://…`` or ``gs://bucket/object``."""
    _no_nul(url)
    parsed = urlparse(url)
    try:
        if parsed.scheme in ("", "file"):
            path = Path(parsed.path if parsed.scheme else url)
            if path.stat().st_size > MAX_STAGED_BYTES:
                raise InvalidArgument(f"the staged file {url} is larger than {MAX_STAGED_BYTES} bytes")
            return path.read_bytes()
        if parsed.scheme == "gs":
            data = _read_gcs(parsed.netloc, parsed.path.lstrip("/"))
            if data is not None:  # always: only missing_ok reads give None
                return data
    except OSError as error:
        message = f"cannot read the staged file {url}: {error}"
        raise InvalidArgument(message, reason="STAGED_FILE_UNREADABLE") from error
    raise InvalidArgument(
        f"cannot read the staged file {url}: only local paths, file:// and gs:// (through a GCS emulator)"
        " are supported",
        reason="STAGED_FILE_UNREADABLE",
    )


def read_staged_if_present(url: str) -> bytes | None:
    """``read_staged``, but None when nothing lies at the URL (a missing file, or a 404 from the emulator)."""
    _no_nul(url)
    parsed = urlparse(url)
    if parsed.scheme in ("", "file") and not Path(parsed.path if parsed.scheme else url).exists():
        return None
    if parsed.scheme == "gs":
        return _read_gcs(parsed.netloc, parsed.path.lstrip("/"), missing_ok=True)
    return read_staged(url)


def _no_nul(url: str) -> None:
    if "\x00" in url:  # no file name holds one (Python's os calls raise ValueError on it)
        raise InvalidArgument(f"invalid staging URL {url[:200]!r}: it holds a NUL character", reason="INVALID_URL")


def _read_gcs(bucket: str, name: str, *, missing_ok: bool = False) -> bytes | None:
    host = os.environ.get("STORAGE_EMULATOR_HOST", "")
    if not host:
        raise InvalidArgument(
            f"cannot read gs://{bucket}/{name}: tidegate reads gs:// paths from a GCS emulator; "
            "set STORAGE_EMULATOR_HOST for the server (and the client)",
            reason="STAGED_FILE_UNREADABLE",
        )
    base = host if host.startswith("http") else f"http://{host}"
    url = f"{base}/storage/v1/b/{quote(bucket, safe='')}/o/{quote(name, safe='')}?alt=media"
    try:
        response = httpx.get(url, timeout=30)
    except httpx.HTTPError as error:
        raise InvalidArgument(f"cannot read gs://{bucket}/{name}: {error}", reason="STAGED_FILE_UNREADABLE") from error
    if response.status_code == 404 and missing_ok:
        return None
    if response.status_code != 200:
        raise InvalidArgument(
            f"cannot read gs://{bucket}/{name}: the emulator answered {response.status_code}",
            reason="STAGED_FILE_UNREADABLE",
        )
    return response.content
