"""Fuzzing the REST API from Dataflow's discovery document, on SQLite and PostgreSQL.

For every method of ``dataflow.v1b3.json`` (those tidegate serves, and those it does not:
they must be a clean 404 or 405), Hypothesis generates requests (``tests/fuzz_requests.py``)
and sends them to the real application over a real store, in process. Each must:

- be answered, within a time limit (no hang), and never with a 5xx;
- if refused (4xx), be refused with Google's error body, and change nothing: the store's
  jobs (every column, the version too), their state histories, their messages and the
  snapshots are compared before and after.

The number of requests per method is ``TIDEGATE_FUZZ_EXAMPLES`` (default 60; the served
methods get that many, the others a third), about 2,500 per store.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import pytest
from hypothesis import HealthCheck, given, settings

from tidegate.api.rest.app import create_app
from tidegate.lifecycle import JobState, JobType
from tidegate.model import MessageImportance, NewJob
from tidegate.service.jobs import JobService
from tidegate.service.staging import Staging
from tidegate.store import Store

from ..fuzz_requests import PROJECT, Method, Request, World, fingerprint, methods, requests

EXAMPLES = int(os.environ.get("TIDEGATE_FUZZ_EXAMPLES", "60"))
ANSWER_TIMEOUT_S = 30.0
LOCATIONS = ("us-central1", "europe-west1")
METHODS = methods()


def make_world(service: JobService) -> World:
    """A few jobs in several states and locations, with messages."""
    made = []
    for name, location, requested, job_type in [
        ("held", LOCATIONS[0], JobState.JOB_STATE_STOPPED, JobType.JOB_TYPE_BATCH),
        ("waiting", LOCATIONS[0], JobState.JOB_STATE_UNKNOWN, JobType.JOB_TYPE_BATCH),
        ("stream", LOCATIONS[1], JobState.JOB_STATE_UNKNOWN, JobType.JOB_TYPE_STREAMING),
        ("ended", LOCATIONS[0], JobState.JOB_STATE_UNKNOWN, JobType.JOB_TYPE_BATCH),
    ]:
        new = NewJob(PROJECT, location, name, job_type, b"", requested_state=requested)
        job = service.create_job(new)
        service.add_message(job.id, MessageImportance.JOB_MESSAGE_BASIC, f"{name} says hello")
        made.append(job)
    ended = made[-1]
    service.update_job(PROJECT, ended.location, ended.id, requested_state=JobState.JOB_STATE_CANCELLED)
    return World(PROJECT, LOCATIONS, [job.id for job in made], [job.name for job in made])


class LoopThread:
    """An event loop in a thread of its own: a request that blocks it still times out here."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-loop", daemon=True)
        self.thread.start()
        self.run(self._few_threads(), 10)

    @staticmethod
    async def _few_threads() -> None:
        # Blocking handlers run in anyio's threads, each with a connection of its own: a few
        # threads keep a PostgreSQL server shared with other tests below its connection limit.
        anyio.to_thread.current_default_thread_limiter().total_tokens = 4

    def run(self, coroutine: Any, timeout: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        if not self.thread.is_alive():
            self.loop.close()


@dataclass
class Target:
    service: JobService
    world: World
    client: httpx.AsyncClient
    loop: LoopThread
    served: set[tuple[str, str]]

    def send(self, request: Request) -> httpx.Response:
        call = self.client.request(request.method, request.url, content=request.body, headers=request.headers)
        try:
            response: httpx.Response = self.loop.run(call, ANSWER_TIMEOUT_S)
        except FutureTimeout:
            pytest.fail(f"no answer within {ANSWER_TIMEOUT_S} s: {request}")
        return response


@pytest.fixture
def target(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Target]:
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)  # gs:// paths are refused, not fetched
    (tmp_path / "staging").mkdir()
    service = JobService(store, staging=Staging([tmp_path / "staging"]))
    world = make_world(service)
    app = create_app(service)
    served = {(m.http_method, m.path) for m in METHODS if _served(app, m, world)}
    loop = LoopThread()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost")
    yield Target(service, world, client, loop, served)
    loop.run(client.aclose(), 10)
    loop.close()


def _served(app: Any, method: Method, world: World) -> bool:
    path = "/" + method.path
    for name, value in {"projectId": world.project, "location": world.locations[0], "jobId": world.job_ids[0]}.items():
        path = path.replace("{" + name + "}", value)
    path = path.replace("{snapshotId}", "s").replace("{stageId}", "s")
    return any(getattr(route, "path_regex", None) and route.path_regex.fullmatch(path) for route in app.routes)


def _check(target: Target, request: Request, response: httpx.Response, before: Any) -> Any:
    """The answer's checks; the store's fingerprint after it."""
    # 501 UNIMPLEMENTED is an answer (a feature tidegate does not have, as Google's APIs answer it), not a failure.
    unimplemented = response.status_code == 501 and response.json()["error"]["status"] == "UNIMPLEMENTED"
    assert response.status_code < 500 or unimplemented, f"{response.status_code} for {request}: {response.text[:2000]}"
    after = fingerprint(target.service.store)
    if 400 <= response.status_code < 500 or unimplemented:
        if request.method != "HEAD":
            error = response.json()["error"]
            assert error["code"] == response.status_code, response.text
            assert error["message"], response.text
        assert after == before, f"refused with {response.status_code}, yet the store changed: {request}"
    return after


@pytest.mark.parametrize("method", METHODS, ids=[f"{m.http_method}:{m.path}" for m in METHODS])
def test_every_request_is_answered_and_a_refused_one_changes_nothing(target: Target, method: Method) -> None:
    served = (method.http_method, method.path) in target.served
    statuses: Counter[int] = Counter()
    reasons: Counter[str] = Counter()
    state = {"before": fingerprint(target.service.store)}

    @settings(
        max_examples=EXAMPLES if served else max(3, EXAMPLES // 3),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(requests(method, target.world))
    def run(request: Request) -> None:
        response = target.send(request)
        state["before"] = _check(target, request, response, state["before"])
        statuses[response.status_code] += 1
        if response.status_code >= 400 and request.method != "HEAD":
            details = response.json()["error"].get("details") or [{}]
            reasons[str(details[0].get("reason", ""))] += 1

    run()
    if served:  # the requests reach the handlers: not every one is a path tidegate does not know
        assert sum(statuses.values()) > reasons["URL_NOT_FOUND"], (statuses, reasons)
    else:  # 307: a path that normalises to the console's (``/v1b3/..`` is ``/``), which redirects to ``/ui/``
        assert set(statuses) <= {307, 404, 405}, statuses
