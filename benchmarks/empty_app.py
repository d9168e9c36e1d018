"""The baseline: the same server framework and settings as tidegate's REST API, doing no work."""

from __future__ import annotations

import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def empty(request: Request) -> Response:
    await request.body()
    return Response(b"{}", media_type="application/json")


app = Starlette(routes=[Route("/empty", empty, methods=["GET", "POST"])])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False, lifespan="off")
