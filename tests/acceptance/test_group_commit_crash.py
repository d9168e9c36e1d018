"""kill -9 in the middle of a burst of group-committed writes: every answered write is kept, nothing is torn.

32 clients create jobs (held in STOPPED) and cancel them as fast as the server answers,
so that the committer shares each commit among many of them; the server is killed with
SIGKILL while they run. After a restart on the same store: every create that was answered
exists, every cancel that was answered has ended its job CANCELLED, and every job in the
store is whole (its creation and each of its edges written with their history and
messages, its state the end of its history).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tidegate.lifecycle import JobState, is_legal
from tidegate.model import ListFilter, MessageImportance
from tidegate.store import Store

from .conftest import ServerProcess

pytestmark = pytest.mark.slow

S = JobState
BASE = "/v1b3/projects/burst/locations/us-central1/jobs"


async def burst(base: str, clients: int, seconds: float, created: dict[str, str], cancelled: set[str]) -> None:
    """Clients creating and cancelling until the server stops answering; the answered creates (id: name) and cancels."""
    deadline = time.monotonic() + seconds

    async def client(n: int) -> None:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            i = 0
            while time.monotonic() < deadline:
                i += 1
                name = f"c{n}-{i}-{secrets.token_hex(2)}"
                try:
                    made = await http.post(BASE, json={"name": name, "type": 1, "requestedState": 1})
                    if made.status_code != 200:
                        continue
                    job_id = made.json()["id"]
                    created[job_id] = name
                    done = await http.put(f"{BASE}/{job_id}", json={"requestedState": 5})
                    if done.status_code == 200:
                        cancelled.add(job_id)
                except httpx.TimeoutException:
                    continue  # a busy machine's slow answer: not answered, so not counted; go on
                except httpx.TransportError:
                    return  # the server is gone

    await asyncio.gather(*(client(n) for n in range(clients)))


def test_answered_writes_survive_a_kill_in_the_middle_of_a_burst(
    server_processes: Callable[..., ServerProcess], store_url: str, tmp_path: Path
) -> None:
    server = server_processes(tmp_path / "data", store_url, "none")

    created: dict[str, str] = {}
    cancelled: set[str] = set()

    async def run() -> None:
        load = asyncio.create_task(burst(server.base, 32, 60, created, cancelled))
        while len(created) < 400 and not load.done():  # well into the burst
            await asyncio.sleep(0.01)
        server.kill()
        await load

    asyncio.run(run())
    assert len(created) >= 400, "the burst ended before the kill"
    restarted = server_processes(tmp_path / "data", store_url, "none")
    for job_id, name in created.items():
        got = httpx.get(f"{restarted.base}{BASE}/{job_id}", timeout=30)
        assert got.status_code == 200, got.text
        assert got.json()["name"] == name
        if job_id in cancelled:
            assert got.json()["currentState"] == "JOB_STATE_CANCELLED"
    store = Store(store_url)
    try:
        page = store.list_jobs("burst", "us-central1", ListFilter.ALL, 1000)
        ids = [j.id for j in page.items]
        while page.next_page_token:
            page = store.list_jobs("burst", "us-central1", ListFilter.ALL, 1000, page.next_page_token)
            ids += [j.id for j in page.items]
        assert set(created) <= set(ids)
        for job_id in ids:
            job, history = store.get_job(job_id), store.history(job_id)
            assert history[0].source is None and history[0].target is S.JOB_STATE_STOPPED
            for change in history[1:]:
                assert change.source is not None and is_legal(change.source, change.target, change.actor)
            assert history[-1].target is job.current_state
            texts = [
                m.text
                for m in store.list_messages(
                    job_id, MessageImportance.JOB_MESSAGE_IMPORTANCE_UNKNOWN, None, None, 100
                ).items
            ]
            assert texts[0].startswith(f"Job {job_id} created")
            assert len([t for t in texts if "is now JOB_STATE_CANCELLED" in t or "now JOB_STATE_CANCELLED" in t]) == (
                job.current_state is S.JOB_STATE_CANCELLED
            )
    finally:
        store.close()
