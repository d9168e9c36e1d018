"""The fuzz suite's requests over real HTTP, to a running ``tidegate server`` on SQLite and PostgreSQL.

A sample of what ``tests/integration/test_fuzz_rest.py`` sends in process (Hypothesis, from
Dataflow's discovery document), plus raw requests that no HTTP client would send: bytes
that are not UTF-8 in the path and query, a NUL, a bad Content-Length. Each must be
answered (never a 5xx, never a dropped connection) and, when refused, change nothing in
the server's database.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ..fuzz_requests import PROJECT, Request, World, fingerprint, methods, requests
from .conftest import LOCATION, Server

pytestmark = pytest.mark.slow

SERVED = [m for m in methods() if m.path.startswith("v1b3/projects/{projectId}")]


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, start_server: Callable[..., Server]) -> Server:
    return start_server(request.param, roots=[])


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def world(http: httpx.Client) -> World:
    ids, names = [], []
    for name, requested in [("held", "JOB_STATE_STOPPED"), ("waiting", "JOB_STATE_RUNNING")]:
        made = http.post(
            f"/v1b3/projects/{PROJECT}/locations/{LOCATION}/jobs", json={"name": name, "requestedState": requested}
        )
        assert made.status_code == 200, made.text
        ids.append(made.json()["id"])
        names.append(name)
    return World(PROJECT, [LOCATION], ids, names)


def _check(server: Server, request: str, response: httpx.Response, before: object) -> None:
    unimplemented = response.status_code == 501 and response.json()["error"]["status"] == "UNIMPLEMENTED"
    assert response.status_code < 500 or unimplemented, f"{response.status_code} for {request}: {response.text[:1000]}"
    if response.status_code >= 400:
        assert response.json()["error"]["code"] == response.status_code
        assert fingerprint(server.store) == before, (
            f"refused with {response.status_code}, yet the store changed: {request}"
        )


def test_generated_requests_over_http(server: Server, http: httpx.Client, world: World) -> None:
    sent = {"count": 0}

    @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(SERVED).flatmap(lambda method: requests(method, world)))
    def run(request: Request) -> None:
        before = fingerprint(server.store)
        response = http.request(request.method, request.url, content=request.body, headers=request.headers)
        _check(server, str(request), response, before)
        sent["count"] += 1

    run()
    assert sent["count"] >= 100


RAW_REQUESTS = [
    b"GET /v1b3/projects/fuzz/jobs/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v1b3/projects/\xc3\x28/locations/us-central1/jobs HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v1b3/projects/fuzz/jobs?filter=\xff&view=\xed\xa0\x80 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v1b3/projects/fuzz/jobs/%00 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"PUT /v1b3/projects/fuzz/jobs/x HTTP/1.1\r\nHost: x\r\nContent-Length: \xb2\r\n\r\n",
    b'POST /v1b3/projects/fuzz/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 13\r\n\r\n{"name": "\xff"}',
    b"POST /v1b3/projects/fuzz/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n{}",
]


@pytest.mark.parametrize("raw", RAW_REQUESTS, ids=range(len(RAW_REQUESTS)))
def test_raw_requests_no_client_would_send(server: Server, world: World, raw: bytes) -> None:
    before = fingerprint(server.store)
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as connection:
        connection.sendall(raw)  # no half-close: uvicorn drops a request whose client has stopped sending
        answer = b""
        while b"\r\n" not in answer and (chunk := connection.recv(65536)):
            answer += chunk
    status = int(answer.split(b" ", 2)[1])  # an answer, even if it is HTTP's own 400
    assert 400 <= status < 500, answer[:500]
    assert fingerprint(server.store) == before
