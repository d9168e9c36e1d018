"""Request counts and latencies per API method: an ASGI middleware for REST, an interceptor for gRPC.

REST requests are labelled by their route's template (``/v1b3/projects/{project_id}/…/jobs/{job_id}``),
never by the raw path, which holds ids; a path no route takes is ``(unmatched)``. gRPC calls
are labelled by their service and method, and answered status code.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tidegate import telemetry

__all__ = ["GrpcMetrics", "RestMetrics"]

UNMATCHED = "(unmatched)"


class RestMetrics:
    """ASGI middleware: every HTTP request counted and timed by method, route template and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # an exception that escapes every handler is answered 500 by the server

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")  # set by the router on the scope it shares with us
            template = str(getattr(route, "path", "")) or UNMATCHED
            telemetry.timed_http(scope["method"], template, status, time.perf_counter() - start)


class GrpcMetrics(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """A ``grpc.aio`` interceptor: every unary call counted and timed by method and status code."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:  # unknown methods, reflection's stream
            return handler
        inner = handler.unary_unary
        method = str(details.method)

        async def timed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            start = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                return await inner(request, context)
            except BaseException:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            finally:
                telemetry.timed_grpc(method, _name(code), time.perf_counter() - start)

        return grpc.unary_unary_rpc_method_handler(
            timed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _name(code: Any) -> str:
    """A status code's name (``context.code()`` may answer the enum or its number)."""
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    by_number = {c.value[0]: c.name for c in grpc.StatusCode}
    return str(by_number.get(code, "UNKNOWN"))
