"""Errors that cross tidegate's layers.

Each error carries a canonical status (the gRPC code name) and a ``reason``, a short
UPPER_SNAKE word that the API adapters put into a ``google.rpc.ErrorInfo`` detail::

    TidegateError
    ├── InvalidArgument      INVALID_ARGUMENT    (HTTP 400)
    ├── FailedPrecondition   FAILED_PRECONDITION (HTTP 400)
    ├── NotFound             NOT_FOUND           (HTTP 404)
    ├── Unauthenticated      UNAUTHENTICATED     (HTTP 401)
    ├── PermissionDenied     PERMISSION_DENIED   (HTTP 403)
    ├── AlreadyExists        ALREADY_EXISTS      (HTTP 409)
    ├── Unimplemented        UNIMPLEMENTED       (HTTP 501)
    └── Unavailable          UNAVAILABLE         (HTTP 503)
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "AlreadyExists",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "TidegateError",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
]


class TidegateError(Exception):
    """Base of every error that tidegate reports to a client."""

    status: str = "UNKNOWN"
    http_status: int = 500
    default_reason: str = "UNKNOWN"

    def __init__(self, message: str, *, reason: str | None = None, metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata: dict[str, str] = dict(metadata or {})


class InvalidArgument(TidegateError):
    status = "INVALID_ARGUMENT"
    http_status = 400
    default_reason = "INVALID_ARGUMENT"


class FailedPrecondition(TidegateError):
    status = "FAILED_PRECONDITION"
    http_status = 400
    default_reason = "FAILED_PRECONDITION"


class NotFound(TidegateError):
    status = "NOT_FOUND"
    http_status = 404
    default_reason = "NOT_FOUND"


class Unauthenticated(TidegateError):
    """No credential where one is needed, or one that is not valid (unknown, disabled, expired, forged)."""

    status = "UNAUTHENTICATED"
    http_status = 401
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(TidegateError):
    """A known caller without the role the call needs in the project it names."""

    status = "PERMISSION_DENIED"
    http_status = 403
    default_reason = "IAM_PERMISSION_DENIED"


class AlreadyExists(TidegateError):
    status = "ALREADY_EXISTS"
    http_status = 409
    default_reason = "ALREADY_EXISTS"


class Unimplemented(TidegateError):
    status = "UNIMPLEMENTED"
    http_status = 501
    default_reason = "UNIMPLEMENTED"


class Unavailable(TidegateError):
    status = "UNAVAILABLE"
    http_status = 503
    default_reason = "UNAVAILABLE"
