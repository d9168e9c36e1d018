"""A small, fast HTTP/1.1 load generator (keep-alive connections on uvloop).

Written for the benchmarks: it spends far less CPU per request than the servers under
test, so a rate it measures is the server's, not its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import uvloop

RequestFactory = Callable[[int], bytes]


def get(path: str) -> RequestFactory:
    raw = f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
    return lambda n: raw


def post(path: str, body: Callable[[int], bytes]) -> RequestFactory:
    def make(n: int) -> bytes:
        payload = body(n)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        )
        return head.encode() + payload

    return make


async def _worker(
    port: int, factory: RequestFactory, counter: list[int], deadline: float, wid: int, errors: list[int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    n = wid * 10_000_000
    while time.perf_counter() < deadline:
        writer.write(factory(n))
        n += 1
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        if length:
            await reader.readexactly(length)
        if status >= 400:
            errors[0] += 1
        counter[0] += 1
    writer.close()


async def _run(port: int, factory: RequestFactory, clients: int, seconds: float) -> tuple[float, int]:
    counter, errors = [0], [0]
    deadline = time.perf_counter() + seconds
    start = time.perf_counter()
    await asyncio.gather(*(_worker(port, factory, counter, deadline, i, errors) for i in range(clients)))
    return counter[0] / (time.perf_counter() - start), errors[0]


def rate(port: int, factory: RequestFactory, clients: int = 32, seconds: float = 5.0) -> tuple[float, int]:
    """Requests per second over ``seconds`` with ``clients`` connections, and the count of error answers."""
    return uvloop.run(_run(port, factory, clients, seconds))
