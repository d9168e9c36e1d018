"""What every REST handler shares: JSON answers, Google's error bodies, the request's parameters and body."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from google.cloud import dataflow_v1beta3 as dataflow
from google.protobuf import timestamp_pb2
from starlette.requests import Request
from starlette.responses import Response

from tidegate.api import wire
from tidegate.api.wire import MAX_BODY_BYTES
from tidegate.auth import OPEN, Caller, Gate, Permission
from tidegate.errors import InvalidArgument, TidegateError, Unauthenticated

__all__ = [
    "Handler",
    "JsonResponse",
    "caller_of",
    "error_body",
    "error_response",
    "google_error",
    "guard",
    "int_param",
    "internal_response",
    "json_bytes",
    "read_body",
    "time_param",
    "view_param",
    "wants_ints",
    "where",
]

log = logging.getLogger("tidegate.api.rest")

Handler = Callable[[Request], Awaitable[Response]]


def json_bytes(content: Any) -> bytes:
    try:
        return orjson.dumps(content)
    except TypeError:  # an error message that quotes bad input (an unpaired surrogate) is still answered
        return json.dumps(content, ensure_ascii=False).encode("utf-8", "replace")


class JsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json_bytes(content)


def error_body(error: TidegateError) -> dict[str, Any]:
    """Google's JSON error body, with a ``google.rpc.ErrorInfo`` detail."""
    return google_error(error.http_status, error.status, error.message, error.reason, error.metadata)


def google_error(
    code: int, status: str, message: str, reason: str, metadata: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "status": status,
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": reason,
                    "domain": "dataflow.googleapis.com",
                    "metadata": metadata or {},
                }
            ],
        }
    }


def error_response(error: TidegateError) -> Response:
    # A 401 names the scheme it wants (RFC 6750), as Google's APIs do.
    headers = {"WWW-Authenticate": 'Bearer realm="tidegate"'} if isinstance(error, Unauthenticated) else None
    return JsonResponse(error_body(error), status_code=error.http_status, headers=headers)


def wants_ints(request: Request) -> bool:
    """Whether the client asked for enums as numbers (``$alt=json;enum-encoding=int``)."""
    raw: bytes = request.scope["query_string"]
    return b"enum-encoding%3Dint" in raw or b"enum-encoding=int" in raw  # no parse on the hot path


def int_param(request: Request, name: str) -> int:
    raw = request.query_params.get(name, "")
    if not raw:
        return 0
    try:
        return int(raw)
    except ValueError:
        raise InvalidArgument(
            f"invalid value {raw!r} for {name}: expected an integer", reason="INVALID_PARAMETER"
        ) from None


def time_param(request: Request, name: str) -> datetime | None:
    raw = request.query_params.get(name, "")
    if not raw:
        return None
    stamp = timestamp_pb2.Timestamp()
    try:
        stamp.FromJsonString(raw)
    except ValueError:
        raise InvalidArgument(
            f"invalid value {raw!r} for {name}: expected an RFC 3339 time", reason="INVALID_PARAMETER"
        ) from None
    when: datetime = stamp.ToDatetime(tzinfo=UTC)
    return when


def view_param(request: Request) -> int:
    if b"view" not in request.scope["query_string"]:
        return wire.JobView.SUMMARY
    raw = request.query_params.get("view", "")
    return wire.enum_value(dataflow.JobView, raw, "view") if raw else wire.JobView.SUMMARY


async def read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large()
        chunks.append(chunk)
    return b"".join(chunks)


def too_large() -> InvalidArgument:
    return InvalidArgument(
        f"Request payload size exceeds the limit: {MAX_BODY_BYTES} bytes.", reason="REQUEST_TOO_LARGE"
    )


def where(request: Request) -> tuple[str, str | None]:
    """The project and location a request names (the location None when it names none)."""
    params = request.path_params
    if "location" in params:
        return params["project_id"], params["location"]
    location = request.query_params.get("location") if b"location" in request.scope["query_string"] else None
    return params["project_id"], location or None


def caller_of(request: Request) -> Caller:
    """Who makes the request, as ``guard`` found (the open caller when no gate checked it)."""
    caller: Caller = getattr(request.state, "caller", OPEN)
    return caller


def guard(handler: Handler, gate: Gate | None = None, permission: Permission | None = None) -> Handler:
    """The handler, its errors answered as Google's error bodies; first the gate's check of ``permission``.

    The project checked is the path's: a caller learns nothing of a project it has no role in.
    """

    async def guarded(request: Request) -> Response:
        try:
            if gate is not None and permission is not None:
                credential = request.headers.get("authorization")
                request.state.caller = gate.check(credential, permission, request.path_params["project_id"])
            return await handler(request)
        except TidegateError as error:
            return error_response(error)
        except Exception as exc:
            # Answered here: an exception that reaches Starlette's error middleware is raised
            # again after the 500 is sent, and uvicorn then drops the client's connection.
            return internal_response(request, exc)

    guarded.__name__ = handler.__name__
    return guarded


def internal_response(request: Request, exc: Exception) -> Response:
    log.exception("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    body = google_error(500, "INTERNAL", f"internal error: {type(exc).__name__}", "INTERNAL")
    return JsonResponse(body, status_code=500)
