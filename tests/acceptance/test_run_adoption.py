"""Runs outlive the server that launched them: kill -9 of ``tidegate server``, then its restart or another server.

Each test submits a slow Beam batch pipeline with Beam's DataflowRunner, kills the
server with SIGKILL while the job runs, and checks that the job is taken back (by the
restarted server) or adopted (by another server on the same PostgreSQL database), runs
to DONE with its whole output, and has a legal history with no FAILED in it. A run whose
own processes died with the server is FAILED, with the reason.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tidegate.lifecycle import JobState, is_legal
from tidegate.store import Store

from ..conftest import POSTGRES_URL, _postgres_or_skip
from .conftest import LOCATION, PIPELINES, ServerProcess, clean_env

pytestmark = pytest.mark.slow

S = JobState


def submit(client_python: Path, base: str, project: str, tmp_path: Path, output: Path, seconds: float) -> str:
    """Submit ``slow_count.py`` with Beam's DataflowRunner (it returns once the job is created); the job id."""
    staging = tmp_path / "staging"
    staging.mkdir(exist_ok=True)
    args = [f"--output={output}", "--count=40", f"--seconds={seconds}", "--runner=DataflowRunner"]
    args += [f"--dataflow_endpoint={base}", "--no_auth", f"--project={project}", f"--region={LOCATION}"]
    args += [f"--temp_location={staging}"]
    done = subprocess.run(
        [str(client_python), str(PIPELINES / "slow_count.py"), *args],
        capture_output=True,
        text=True,
        timeout=240,
        env=clean_env(),
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return str(json.loads(done.stdout.strip().splitlines()[-1])["job_id"])


def job_of(base: str, project: str, job_id: str) -> dict[str, object]:
    answer = httpx.get(f"{base}/v1b3/projects/{project}/locations/{LOCATION}/jobs/{job_id}", timeout=10)
    answer.raise_for_status()
    data: dict[str, object] = answer.json()
    return data


def wait_state(base: str, project: str, job_id: str, wanted: set[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = str(job_of(base, project, job_id)["currentState"])
        if state in wanted:
            return state
        time.sleep(0.1)
    pytest.fail(f"job {job_id} is {state}, not one of {sorted(wanted)}, after {timeout} s")


def legal_history(store_url: str, job_id: str) -> list[JobState]:
    store = Store(store_url)
    try:
        changes = store.history(job_id)
        for change in changes[1:]:
            assert change.source is not None and is_legal(change.source, change.target, change.actor), change
        return [c.target for c in changes]
    finally:
        store.close()


def messages(base: str, project: str, job_id: str) -> list[str]:
    url = f"{base}/v1b3/projects/{project}/locations/{LOCATION}/jobs/{job_id}/messages?pageSize=1000"
    return [m.get("messageText", "") for m in httpx.get(url, timeout=10).json().get("jobMessages", [])]


def supervisor_of(data_dir: Path, job_id: str) -> int:
    return int(json.loads((data_dir / "runs" / job_id / "process.json").read_text())["pid"])


DONE_PATH = [S.JOB_STATE_STOPPED, S.JOB_STATE_PENDING, S.JOB_STATE_RUNNING, S.JOB_STATE_DONE]


def test_a_run_outlives_a_killed_server_and_its_restart_takes_it_back(
    server_processes: Callable[..., ServerProcess], store_url: str, client_python: Path, tmp_path: Path, project: str
) -> None:
    data_dir = tmp_path / "server"
    first = server_processes(data_dir, store_url)
    output = tmp_path / "out.txt"
    job_id = submit(client_python, first.base, project, tmp_path, output, seconds=10)
    wait_state(first.base, project, job_id, {"JOB_STATE_RUNNING"}, 60)
    first.kill()
    time.sleep(1)
    os.kill(supervisor_of(data_dir, job_id), 0)  # the run goes on without its server

    again = server_processes(data_dir, store_url)
    assert wait_state(again.base, project, job_id, {"JOB_STATE_DONE", "JOB_STATE_FAILED"}, 90) == "JOB_STATE_DONE"
    assert sorted(int(x) for x in output.read_text().split()) == list(range(40))
    assert legal_history(store_url, job_id) == DONE_PATH
    assert any("Taken back by server" in text for text in messages(again.base, project, job_id))


@pytest.mark.postgres
def test_another_server_on_the_database_adopts_the_runs_of_a_killed_one(
    server_processes: Callable[..., ServerProcess], client_python: Path, tmp_path: Path, project: str
) -> None:
    base = _postgres_or_skip()
    import psycopg

    schema = f"tg_adopt_{secrets.token_hex(6)}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    try:
        first = server_processes(tmp_path / "a", url)
        second = server_processes(tmp_path / "b", url)
        outputs = [tmp_path / f"out-{i}.txt" for i in range(2)]
        # Long enough that the first job still runs once the second is submitted and running, on a slow machine.
        jobs = [submit(client_python, first.base, project, tmp_path, out, seconds=30) for out in outputs]
        for job_id in jobs:
            wait_state(first.base, project, job_id, {"JOB_STATE_RUNNING"}, 60)
        first.kill()
        still = {job_id: job_of(second.base, project, job_id)["currentState"] for job_id in jobs}
        assert set(still.values()) == {"JOB_STATE_RUNNING"}, f"a job ended before its server was killed: {still}"
        for job_id, output in zip(jobs, outputs, strict=True):
            state = wait_state(second.base, project, job_id, {"JOB_STATE_DONE", "JOB_STATE_FAILED"}, 120)
            assert state == "JOB_STATE_DONE", messages(second.base, project, job_id)
            assert sorted(int(x) for x in output.read_text().split()) == list(range(40))
            assert legal_history(url, job_id) == DONE_PATH
            adopted = [t for t in messages(second.base, project, job_id) if t.startswith("Adopted by server")]
            assert len(adopted) == 1 and "is no longer running" in adopted[0]
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def test_a_run_whose_processes_died_with_the_server_fails_with_the_reason(
    server_processes: Callable[..., ServerProcess], store_url: str, client_python: Path, tmp_path: Path, project: str
) -> None:
    data_dir = tmp_path / "server"
    first = server_processes(data_dir, store_url)
    job_id = submit(client_python, first.base, project, tmp_path, tmp_path / "out.txt", seconds=30)
    wait_state(first.base, project, job_id, {"JOB_STATE_RUNNING"}, 60)
    first.kill()
    os.killpg(supervisor_of(data_dir, job_id), signal.SIGKILL)  # the machine lost the run too

    again = server_processes(data_dir, store_url)
    assert wait_state(again.base, project, job_id, {"JOB_STATE_DONE", "JOB_STATE_FAILED"}, 60) == "JOB_STATE_FAILED"
    assert legal_history(store_url, job_id)[-1] is S.JOB_STATE_FAILED
    assert any("without reporting a result" in text for text in messages(again.base, project, job_id))
