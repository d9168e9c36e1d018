"""``tidegate jobs follow``: a job followed to its end across a kill -9 and a restart of its server."""

from __future__ import annotations

import queue
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tidegate.model import MessageImportance
from tidegate.store import Store

from .conftest import LOCATION, TIDEGATE, ServerProcess, clean_env

pytestmark = pytest.mark.slow

WAIT = 60.0


class Lines:
    """A process's standard output, line by line, as it comes."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, words: str) -> None:
        deadline = time.monotonic() + WAIT
        while not any(words in line for line in self.seen):
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no line with {words!r} within {WAIT} s:\n" + "\n".join(self.seen))
            if line is None:
                pytest.fail(f"the follower ended before {words!r}:\n" + "\n".join(self.seen))
            self.seen.append(line)

    def rest(self) -> list[str]:
        """Every line, once the process has ended."""
        while (line := self._queue.get(timeout=WAIT)) is not None:
            self.seen.append(line)
        return self.seen


def test_follow_waits_out_a_killed_server_and_shows_every_message_once(
    server_processes: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    data_dir = tmp_path / "server"
    first = server_processes(data_dir, "", "none")
    project, jobs = "follow", f"{first.base}/v1b3/projects/follow/locations/{LOCATION}/jobs"
    job = httpx.post(jobs, json={"name": "followed", "requestedState": "JOB_STATE_STOPPED"}, timeout=30).json()
    command = [str(TIDEGATE), "jobs", "follow", job["id"], "--server", first.base, "--project", project]
    path = f"{jobs.removeprefix(first.base)}/{job['id']}"
    with subprocess.Popen(
        [*command, "--importance", "debug"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env()
    ) as follower:
        try:
            lines = Lines(follower)
            lines.wait_for(f"job {job['id']} is Stopped")

            first.kill()
            lines.wait_for("lost the server")
            store = Store(f"sqlite:///{(data_dir / 'tidegate.db').resolve()}")
            try:  # what an engine reports while the server is down, read by the next one
                for n in range(3):
                    text = f"written while away {n}"
                    store.add_message(job["id"], MessageImportance.JOB_MESSAGE_BASIC, text, datetime.now(UTC))
            finally:
                store.close()
            second = server_processes(data_dir, "", "none", port=first.port)
            lines.wait_for("written while away 2")
            lines.wait_for("answers again")
            cancel = httpx.put(f"{second.base}{path}", json={"requestedState": "JOB_STATE_CANCELLED"}, timeout=30)
            assert cancel.status_code == 200, cancel.text
            code = follower.wait(WAIT)
            out = lines.rest()
            assert follower.stderr is not None
            err = follower.stderr.read()
        finally:
            if follower.poll() is None:
                follower.kill()
    assert code == 1, (out, err)
    assert err.strip() == f"ERROR: (tidegate) job {job['id']} was cancelled"
    messages = httpx.get(
        f"{second.base}{path}/messages",
        params={"minimumImportance": "JOB_MESSAGE_DEBUG"},
        timeout=30,
    ).json()["jobMessages"]
    assert len(messages) >= 5  # created, three while away, the cancel
    for message in messages:  # each shown once, in order
        shown = [line for line in out if line.endswith(message["messageText"])]
        assert len(shown) == 1, (message, out)
    positions = [next(i for i, line in enumerate(out) if line.endswith(m["messageText"])) for m in messages]
    assert positions == sorted(positions)
    assert sum("lost the server" in line for line in out) == 1
    assert out[-1] == f"tidegate: job {job['id']} is Cancelled"
