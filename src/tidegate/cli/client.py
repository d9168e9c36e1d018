"""The command line's client of tidegate's REST API, its errors and its exit codes.

Exit codes: 0 success; 2 bad usage; 3 no such job; 4 the server refused the request
(an illegal request, bad input, a name already taken); 5 the server cannot be
reached; 1 anything else.
"""

from __future__ import annotations

import argparse
import os
import ssl
from typing import Any
from urllib.parse import quote

import httpx

__all__ = [
    "EXIT_ERROR",
    "EXIT_NOT_FOUND",
    "EXIT_REJECTED",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "CliError",
    "Client",
    "credential",
    "job_path",
    "segment",
    "short_state",
]

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_REJECTED = 4
EXIT_UNREACHABLE = 5


_PASSING_STATUS = frozenset({502, 503, 504})
"""HTTP statuses of a server that is starting, stopping or behind a proxy that lost it: worth a retry."""


class CliError(Exception):
    """An error the command line reports in one line, with its exit code (and the HTTP status, if any)."""

    def __init__(self, message: str, code: int, status: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.status = status

    @property
    def passing(self) -> bool:
        """Whether the server is out of reach for now (unreachable, or answering 502, 503, 504): a follower retries."""
        return self.code == EXIT_UNREACHABLE or self.status in _PASSING_STATUS


class Client:
    """A small client of tidegate's REST API (enums as names, as a person reads them)."""

    def __init__(
        self, server: str, timeout: float = 30.0, *, token: str | None = None, ca_file: str | None = None
    ) -> None:
        self.server = server.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else None
        try:
            self.http = httpx.Client(base_url=self.server, timeout=timeout, headers=headers, verify=_verify(ca_file))
        except httpx.InvalidURL as exc:
            raise CliError(f"invalid --server {server!r}: {exc}", EXIT_USAGE) from exc

    def call(self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None) -> Any:
        try:
            response = self.http.request(method, path, params=params, json=body)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise CliError(f"invalid --server {self.server!r}: {exc}", EXIT_USAGE) from exc
        except httpx.TransportError as exc:
            raise CliError(f"cannot reach the tidegate server at {self.server}: {exc}", EXIT_UNREACHABLE) from exc
        if response.status_code < 400:
            try:
                return response.json()
            except ValueError:
                raise CliError(
                    f"the server at {self.server} answered {method} {path} with something other than JSON"
                    f" (HTTP {response.status_code}); is it a tidegate server?",
                    EXIT_ERROR,
                ) from None
        try:
            error = response.json().get("error", {})
            message = error.get("message") or response.text
        except ValueError:
            message = response.text.strip() or response.reason_phrase
        code = {404: EXIT_NOT_FOUND, 400: EXIT_REJECTED, 409: EXIT_REJECTED}.get(response.status_code, EXIT_ERROR)
        if response.status_code == 401:
            message += " (give an API token: --token or TIDEGATE_TOKEN)"
        raise CliError(f"{message} (HTTP {response.status_code})", code, response.status_code)


def credential(args: argparse.Namespace) -> str | None:
    """The API token the command line sends: ``--token``, else ``$TIDEGATE_TOKEN``, else the config file's
    ``token`` (``tidegate config set token …``, filled into ``args`` by ``config.apply``); None for none."""
    token = getattr(args, "token", None) or os.environ.get("TIDEGATE_TOKEN", "")
    return token.strip() or None


def _verify(ca_file: str | None) -> ssl.SSLContext | bool:
    """How an https:// server's certificate is checked: against ``ca_file``, else ``SSL_CERT_FILE``, else the system."""
    where = ca_file or os.environ.get("SSL_CERT_FILE") or None
    if where is None:
        return True
    try:
        return ssl.create_default_context(cafile=where)
    except (OSError, ssl.SSLError) as exc:
        raise CliError(f"cannot use the CA file {where}: {exc}", EXIT_USAGE) from exc


def segment(value: str) -> str:
    """One path segment: a '/', '?' or '#' in an id must not change which URL is asked."""
    return quote(value, safe="")


def job_path(args: argparse.Namespace, job_id: str = "", *, prefix: str = "/v1b3") -> str:
    base = f"{prefix}/projects/{segment(args.project)}/locations/{segment(args.region)}/jobs"
    return f"{base}/{segment(job_id)}" if job_id else base


def short_state(state: str | None) -> str:
    return (state or "").removeprefix("JOB_STATE_").title()
