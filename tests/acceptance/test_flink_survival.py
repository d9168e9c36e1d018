"""Streaming jobs survive the server: the local Flink cluster outlives it, and a lost cluster's jobs resume.

A real ``tidegate server --engines flink`` runs the windowed-counts job (a keyed running
total per key). The server is stopped with SIGTERM and with SIGKILL and started again on
the same data directory: the job keeps running on the same cluster, which the restarted
server adopts (never a second one). When the cluster itself is lost, as in a reboot, the
next server resumes the job from its latest retained checkpoint (or from the savepoints
``tidegate flink stop`` takes) and the totals go on from there; a job that left no state
is FAILED, saying so.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.flink_output import read_windows, wait_windows
from tidegate import processes

from .conftest import LOCATION, ServerProcess, flink_stop
from .test_flink_jobs import JOBS, _setup_flink

pytestmark = pytest.mark.slow

PROJECT = "flink-survival"
CLUSTER = Path("flink") / "flink-cluster"


def _jobs(server: ServerProcess) -> str:
    return f"{server.base}/v1b3/projects/{PROJECT}/locations/{LOCATION}/jobs"


def create(server: ServerProcess, name: str, out: Path) -> str:
    program = {"engine": "flink", "program": str(JOBS / "windowed_counts.py"), "args": ["--out", str(out)]}
    body = {
        "name": name,
        "type": "JOB_TYPE_STREAMING",
        "environment": {"sdkPipelineOptions": {"options": {"tidegate": program}}},
    }
    response = httpx.post(_jobs(server), json=body, timeout=30)
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def job(server: ServerProcess, job_id: str) -> dict[str, Any]:
    response = httpx.get(f"{_jobs(server)}/{job_id}", timeout=30)
    assert response.status_code == 200, response.text
    return dict(response.json())


def messages(server: ServerProcess, job_id: str) -> list[str]:
    response = httpx.get(f"{_jobs(server)}/{job_id}/messages", params={"pageSize": 1000}, timeout=30)
    return [m.get("messageText", "") for m in response.json().get("jobMessages", [])]


def history(server: ServerProcess, job_id: str) -> list[str]:
    url = f"{server.base}/tidegate/v1/projects/{PROJECT}/locations/{LOCATION}/jobs/{job_id}/history"
    return [h["toState"] for h in httpx.get(url, timeout=30).json()["stateHistory"]]


def wait_state(server: ServerProcess, job_id: str, wanted: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while (state := job(server, job_id)["currentState"]) != wanted:
        assert time.monotonic() < deadline, f"job {job_id} is {state}, not {wanted}:\n" + "\n".join(
            messages(server, job_id)
        )
        time.sleep(0.3)


def cluster_pids(data_dir: Path) -> tuple[int, int]:
    state = json.loads((data_dir / CLUSTER / "cluster.json").read_text())
    for role in ("jobmanager", "taskmanager"):
        assert processes.is_alive(state[role]["pid"], state[role]["started"]), f"the {role} is gone"
    return int(state["jobmanager"]["pid"]), int(state["taskmanager"]["pid"])


def lose_the_cluster(data_dir: Path) -> None:
    """What a reboot does to it: every process of the cluster gone at once."""
    pids = cluster_pids(data_dir)
    for pid in pids:
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(processes.started(pid) for pid in pids):
        assert time.monotonic() < deadline, "the cluster's processes did not die"
        time.sleep(0.1)


def wait_checkpoint(data_dir: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not list((data_dir / CLUSTER / "checkpoints").glob("*/chk-*/_metadata")):
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.3)


def totals_go_on(out: Path, before: int) -> None:
    """Each key's running total after the interruption continues the one before: never reset to a window's count."""
    rows = read_windows(out)
    last: dict[int, int] = {}
    for key, _end, _count, total, _version in rows[:before]:
        last[key] = total
    later = rows[before:]
    assert later, "no window was written after the interruption"
    for key, _end, count, total, _version in later:
        assert total > count or key not in last, f"key {key}'s total restarted at {total}"
        assert total >= last.get(key, 0) - 3 * 20, f"key {key}'s total went back from {last.get(key)} to {total}"


@pytest.fixture(scope="module", autouse=True)
def flink_ready() -> None:
    _setup_flink()


def test_a_streaming_job_runs_on_through_server_restarts_on_one_cluster(
    server_processes: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    data_dir, out = tmp_path / "server", tmp_path / "out"
    server = server_processes(data_dir, "", "flink", "--flink-checkpoint-interval", "2")
    job_id = create(server, "survivor", out)
    wait_state(server, job_id, "JOB_STATE_RUNNING")
    wait_windows(out, 3)
    pids = cluster_pids(data_dir)

    for stop in ("terminate", "kill"):
        getattr(server, stop)()
        written = len(read_windows(out))
        wait_windows(out, written + 3)  # the job goes on without a server
        assert cluster_pids(data_dir) == pids
        server = server_processes(data_dir, "", "flink", "--flink-checkpoint-interval", "2")
        time.sleep(2)  # a few ticks of the new server
        assert job(server, job_id)["currentState"] == "JOB_STATE_RUNNING"
        assert cluster_pids(data_dir) == pids  # adopted: never a second cluster

    before = len(read_windows(out))
    response = httpx.put(f"{_jobs(server)}/{job_id}", json={"requestedState": "JOB_STATE_DRAINED"}, timeout=60)
    assert response.status_code == 200, response.text
    wait_state(server, job_id, "JOB_STATE_DRAINED")
    totals_go_on(out, before)
    assert "JOB_STATE_FAILED" not in history(server, job_id)


def test_a_job_whose_cluster_is_lost_resumes_from_its_latest_checkpoint(
    server_processes: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    data_dir, out = tmp_path / "server", tmp_path / "out"
    server = server_processes(data_dir, "", "flink", "--flink-checkpoint-interval", "2")
    job_id = create(server, "resumed", out)
    wait_state(server, job_id, "JOB_STATE_RUNNING")
    wait_windows(out, 6)
    wait_checkpoint(data_dir)
    server.kill()
    lose_the_cluster(data_dir)
    before = len(read_windows(out))

    server = server_processes(data_dir, "", "flink", "--flink-checkpoint-interval", "2")
    wait_windows(out, before + 6, timeout=180)
    assert job(server, job_id)["currentState"] == "JOB_STATE_RUNNING"
    texts = messages(server, job_id)
    assert any("resuming it from its latest state" in text and "chk-" in text for text in texts), texts
    totals_go_on(out, before)
    wait_state(server, job_id, "JOB_STATE_RUNNING")
    response = httpx.put(f"{_jobs(server)}/{job_id}", json={"requestedState": "JOB_STATE_CANCELLED"}, timeout=60)
    assert response.status_code == 200, response.text
    wait_state(server, job_id, "JOB_STATE_CANCELLED")
    assert "JOB_STATE_FAILED" not in history(server, job_id)


def test_flink_stop_takes_savepoints_and_the_next_server_resumes_from_them(
    server_processes: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    data_dir, out = tmp_path / "server", tmp_path / "out"
    server = server_processes(data_dir, "", "flink", "--flink-checkpoint-interval", "0")  # no checkpoint
    job_id = create(server, "stopped-on-purpose", out)
    wait_state(server, job_id, "JOB_STATE_RUNNING")
    wait_windows(out, 3)
    server.terminate()
    stopped = flink_stop(data_dir)
    assert stopped.returncode == 0, stopped.stderr
    assert "savepoint" in stopped.stdout and "is stopped" in stopped.stdout
    assert not (data_dir / CLUSTER / "cluster.json").exists()
    before = len(read_windows(out))

    server = server_processes(data_dir, "", "flink", "--flink-checkpoint-interval", "0")
    wait_windows(out, before + 3, timeout=180)
    assert any("resuming it from its latest state" in text and "savepoint" in text for text in messages(server, job_id))
    totals_go_on(out, before)


def test_a_job_that_left_no_state_fails_when_its_cluster_is_lost(
    server_processes: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    data_dir, out = tmp_path / "server", tmp_path / "out"
    server = server_processes(data_dir, "", "flink", "--flink-checkpoint-interval", "0")
    job_id = create(server, "stateless", out)
    wait_state(server, job_id, "JOB_STATE_RUNNING")
    server.kill()
    lose_the_cluster(data_dir)

    server = server_processes(data_dir, "", "flink", "--flink-checkpoint-interval", "0")
    wait_state(server, job_id, "JOB_STATE_FAILED", timeout=60)
    assert any("left no checkpoint or savepoint" in text for text in messages(server, job_id))
